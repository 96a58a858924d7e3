"""Real processes for end-to-end tests: `chat-policy service|adapter|run` on free ports."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

CHAT_POLICY = Path(sys.executable).with_name("chat-policy")
START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition()` until true; fail the test with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def http_answers(port: int) -> bool:
    """True when something accepts TCP connections on the port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@dataclass
class Deployment:
    """One chat-policy deployment's ports, environment and the processes started for it."""

    tmp_path: Path
    env: dict[str, str]
    http_port: int
    grpc_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: str, extra_env: Mapping[str, str] = {}) -> subprocess.Popen[bytes]:
        """Start `chat-policy COMMAND` in the deployment's directory, output to a log file."""
        with (self.tmp_path / f"{command}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(CHAT_POLICY), command],
                cwd=self.tmp_path,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def start_service(self) -> subprocess.Popen[bytes]:
        """Start the policy service and wait until it answers gRPC."""
        process = self.start("service")
        self.wait_for_grpc(process)
        return process

    def start_adapter(self) -> subprocess.Popen[bytes]:
        """Start the adapter (gunicorn) and wait until it accepts connections."""
        process = self.start("adapter")
        wait_for(
            lambda: self._alive(process, "adapter") and http_answers(self.http_port),
            START_TIMEOUT_S,
            "the adapter to listen",
        )
        return process

    def wait_for_grpc(self, process: subprocess.Popen[bytes]) -> None:
        """Wait until the policy service answers on its port."""
        with grpc.insecure_channel(self.grpc_target) as channel:
            ready = grpc.channel_ready_future(channel)
            wait_for(
                lambda: self._alive(process, "service") and _ready(ready),
                START_TIMEOUT_S,
                "the policy service to answer",
            )

    @property
    def grpc_target(self) -> str:
        """host:port of the policy service."""
        return f"127.0.0.1:{self.grpc_port}"

    def post(self, query: str, body: bytes) -> tuple[int, bytes]:
        """POST a webhook to the adapter; return status and body bytes."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
        try:
            connection.request("POST", f"/?{query}", body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def log(self, command: str) -> str:
        """What `chat-policy COMMAND` printed so far."""
        path = self.tmp_path / f"{command}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        """SIGTERM every process still running, then SIGKILL what does not stop in 15 s."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _alive(self, process: subprocess.Popen[bytes], command: str) -> bool:
        if process.poll() is not None:
            pytest.fail(f"{command} exited with {process.returncode}:\n{self.log(command)}")
        return True


def _ready(future: grpc.Future) -> bool:
    try:
        future.result(timeout=0.1)
    except grpc.FutureTimeoutError:
        return False
    return True


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on free ports with its own data dir; every process stopped afterwards."""
    http_port, grpc_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHAT_POLICY_")}
    env.update(
        CHAT_POLICY_HTTP_BIND=f"127.0.0.1:{http_port}",
        CHAT_POLICY_GRPC_BIND=f"127.0.0.1:{grpc_port}",
        CHAT_POLICY_DATA_DIR=str(tmp_path / "data"),
        CHAT_POLICY_HTTP_WORKERS="2",
    )
    deployment = Deployment(tmp_path, env, http_port, grpc_port)
    yield deployment
    deployment.stop_all()
