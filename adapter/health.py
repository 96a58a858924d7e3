"""GET /healthz (the process is alive) and GET /readyz (the policy service answers SERVING).

Probes for a load balancer or an orchestrator: /healthz never leaves the worker; /readyz asks
the policy service's grpc.health.v1 Check for the whole server ("") over the worker's own
channel, with a short deadline, so it fails fast while the service is down, stuck or draining.
"""

from __future__ import annotations

import json

import falcon
import falcon.asgi
import grpc

from adapter.policy_client import PolicyClient
from adapter.settings import LIVENESS_PATH, READINESS_PATH

# Well below a probe's usual 1 s timeout, well above a healthy answer's ~1 ms.
READINESS_DEADLINE_S = 0.3

# Why /readyz answers 503, by the failed Check's status code; other codes give their name.
_REASONS = {
    grpc.StatusCode.UNAVAILABLE: "unreachable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
}


def add_routes(
    app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response], client: PolicyClient
) -> None:
    """Route /healthz and /readyz on `app` (AdapterSettings keeps the webhook off them)."""
    app.add_route(LIVENESS_PATH, Liveness())
    app.add_route(READINESS_PATH, Readiness(client))


class Liveness:
    """GET /healthz: 200 while the worker can answer HTTP at all; asks nothing else."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Answer 200 {"status": "alive"}."""
        _write(resp, falcon.HTTP_200, {"status": "alive"})


class Readiness:
    """GET /readyz: 200 when the policy service reports SERVING within the deadline, else 503
    naming why: its status (NOT_SERVING, ...), unreachable, deadline, or the call's code."""

    def __init__(self, client: PolicyClient, deadline_s: float = READINESS_DEADLINE_S) -> None:
        self._client = client
        self._deadline_s = deadline_s

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Ask the policy service once and answer 200 or 503 with a small JSON body."""
        try:
            status = await self._client.check_health(self._deadline_s)
        except grpc.RpcError as error:
            code = error.code()
            reason = str(_REASONS.get(code, code.name))
            _write(resp, falcon.HTTP_503, {"status": "not ready", "reason": reason})
            return
        if status != "SERVING":
            _write(resp, falcon.HTTP_503, {"status": "not ready", "reason": status})
            return
        _write(resp, falcon.HTTP_200, {"status": "ready"})


def _write(resp: falcon.asgi.Response, status: str, document: dict[str, str]) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.cache_control = ["no-store"]
    resp.data = json.dumps(document).encode()
