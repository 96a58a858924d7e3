"""The servers scripts/bench measures (bench/bench_http.py), started as real processes on free
ports, and what /proc says about them: CPU time and peak RSS per process.

A Deployment is one configuration running: its HTTP port, its processes by role ("http":
gunicorn's master and workers; "grpc": the policy service or the echo server) and, for the
real adapter, its /metrics. `start(configuration, workdir)` starts one fresh and stops it when
the block ends; anything that measures it (a load run, a fault injected while it runs) takes
`Deployment.snapshot()` before and after.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from adapter.settings import AdapterSettings
from bench.bench_state import fresh_database
from bench.processes import (
    clean_env,
    exited,
    free_ports,
    grpc_serving,
    http_get,
    kill_group,
)
from bench.wrk import Webhook, body, compute_sign, query_string

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CHAT_POLICY = str(Path(sys.executable).with_name("chat-policy"))
EXAMPLE_POLICY = ROOT / "examples" / "policy.toml"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1e6
# The adapter's answers that mean "done as asked" (adapter_webhook_requests_total outcome).
NORMAL_OUTCOMES = frozenset({"allowed", "recorded"})


class StartError(RuntimeError):
    """A configuration's process did not start or answer; the message has its log's tail."""


@dataclass(frozen=True)
class Configuration:
    """One thing to measure: a baseline or the real deployment on one store, for one webhook."""

    id: str  # b0, b1, b1async, sqlite-before, ...
    label: str
    kind: str  # "b0", "b1", "b1async" or "e2e"
    webhook: Webhook
    store: str = ""  # e2e: "sqlite" or "postgresql"
    variant: str = ""  # a B1 that moves the floor: a key of FLOOR_VARIANTS

    @property
    def words(self) -> frozenset[str]:
        """The words --only can select it by (a floor variant: its id, or "floor")."""
        if self.variant:
            return frozenset({self.id, "floor"})
        return frozenset({self.id, self.kind, *self.id.split("-")})


# B1 variants, run only when asked for (--only floor): what each changes, and its settings.
FLOOR_VARIANTS: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "unix": ("B1 over a Unix socket", {}),
    "aio": ("B1 with a grpc.aio echo server", {}),
    "threads2": ("B1, 2 threads per worker", {"BENCH_B1_THREADS": "2"}),
    "threads8": ("B1, 8 threads per worker", {"BENCH_B1_THREADS": "8"}),
    "workers3": ("B1, 3 workers", {"CHAT_POLICY_HTTP_WORKERS": "3"}),
}


def configurations() -> list[Configuration]:
    """Every configuration, in the order a round runs them."""
    names: dict[Webhook, str] = {"before": "BeforeCreateGroup", "after": "AfterGroupFull"}
    stores = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    made = [
        Configuration("b0", "B0 bare Falcon", "b0", "before"),
        Configuration("b1", "B1 Falcon + gRPC echo", "b1", "before"),
        Configuration("b1async", "B1-async Falcon ASGI + grpc.aio echo", "b1async", "before"),
    ]
    for store, store_name in stores.items():
        for webhook, name in names.items():
            label = f"E2E {store_name} {name}"
            made.append(Configuration(f"{store}-{webhook}", label, "e2e", webhook, store))
    for variant, (label, _) in FLOOR_VARIANTS.items():
        made.append(Configuration(f"b1-{variant}", label, "b1", "before", variant=variant))
    return made


# --- /proc -------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Every descendant of pid (scanning /proc: a worker started since is found too)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def named_processes(name: str) -> list[int]:
    """Every process whose command name (/proc/PID/comm) is `name`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    found.append(int(entry))
    return found


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def status_kb(pid: int, key: str) -> int | None:
    """A kB value of /proc/PID/status (VmHWM, VmRSS, ...); None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def machine_ticks() -> dict[str, int]:
    """The machine's CPU time so far by kind, from /proc/stat's cpu line."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    values = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    return dict(zip(names, map(int, values), strict=True))


@dataclass(frozen=True)
class Snapshot:
    """CPU ticks of every process of a deployment by role, and of the machine, at one time."""

    at: float
    ticks: dict[str, dict[int, int]]
    machine: dict[str, int]

    def cpu_s_since(self, earlier: Snapshot) -> dict[str, float]:
        """CPU seconds each role used between `earlier` and this snapshot (a process that
        appeared meanwhile counts from zero)."""
        used: dict[str, float] = {}
        for role, now in self.ticks.items():
            before = earlier.ticks.get(role, {})
            used[role] = sum(t - before.get(pid, 0) for pid, t in now.items()) / CLOCK_TICKS
        return used

    def machine_since(self, earlier: Snapshot) -> dict[str, float]:
        """The machine's CPU seconds (all cores) since `earlier`: in all, busy, stolen."""
        delta = {k: (self.machine[k] - earlier.machine[k]) / CLOCK_TICKS for k in self.machine}
        total = sum(delta.values())
        return {
            "total_s": total,
            "busy_s": total - delta["idle"] - delta["iowait"] - delta["steal"],
            "steal_s": delta["steal"],
        }


