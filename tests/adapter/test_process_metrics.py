"""process_* of the adapter's processes: the master and each of its children, one series each."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapter.process_metrics import AdapterProcesses

NAMES = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}


def labelled(master: int) -> dict[str, dict[tuple[str, str], float]]:
    """Each sample name of a scrape of AdapterProcesses(master), by (pid, role)."""
    registry = CollectorRegistry()
    registry.register(AdapterProcesses(master))
    samples: dict[str, dict[tuple[str, str], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            key = (sample.labels["pid"], sample.labels["role"])
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


@pytest.fixture
def child() -> Iterator[int]:
    """A child process of this one (as a worker is gunicorn's master's), waiting on stdin."""
    process = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    yield process.pid
    process.communicate(b"\n", timeout=10)


def test_the_master_and_each_child_have_series_of_their_own(child: int) -> None:
    """Every standard process metric has one series for the master and one for each child,
    labelled with its pid and role."""
    master = os.getpid()
    samples = labelled(master)
    assert set(samples) == NAMES
    for series in samples.values():
        assert (str(master), "master") in series
        assert (str(child), "worker") in series
        assert {role for _, role in series} == {"master", "worker"}
    assert samples["process_resident_memory_bytes"][(str(master), "master")] > 10_000_000
    assert samples["process_open_fds"][(str(child), "worker")] >= 3


def test_a_master_that_is_gone_has_no_series() -> None:
    """A master pid with no process (the worker outlived it, about to exit) gives no sample,
    and no error."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert labelled(process.pid) == {}
