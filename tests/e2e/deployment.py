"""A chat-policy deployment for the end-to-end tests: its ports, environment and processes."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from bench.processes import exited, free_ports, kill_group
from chat_policy_shared.channel import ChannelSecurity, open_channel
from tests.waiting import wait_for

CHAT_POLICY = Path(sys.executable).with_name("chat-policy")


START_TIMEOUT_S = 20.0


def adapter_serves(port: int) -> bool:
    """True when an adapter on the port answers GET /healthz with 200.

    Not a bare TCP connect: to a loopback port nothing listens on, a connect now and then
    picks that very port as its source and connects to itself.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@dataclass
class Deployment:
    """One chat-policy deployment's ports, environment and the processes started for it."""

    tmp_path: Path
    env: dict[str, str]
    http_port: int
    grpc_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    group_leaders: set[int] = field(default_factory=set)  # pids started with new_session
    chat_policy: Path = CHAT_POLICY  # the command: this checkout's, or an installed wheel's

    def start(
        self,
        command: str,
        extra_env: Mapping[str, str] = {},
        *,
        new_session: bool = False,
        wrapper: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """Start `chat-policy COMMAND` in the deployment's directory, output to a log file.

        With new_session the process leads its own session and process group, so that
        kill_group can kill it together with its children (gunicorn's workers). A wrapper is
        a command that ends by exec-ing its arguments, put in front (e.g. unshare).
        """
        with (self.tmp_path / f"{command}.log").open("ab") as log:
            process = subprocess.Popen(
                [*wrapper, str(self.chat_policy), command],
                cwd=self.tmp_path,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        self.processes.append(process)
        if new_session:
            self.group_leaders.add(process.pid)
        return process

    def start_service(self) -> subprocess.Popen[bytes]:
        """Start the policy service and wait until it answers gRPC."""
        process = self.start("service")
        self.wait_for_grpc(process)
        return process

    def start_adapter(
        self, extra_env: Mapping[str, str] = {}, *, new_session: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start the adapter (gunicorn) and wait until it answers."""
        process = self.start("adapter", extra_env, new_session=new_session)
        wait_for(
            lambda: self._alive(process, "adapter") and adapter_serves(self.http_port),
            START_TIMEOUT_S,
            "the adapter to listen",
        )
        return process

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `chat-policy ARGS...` as an operator on the deployment's host: its environment
        (target, TLS, token, SdkAppid, data dir) and directory; its status and output."""
        return subprocess.run(
            [str(self.chat_policy), *args],
            env=self.env,
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def wait_for_grpc(self, process: subprocess.Popen[bytes]) -> None:
        """Wait until the policy service answers on its port."""
        with open_channel(self.grpc_target, ChannelSecurity.from_env(self.env)) as channel:
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

    def post(
        self,
        query: str,
        body: bytes,
        headers: Mapping[str, str] = {},
        chunked: bool = False,
    ) -> tuple[int, bytes]:
        """POST a webhook to the adapter (chunked: in two chunks, without Content-Length);
        return status and body bytes."""
        half = len(body) // 2
        payload = [body[:half], body[half:]] if chunked else body
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
        try:
            connection.request("POST", f"/?{query}", body=payload, headers=dict(headers))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def log(self, command: str) -> str:
        """What `chat-policy COMMAND` printed so far."""
        path = self.tmp_path / f"{command}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_group(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the whole process group of a process started with new_session; reap it."""
        assert process.pid in self.group_leaders, "kill_group needs start(new_session=True)"
        assert process.returncode is None, "the leader must be unreaped, so its group is ours"
        kill_group(process.pid)
        process.wait()

    def stop_all(self) -> None:
        """SIGTERM every process still running, then SIGKILL what does not stop in 15 s.

        What is left of a group started with new_session is killed before its leader is
        reaped: until then the leader's pid, and so the group id, cannot be reused.
        """
        for process in reversed(self.processes):
            if process.returncode is None and not exited(process.pid, 0):
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            if process.returncode is not None:
                continue
            if not exited(process.pid, 15):
                os.kill(process.pid, signal.SIGKILL)
                exited(process.pid, None)
            if process.pid in self.group_leaders:
                kill_group(process.pid)
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


def new_deployment(tmp_path: Path, **env: str) -> Deployment:
    """A deployment on free ports with its data dir in tmp_path, no CHAT_POLICY_* variable of
    ours leaking in, two adapter workers, and `env` on top."""
    http_port, grpc_port = free_ports(2)
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith("CHAT_POLICY_")
    }
    environ.update(
        CHAT_POLICY_HTTP_BIND=f"127.0.0.1:{http_port}",
        CHAT_POLICY_GRPC_BIND=f"127.0.0.1:{grpc_port}",
        CHAT_POLICY_DATA_DIR=str(tmp_path / "data"),
        CHAT_POLICY_HTTP_WORKERS="2",
        # Any free port: replicas of one deployment, and tests running at once, never collide.
        CHAT_POLICY_METRICS_BIND="127.0.0.1:0",
    )
    environ.update(env)
    return Deployment(tmp_path, environ, http_port, grpc_port)