# --- deployments -------------------------------------------------------------------------


@dataclass
class Process:
    """A server process this benchmark started, with its role and log."""

    role: str  # "http" or "grpc"
    popen: subprocess.Popen[bytes]
    log: Path

    def tree(self) -> list[int]:
        """Its pid and its descendants' (gunicorn's workers)."""
        return [self.popen.pid, *children(self.popen.pid)]

    def tail(self, lines: int = 20) -> str:
        """The end of its log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Deployment:
    """One configuration's processes, running."""

    configuration: Configuration
    workdir: Path
    http_port: int
    sdk_app_id: int
    token: str
    env: dict[str, str]
    grpc_target: str = ""
    metrics_port: int = 0  # the policy service's /metrics (e2e)
    processes: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Where wrk sends requests."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, role: str, name: str, command: list[str], env: Mapping[str, str]) -> Process:
        """Start a server process in its own session (so its whole group can be killed)."""
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(role, popen, log)
        self.processes.append(process)
        return process

    def pids(self, role: str) -> list[int]:
        """Every live pid of a role."""
        return [pid for p in self.processes if p.role == role for pid in p.tree()]

    def snapshot(self) -> Snapshot:
        """CPU ticks of every process of the deployment, by role, and of the machine. With a
        PostgreSQL store, role "postgresql" is every process named postgres on the machine
        (its server: whatever else uses that server counts too)."""
        ticks: dict[str, dict[int, int]] = {}
        roles = {role: self.pids(role) for role in ("http", "grpc")}
        if self.configuration.store == "postgresql":
            roles["postgresql"] = named_processes("postgres")
        for role, pids in roles.items():
            for pid in pids:
                value = cpu_ticks(pid)
                if value is not None:
                    ticks.setdefault(role, {})[pid] = value
        return Snapshot(time.monotonic(), ticks, machine_ticks())

    def peak_rss_mb(self) -> dict[str, float]:
        """VmHWM of the processes: gunicorn's master and its largest worker, the gRPC server."""
        peaks: dict[str, float] = {}
        for process in self.processes:
            main = status_kb(process.popen.pid, "VmHWM") or 0
            if process.role == "http":
                peaks["http_master"] = main * 1000 / MB
                workers = [status_kb(pid, "VmHWM") or 0 for pid in children(process.popen.pid)]
                peaks["http_worker"] = max(workers, default=0) * 1000 / MB
                peaks["http_workers"] = len(workers)
            else:
                peaks["grpc"] = main * 1000 / MB
        return peaks

    def adapter_outcomes(self) -> Counter[str]:
        """The adapter's answers so far by outcome (its /metrics; empty for the baselines)."""
        if self.configuration.kind != "e2e":
            return Counter()
        text = http_get(self.http_port, "/metrics")[1].decode()
        counts: Counter[str] = Counter()
        for match in re.finditer(
            r"^chat_policy_adapter_webhook_requests_total\{([^}]*)\} ([0-9.e+]+)$",
            text,
            re.MULTILINE,
        ):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            counts[labels.get("outcome", "")] += int(float(match.group(2)))
        return counts

    def sample_request(self, tag: str) -> tuple[int, bytes]:
        """POST one signed webhook like the load's; return HTTP status and body."""
        now = int(time.time())
        query = query_string(self.sdk_app_id, self.configuration.webhook)
        query += f"&Sign={compute_sign(self.token, now)}&RequestTime={now}"
        payload = body(self.configuration.webhook, tag, 0, 0, now).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
        try:
            connection.request("POST", f"/?{query}", body=payload)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def check_alive(self) -> None:
        """StartError if a process of the deployment has exited."""
        for process in self.processes:
            if exited(process.popen.pid, 0):
                with contextlib.suppress(ProcessLookupError):  # what is left of its group
                    os.killpg(process.popen.pid, signal.SIGKILL)
                code = process.popen.wait()
                raise StartError(f"{process.log.stem} exited with {code}:\n{process.tail()}")

    def wait_until_answering(self, tag: str, workers: int) -> None:
        """Wait until gunicorn has its workers and a sample webhook is answered 200, ErrorCode
        0 (for the real adapter: authenticated, and allowed by the policy)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            if len(self.pids("http")) > workers:  # the master and its workers
                try:
                    status, answer = self.sample_request(f"{tag}w")
                    if status == 200 and json.loads(answer).get("ErrorCode") == 0:
                        return
                    last = f"HTTP {status} {answer[:200]!r}"
                except (OSError, ValueError) as error:
                    last = str(error)
            time.sleep(0.1)
        raise StartError(f"{self.configuration.label} did not answer a sample webhook: {last}")

    def wait_for_grpc(self, process: Process) -> None:
        """Wait until the gRPC server answers: health SERVING (the service), or a connection
        (the echo server, which has no health service)."""
        echo = self.configuration.kind in ("b1", "b1async")
        answers = _accepts_connections if echo else grpc_serving
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            if answers(self.grpc_target):
                return
            time.sleep(0.1)
        raise StartError(f"{process.log.stem} did not answer gRPC:\n{process.tail()}")

    def stop(self) -> None:
        """SIGTERM every process (the last started first), SIGKILL it after STOP_TIMEOUT_S,
        then whatever is left of its process group, before reaping it (until then its pid,
        and so the group's id, cannot be reused)."""
        for process in reversed(self.processes):
            pid = process.popen.pid
            if process.popen.returncode is not None:
                continue
            if not exited(pid, 0):
                os.kill(pid, signal.SIGTERM)
                if not exited(pid, STOP_TIMEOUT_S):
                    os.kill(pid, signal.SIGKILL)
                    exited(pid, None)
            kill_group(pid)
            process.popen.wait()


def _accepts_connections(target: str) -> bool:
    """True when a gRPC server at target takes a connection (within half a second)."""
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.5)
        except grpc.FutureTimeoutError:
            return False
    return True


