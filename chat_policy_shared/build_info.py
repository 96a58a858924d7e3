"""chat_policy_build_info, the metric both deployables' /metrics serve to say what runs.

Imported only by the metrics modules: the adapter's master must not import prometheus_client
before it sets PROMETHEUS_MULTIPROC_DIR (adapter/gunicorn_app.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from chat_policy_shared.version import version


class BuildInfo:
    """Collector of chat_policy_build_info{component, version}, always 1.

    A collector read at scrape time rather than a Gauge: in the adapter's multiprocess mode
    each worker would write a gauge file of its own, and the scrape would add them up.
    """

    def __init__(self, component: str) -> None:
        """`component`: "adapter" or "service"."""
        self._component = component
        self._version = version()

    def collect(self) -> Iterable[Metric]:
        """The one sample."""
        info = GaugeMetricFamily(
            "chat_policy_build_info",
            "Always 1: the running component (adapter, service) and chat-policy's version.",
            labels=["component", "version"],
        )
        info.add_metric([self._component, self._version], 1)
        yield info
