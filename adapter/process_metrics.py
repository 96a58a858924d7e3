"""process_* of every process of the adapter: gunicorn's master and each live worker.

prometheus_client's ProcessCollector reads one process's /proc files, and its multiprocess mode
has no process metrics at all: the workers' metric files hold counters, histograms and gauges,
and a collector in one worker would show only the worker that happens to answer the scrape. A
single sum over the workers would not do either: CPU time would go down whenever a worker exits.
So the worker answering a scrape reads /proc for the master (its parent) and for each of the
master's children, and serves every process as series of its own, labelled with its `pid` and
`role` (`master`, `worker`). Each series is then a true counter or gauge of one process; sum
them in PromQL for the whole adapter. Linux only (/proc, and the master's children as
/proc/PID/task/PID/children lists them).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import ProcessCollector
from prometheus_client.core import Metric


class AdapterProcesses:
    """Collector of process_* for `master` and its children, each labelled pid and role."""

    def __init__(self, master: int) -> None:
        self._master = master

    def collect(self) -> Iterable[Metric]:
        """One family per process metric, a series per live process."""
        families: dict[str, Metric] = {}
        for pid, role in self.processes():
            process = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in process.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {"pid": str(pid), "role": role}, sample.value)
        return families.values()

    def processes(self) -> list[tuple[int, str]]:
        """The master, then its children (the workers), each with its role."""
        master = self._master
        try:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:  # the master is gone: this worker is about to exit too
            children = []
        return [(master, "master")] + [(int(child), "worker") for child in children]
