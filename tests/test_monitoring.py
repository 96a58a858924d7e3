"""The monitoring examples: promtool accepts the alert rules and their unit tests pass, the
Grafana dashboard is whole and its PromQL parses. (Their metric names against real processes:
tests/e2e/test_monitoring_names.py.)

promtool is Debian's `prometheus` package (scripts/install-monitoring-tools): without it these
tests skip, or fail when CI is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.monitoring_examples import (
    MONITORING,
    dashboard,
    dashboard_queries,
    metric_names,
    panels,
)


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool's path; skip without it (fail when CI is set: .ci/run installs it)."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian's prometheus: scripts/install-monitoring-tools)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
        pytest.skip(f"{reason}; set CI=1 to make this a failure")
    return path


def run(promtool: str, *args: str | Path) -> None:
    """`promtool ARGS` in examples/monitoring; fail with its output unless it succeeds."""
    done = subprocess.run(
        [promtool, *map(str, args)],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_configuration_and_its_alert_rules_are_valid(promtool: str) -> None:
    """promtool accepts prometheus.yml and the alerts.yml it loads."""
    run(promtool, "check", "config", "prometheus.yml")
    run(promtool, "check", "rules", "alerts.yml")


def test_each_alert_fires_when_it_should_and_only_then(promtool: str) -> None:
    """alerts_test.yml passes, and tests every alert of alerts.yml."""
    run(promtool, "test", "rules", "alerts_test.yml")
    alerts = re.findall(r"^\s*- alert: (\w+)", (MONITORING / "alerts.yml").read_text(), re.M)
    tested = re.findall(r"^\s*alertname: (\w+)", (MONITORING / "alerts_test.yml").read_text(), re.M)
    assert set(tested) == set(alerts)


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """Each panel's PromQL, with Grafana's $__rate_interval as 5m, is valid to promtool."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"panel:query_{n}", "expr": query.replace("$__rate_interval", "5m")}
                    for n, query in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    run(promtool, "check", "rules", path)


def test_the_dashboard_asks_for_its_data_source_and_every_panel_has_a_query() -> None:
    """The dashboard takes its Prometheus as the DS_PROMETHEUS input and variable, every panel
    and query uses it, ids are unique, and every panel has a non-empty query."""
    document = dashboard()
    assert [item["name"] for item in document["__inputs"]] == ["DS_PROMETHEUS"]
    variables = document["templating"]["list"]
    assert [(v["name"], v["type"], v["query"]) for v in variables] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["title"] and panel["gridPos"]["w"] > 0
        assert panel["datasource"] == source
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source
            assert target["expr"].strip(), panel["title"]


def test_metric_names_come_out_of_promql_as_written() -> None:
    """Functions, label names and values, ranges, keywords and numbers are no metric names."""
    query = (
        'histogram_quantile(0.99, sum by (le, command) (rate(a_seconds_bucket{command="b_total"}'
        "[$__rate_interval]))) > 1.5 and on (job) c_total offset 5m unless"
        " sum without (pid) (d:e) * on (job, instance) group_left (component) f_info"
        " / on () group_left sum(rate(g_total[5m:1m])) or vector(1e3)"
        ' or label_replace(h, "x", "$1", "y", "(.*)")'
    )
    assert metric_names(query) == {
        "a_seconds_bucket",
        "c_total",
        "d:e",
        "f_info",
        "g_total",
        "h",
    }
