"""/metrics of the real processes: gunicorn workers add up, the service counts RPCs."""

from __future__ import annotations

import http.client
import json
import os
import signal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import free_port
from chat_policy_shared.version import version
from tests.chat_samples import BEFORE_CREATE_SAMPLE, GROUP_FULL_SAMPLE
from tests.e2e.deployment import Deployment, adapter_serves
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SDKAPPID = 1400000000
BEFORE_CREATE = "Group.CallbackBeforeCreateGroup"
GROUP_FULL = "Group.CallbackAfterGroupFull"
CHECK = "/chatpolicy.v1.CreationPolicyService/CheckGroupCreation"
RECORD = "/chatpolicy.v1.GroupStateService/RecordGroupFull"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """GET /metrics on a loopback port, on a new connection; every sample by name and labels."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200, text
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def webhooks(samples: Samples, command: str, outcome: str) -> float:
    """chat_policy_adapter_webhook_requests_total of one command and outcome."""
    labels = frozenset({"command": command, "outcome": outcome}.items())
    return samples.get(("chat_policy_adapter_webhook_requests_total", labels), 0.0)


def send(deployment: Deployment, first: int, count: int) -> None:
    """`count` creations and `count` group-full events, each on a new connection."""
    for n in range(first, first + count):
        for command, document in (
            (BEFORE_CREATE, BEFORE_CREATE_SAMPLE),
            (GROUP_FULL, {**GROUP_FULL_SAMPLE, "GroupId": f"@TGS#metrics{n}"}),
        ):
            query = f"SdkAppid={SDKAPPID}&CallbackCommand={command}&contenttype=json"
            status, _ = deployment.post(query, json.dumps(document).encode())
            assert status == 200


def workers(master: int) -> set[int]:
    """The pids of the master's child processes (gunicorn's workers)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its parenthesis.
        if int(stat.rpartition(")")[2].split()[1]) == master:
            children.add(int(entry.name))
    return children


def assert_every_scrape_counts(deployment: Deployment, per_command: int, scrapes: int) -> None:
    """Whichever worker answers (each scrape is a new connection), it reports all webhooks."""
    for _ in range(scrapes):
        samples = scrape(deployment.http_port)
        assert webhooks(samples, BEFORE_CREATE, "allowed") == per_command
        assert webhooks(samples, GROUP_FULL, "recorded") == per_command
        total = sum(
            value
            for (name, _), value in samples.items()
            if name == "chat_policy_adapter_webhook_requests_total"
        )
        assert total == 2 * per_command


def test_metrics_add_up_across_workers_and_survive_a_killed_worker(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Both processes count the webhooks; the adapter's /metrics sums its two workers, keeps
    the counts of a worker killed with SIGKILL, and removes its metric files on exit."""
    metrics_port = free_port()
    deployment.env["CHAT_POLICY_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    deployment.env["CHAT_POLICY_SDKAPPIDS"] = str(SDKAPPID)
    adapter_tmp = tmp_path / "adapter-tmp"
    adapter_tmp.mkdir()
    deployment.start_service()
    adapter = deployment.start_adapter({"TMPDIR": str(adapter_tmp)}, new_session=True)
    wait_for(lambda: len(workers(adapter.pid)) == 2, 20, "two gunicorn workers")

    send(deployment, 0, 20)
    # Forty connections spread by SO_REUSEPORT: both workers served some, and wrote them down.
    [metrics_dir] = adapter_tmp.glob("chat-policy-adapter-metrics-*")
    writers = {int(path.stem.rpartition("_")[2]) for path in metrics_dir.glob("counter_*.db")}
    assert writers == workers(adapter.pid)
    assert_every_scrape_counts(deployment, 20, scrapes=8)

    service = scrape(metrics_port)
    assert (
        service[
            ("chat_policy_service_rpcs_total", frozenset({"method": CHECK, "code": "OK"}.items()))
        ]
        == 20
    )
    assert (
        service[
            ("chat_policy_service_rpcs_total", frozenset({"method": RECORD, "code": "OK"}.items()))
        ]
        == 20
    )
    decided = frozenset({"rule": "default", "effect": "allow"}.items())
    assert service[("chat_policy_service_decisions_total", decided)] == 20
    assert service[("chat_policy_service_groups_full", frozenset())] == 20

    killed = min(workers(adapter.pid))
    os.kill(killed, signal.SIGKILL)
    wait_for(
        lambda: len(workers(adapter.pid) - {killed}) == 2 and adapter_serves(deployment.http_port),
        20,
        "gunicorn to replace the killed worker",
    )
    assert_every_scrape_counts(deployment, 20, scrapes=8)
    send(deployment, 20, 5)
    assert_every_scrape_counts(deployment, 25, scrapes=8)

    adapter.send_signal(signal.SIGTERM)
    assert adapter.wait(timeout=20) == 0
    assert list(adapter_tmp.iterdir()) == []


def test_the_adapter_serves_process_metrics_of_its_master_and_each_worker(
    deployment: Deployment,
) -> None:
    """Whichever worker answers, the adapter's /metrics has process_* for gunicorn's master
    and for each live worker, one series each labelled with its pid and role, and its build
    info."""
    adapter = deployment.start_adapter(new_session=True)
    wait_for(lambda: len(workers(adapter.pid)) == 2, 20, "two gunicorn workers")
    processes = {(str(adapter.pid), "master")}
    processes |= {(str(pid), "worker") for pid in workers(adapter.pid)}
    info = frozenset({"component": "adapter", "version": version()}.items())
    for _ in range(6):  # each scrape on a new connection: both workers answer some
        samples = scrape(deployment.http_port)
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
            series = [dict(labels) for sample, labels in samples if sample == name]
            assert {(labels["pid"], labels["role"]) for labels in series} == processes
            assert len(series) == len(processes)
        assert samples[("chat_policy_build_info", info)] == 1