def e2e_environ(deployment: Deployment, database_url: str) -> dict[str, str]:
    """The shipped defaults, except ports, data dir, auth on, the SdkAppid, the policy file
    (BeforeCreateGroup: examples/policy.toml; AfterGroupFull: the shipped default) and the
    database (PostgreSQL; SQLite is the default file in the data dir)."""
    env = clean_env()
    env.update(
        CHAT_POLICY_HTTP_BIND=f"127.0.0.1:{deployment.http_port}",
        CHAT_POLICY_GRPC_BIND=deployment.grpc_target,
        CHAT_POLICY_METRICS_BIND=f"127.0.0.1:{deployment.metrics_port}",
        CHAT_POLICY_DATA_DIR=str(deployment.workdir / "data"),
        CHAT_POLICY_CALLBACK_TOKENS=deployment.token,
        CHAT_POLICY_SDKAPPIDS=str(deployment.sdk_app_id),
    )
    if deployment.configuration.webhook == "before":
        env["CHAT_POLICY_POLICY_FILE"] = str(EXAMPLE_POLICY)
    if database_url:
        env["CHAT_POLICY_DATABASE_URL"] = database_url
    return env


@contextlib.contextmanager
def start(configuration: Configuration, workdir: Path, sdk_app_id: int) -> Iterator[Deployment]:
    """Start `configuration` fresh on free ports (a PostgreSQL store in a new schema, dropped
    afterwards), wait until it answers a sample webhook, and stop it when the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port, metrics_port = free_ports(3)
    with contextlib.ExitStack() as stack:
        database_url = ""
        if configuration.store == "postgresql":
            database_url = stack.enter_context(fresh_database("postgresql", workdir)).url
        deployment = Deployment(
            configuration,
            workdir,
            http_port=http_port,
            sdk_app_id=sdk_app_id,
            token=f"bench-token-{secrets.token_hex(8)}",
            env=clean_env(),
        )
        stack.callback(deployment.stop)
        if configuration.variant:
            deployment.env.update(FLOOR_VARIANTS[configuration.variant][1])
        workers = AdapterSettings.from_env(deployment.env).http_workers
        http = f"127.0.0.1:{deployment.http_port}"
        baseline = [PYTHON, "-m", "bench.baseline_apps"]
        if configuration.kind == "b0":
            deployment.start("http", "b0", [*baseline, "b0", "--bind", http], deployment.env)
        elif configuration.kind == "b1":
            deployment.grpc_target = f"127.0.0.1:{grpc_port}"
            if configuration.variant == "unix":
                deployment.grpc_target = f"unix:{workdir.resolve()}/echo.sock"
            echo_kind = "echo-aio" if configuration.variant == "aio" else "echo"
            command = [*baseline, echo_kind, "--bind", deployment.grpc_target]
            echo = deployment.start("grpc", "echo", command, deployment.env)
            deployment.wait_for_grpc(echo)
            command = [*baseline, "b1", "--bind", http, "--target", deployment.grpc_target]
            deployment.start("http", "b1", command, deployment.env)
        elif configuration.kind == "b1async":
            deployment.grpc_target = f"127.0.0.1:{grpc_port}"
            command = [*baseline, "echo-aio", "--bind", deployment.grpc_target]
            echo = deployment.start("grpc", "echo", command, deployment.env)
            deployment.wait_for_grpc(echo)
            command = [*baseline, "b1async", "--bind", http, "--target", deployment.grpc_target]
            deployment.start("http", "b1async", command, deployment.env)
        else:
            deployment.grpc_target = f"127.0.0.1:{grpc_port}"
            deployment.metrics_port = metrics_port
            deployment.env = e2e_environ(deployment, database_url)
            service = deployment.start("grpc", "service", [CHAT_POLICY, "service"], deployment.env)
            deployment.wait_for_grpc(service)
            deployment.start("http", "adapter", [CHAT_POLICY, "adapter"], deployment.env)
        deployment.wait_until_answering(f"s{secrets.token_hex(3)}", workers)
        yield deployment
