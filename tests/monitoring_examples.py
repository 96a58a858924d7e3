"""The shipped monitoring examples (examples/monitoring): the dashboard, the alert rules, and the
metric names their PromQL reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MONITORING = Path(__file__).resolve().parent.parent / "examples" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^}]*\}")  # label matchers
_BRACKETS = re.compile(r"\[[^\]]*\]")  # ranges and subqueries, with Grafana's $__ variables
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A name not directly followed by "(" (a function or an aggregation) nor part of a number.
_NAMES = re.compile(r"(?<![\w:.$])[a-zA-Z_:][\w:]*(?![\w:]|\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard, as JSON."""
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels but its rows (each row's own panels included)."""
    found = []
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_queries() -> list[str]:
    """The PromQL of every target of every panel."""
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def alert_queries() -> list[str]:
    """The PromQL of every alerting rule: each written on its `expr:` line (no YAML parser
    here; promtool checks the file's YAML)."""
    text = ALERTS.read_text()
    queries = re.findall(r"^\s*expr:\s*(.*?)\s*$", text, re.MULTILINE)
    alerts = re.findall(r"^\s*- alert:", text, re.MULTILINE)
    assert len(queries) == len(alerts), "one expr per alert"
    assert all(query and query[0] not in "|>" for query in queries), "one-line expr"
    return queries


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query selects, as written (a histogram's `_bucket`, a
    counter's `_total`): what is left once strings, label matchers, ranges, label lists,
    functions and keywords are taken out."""
    bare = _STRINGS.sub("", query)
    bare = _LABEL_LISTS.sub(" ", _BRACKETS.sub(" ", _BRACES.sub(" ", bare)))
    return {name for name in _NAMES.findall(bare) if name.lower() not in _KEYWORDS}
