"""Every metric the monitoring examples query is one a running adapter or service exports.

The adapter's workers write a labelled counter's file only once it counts something, so the
deployment lives through what the dashboard and the alerts watch: a creation failing open and
events spooled while the service is down, a refused SdkAppid and an oversized header, then the
service starting (with an access file, and a tighter clock than the adapter's: one event is
set aside, the others are replayed) and webhooks answered normally.
"""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import free_port
from policy_service.access.access_file import token_digest_line
from tests.chat_samples import BEFORE_CREATE_SAMPLE, OK
from tests.e2e.deployment import Deployment
from tests.e2e.spooled_events import (
    BASE_MS,
    BEFORE_CREATE,
    GROUP_FULL,
    REPLAY_TIMEOUT_S,
    after_event,
    post_timed,
    read_spool,
    spool_depth,
)
from tests.monitoring_examples import alert_queries, dashboard_queries, metric_names
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

# Made by Prometheus for every target, exported by none.
SCRAPE_SERIES = {"up"}
# What a histogram or a counter family exposes beyond its name.
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}


def exported(port: int) -> set[str]:
    """The sample names a /metrics on a loopback port exports, with those of families it
    declares without a sample yet (the service's labelled counters before their first count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def refused_for_its_header(deployment: Deployment) -> bytes:
    """The status line answered to a request whose headers go on past the adapter's 32 KB."""
    with socket.create_connection(("127.0.0.1", deployment.http_port), timeout=5) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 40_000)
        return client.makefile("rb").readline().strip()


def test_the_dashboard_and_the_alerts_query_only_exported_metrics(
    deployment: Deployment,
) -> None:
    """Each metric name in the dashboard's and the alert rules' PromQL is on the adapter's or
    the service's /metrics."""
    metrics_port = free_port()
    deployment.env["CHAT_POLICY_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    # With an access file (its metrics are exported only then); the adapter presents a token.
    token_file = deployment.tmp_path / "adapter.token"
    token_file.write_text("monitoring-adapter-token\n")
    access_file = deployment.tmp_path / "access.toml"
    access_file.write_text(
        "[callers.adapter]\nrelays_chat = true\n"
        f'tokens = ["{token_digest_line("monitoring-adapter-token")}"]\n'
        'allow = ["creation.check", "group-state.write"]\n'
    )
    deployment.env["CHAT_POLICY_ACCESS_FILE"] = str(access_file)
    deployment.env["CHAT_POLICY_GRPC_TOKEN_FILE"] = str(token_file)
    deployment.start_adapter({"CHAT_POLICY_MAX_EVENT_AHEAD_S": "7200"})
    future_ms = int(time.time() * 1000) + 3_600_000  # the service below refuses it for good
    assert post_timed(deployment, BEFORE_CREATE, BEFORE_CREATE_SAMPLE) == (200, OK)  # fail-open
    assert post_timed(deployment, GROUP_FULL, after_event("future", future_ms)) == (200, OK)
    assert post_timed(deployment, GROUP_FULL, after_event("ordinary", BASE_MS)) == (200, OK)
    assert deployment.post("SdkAppid=1&CallbackCommand=x", b"{}")[0] == 403  # unknown SdkAppid
    assert refused_for_its_header(deployment).startswith(b"HTTP/1.1 431 ")

    service = deployment.start("service", {"CHAT_POLICY_MAX_EVENT_AHEAD_S": "1"})
    deployment.wait_for_grpc(service)
    wait_for(
        lambda: (
            spool_depth(deployment) == 0
            and read_spool(deployment, "SELECT count(*) FROM set_aside_event") == 1
        ),
        REPLAY_TIMEOUT_S,
        "one event replayed and one set aside",
    )
    assert post_timed(deployment, BEFORE_CREATE, BEFORE_CREATE_SAMPLE) == (200, OK)
    assert post_timed(deployment, GROUP_FULL, after_event("later", BASE_MS + 1)) == (200, OK)

    available = exported(deployment.http_port) | exported(metrics_port) | SCRAPE_SERIES
    queried = {
        name for query in dashboard_queries() + alert_queries() for name in metric_names(query)
    }
    assert queried - available == set()
    assert {"process_cpu_seconds_total", "chat_policy_build_info"} <= queried
