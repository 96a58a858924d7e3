"""Real `chat-policy` processes for the benchmarks: free ports, a clean environment, start,
wait until they answer, kill -9, stop.

Each process is started the way a user would (`chat-policy COMMAND` with CHAT_POLICY_*
variables), in a session of its own so that SIGKILL reaches gunicorn's workers too, with its
output appended to a log file (a restarted process appends to the same file).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

CHAT_POLICY = Path(sys.executable).with_name("chat-policy")


class HarnessError(Exception):
    """The benchmark could not run (a process did not start, a port was not free, ...)."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` TCP ports on loopback that nothing listens on right now, all different: they
    are held together while chosen (one at a time, a port just let go can come back)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any CHAT_POLICY_* variable (nor a metrics directory
    of ours), plus `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CHAT_POLICY_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(settings)
    return env


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    alive: Callable[[], None] = lambda: None,
    interval_s: float = 0.05,
) -> None:
    """Poll `condition()` until true; HarnessError after timeout_s. `alive()` may raise to
    stop waiting early (a process that exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive()
        if condition():
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def tcp_listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def grpc_serving(target: str, timeout_s: float = 0.5) -> bool:
    """True when grpc.health.v1 Check of the whole server ("") says SERVING."""
    with grpc.insecure_channel(target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s, wait_for_ready=True
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path; status and body (OSError when nothing answers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class ChatPolicyProcess:
    """`chat-policy COMMAND` with an environment and a log file; start it again at will."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command, self.env, self.log_path = command, env, log_path
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ChatPolicyProcess:
        """Start it (again), leading a new session: kill() and stop() reach its children."""
        if self.running:
            raise HarnessError(f"chat-policy {self.command} is already running")
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                [str(CHAT_POLICY), self.command],
                cwd=self.log_path.parent,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The process id of the current start."""
        if self._popen is None:
            raise HarnessError(f"chat-policy {self.command} was never started")
        return self._popen.pid

    @property
    def running(self) -> bool:
        """True while the current start has not exited."""
        popen = self._popen
        return popen is not None and popen.returncode is None and not exited(popen.pid, 0)

    def check_alive(self) -> None:
        """HarnessError, with the end of the log, if the process has exited."""
        if self._popen is not None and not self.running:
            code = self._popen.wait()
            raise HarnessError(f"chat-policy {self.command} exited with {code}:\n{self.tail()}")

    def log(self) -> str:
        """Everything the process (every start of it) printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log."""
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9 the process and everything in its process group; reap it."""
        if self._popen is None or self._popen.returncode is not None:
            raise HarnessError(f"chat-policy {self.command} is not running")
        kill_group(self._popen.pid)  # the leader is unreaped, so its group id is still ours
        self._popen.wait()

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to timeout_s, then SIGKILL the group; the exit status, or None
        when it had to be killed (or was never started)."""
        popen = self._popen
        if popen is None or popen.returncode is not None:
            return None if popen is None else popen.returncode
        killed = False
        if not exited(popen.pid, 0):
            os.kill(popen.pid, signal.SIGTERM)
            if not exited(popen.pid, timeout_s):
                killed = True
        kill_group(popen.pid)  # stragglers (workers) before the leader is reaped
        code = popen.wait()
        return None if killed else code


def exited(pid: int, timeout_s: float | None) -> bool:
    """Wait up to timeout_s (None: forever) for a child to exit, without reaping it."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group; nothing left of it is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
