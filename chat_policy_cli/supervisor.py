"""`chat-policy run`: the policy service and the adapter as two supervised child processes."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from types import FrameType

import grpc

from adapter.settings import AdapterSettings
from chat_policy_shared.channel import open_channel
from policy_service.settings import ServiceSettings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 12.0
POLL_S = 0.2

Child = tuple[str, "subprocess.Popen[bytes]"]


def run_both() -> int:
    """Start the service, then the adapter once the service answers; stop both together.

    SIGINT/SIGTERM are forwarded as SIGTERM (graceful stop) and give exit status 0; SIGHUP
    is forwarded to the service (reload the policy). If either child exits on its own, the
    other is stopped and the exit status is 1, or 2 when the child refused to start (exit
    status 2, its one line said why); bad configuration is status 2 before anything starts.
    """
    try:
        ServiceSettings.from_env()
        adapter = AdapterSettings.from_env()
        adapter.grpc_security.credentials()  # the files are readable
    except ValueError as error:
        log.error("chat-policy cannot start: %s", error)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    children: list[Child] = []

    def forward_reload(signum: int, frame: FrameType | None) -> None:
        if children and children[0][1].poll() is None:
            children[0][1].send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, forward_reload)
    try:
        children.append(("policy service", _spawn("service")))
        status = _wait_until_serving(adapter, children[0], stop)
        if status is not None:
            return status
        log.info("policy service answers on %s; starting the adapter", adapter.grpc_target)
        children.append(("adapter", _spawn("adapter")))
        while not stop.wait(POLL_S):
            for child in children:
                if child[1].poll() is not None:
                    return _exit_status(child)
        log.info("stop requested: stopping the adapter, then the policy service")
        return 0
    finally:
        _stop_all(children[::-1])


def _spawn(command: str) -> subprocess.Popen[bytes]:
    # A session of its own: Ctrl-C reaches only us, and we stop the children gracefully.
    return subprocess.Popen(
        [sys.executable, "-m", "chat_policy_cli.main", command], start_new_session=True
    )


def _wait_until_serving(
    adapter: AdapterSettings, service: Child, stop: threading.Event
) -> int | None:
    """None once a channel to the adapter's target is ready; else run's exit status: 0 if we
    stop, the service's (_exit_status) if it exited, 1 if it did not answer in time."""
    name, process = service
    target = adapter.grpc_target
    with open_channel(target, adapter.grpc_security) as channel:
        ready = grpc.channel_ready_future(channel)
        for _ in range(int(READY_TIMEOUT_S / POLL_S)):
            if stop.is_set():
                return 0
            if process.poll() is not None:
                return _exit_status(service)
            try:
                ready.result(timeout=POLL_S)
                return None
            except grpc.FutureTimeoutError:
                continue
        log.error("%s did not answer on %s within %.0fs", name, target, READY_TIMEOUT_S)
        return 1


def _exit_status(child: Child) -> int:
    """run's exit status once a child has exited on its own: 2 if the child refused to start
    (its own line said why), else 1, said in a line."""
    name, process = child
    if process.returncode == 2:
        log.info("%s refused to start; stopping", name)
        return 2
    log.error("%s exited with status %s; stopping", name, process.returncode)
    return 1


def _stop_all(children: list[Child]) -> None:
    """SIGTERM each running child in order, waiting for each; SIGKILL one that hangs."""
    for name, process in children:
        if process.poll() is not None:
            continue
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0fs; killing it", name, STOP_TIMEOUT_S)
            process.kill()
            process.wait()
