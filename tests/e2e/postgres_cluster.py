"""A private PostgreSQL cluster for tests that stop and start the server: initdb, pg_ctl.

The shared test server (127.0.0.1:5432) must stay up for every other test, so a test that
takes PostgreSQL down gets a cluster of its own: a data directory under the temporary
directory, a free TCP port on 127.0.0.1, its unix socket in the data directory (away from
the system cluster's /var/run/postgresql), started and stopped with pg_ctl as a user would.

PostgreSQL refuses to run as root: as root, initdb, pg_ctl and so the server run as the
`postgres` OS user, and the cluster's directory is handed to it.

pg_ctl starts the server in a session of its own, so nothing but `close()` stops it: a
test run killed outright leaves it running, with its directory (chat-policy-pg-*).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import psycopg
from psycopg import sql

PG_CTL_TIMEOUT_S = 30
LOG_TAIL_LINES = 30
# Not durable: fast, and a server crash (stop mode "immediate", SIGKILL) may lose the last
# commits (synchronous_commit), an OS crash anything (fsync, full_page_writes).
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresUnavailable(Exception):
    """PostgreSQL's server programs, or the OS user to run them as, are not installed."""


class PostgresError(Exception):
    """initdb or pg_ctl failed; the message holds their output and the server log's tail."""


@dataclass(frozen=True)
class PostgresBinaries:
    """initdb and pg_ctl of one PostgreSQL installation, and the OS user to run them as."""

    bindir: Path
    user: pwd.struct_passwd | None  # None: run them as ourselves (we are not root)

    @classmethod
    def find(cls) -> PostgresBinaries:
        """The first installation found; raise PostgresUnavailable when there is none.

        Looked for in `pg_config --bindir`, then /usr/lib/postgresql/*/bin newest version
        first (Debian, Ubuntu), then on PATH.
        """
        bindir = _find_bindir()
        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, and PostgreSQL refuses to, but there is no `postgres` "
                    "OS user to run it as"
                ) from None
        return cls(bindir, user)

    def run(self, program: str, *args: str, cwd: Path) -> str:
        """Run bindir/program as the user; its output, or PostgresError with it."""
        command = [*self._as_user(), str(self.bindir / program), *args]
        try:
            done = subprocess.run(
                command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                timeout=PG_CTL_TIMEOUT_S + 15,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise PostgresError(f"{' '.join(command)} timed out:\n{error.output}") from None
        if done.returncode != 0:
            raise PostgresError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}"
            )
        return done.stdout

    def hand_over(self, path: Path) -> None:
        """Make path, and everything under it, the user's (nothing to do when not root)."""
        if self.user is None:
            return
        uid, gid = self.user.pw_uid, self.user.pw_gid
        os.chown(path, uid, gid)
        for parent, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)

    def _as_user(self) -> list[str]:
        """The command prefix that runs a program as the user (none when not root).

        runuser, not subprocess's user=/group=: those make Python fork() instead of spawn,
        which runs gRPC's fork handlers in a test process with open channels (seen crash).
        """
        if self.user is None:
            return []
        return ["runuser", "-u", self.user.pw_name, "--"]


def _find_bindir() -> Path:
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        done = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
        )
        candidates.append(Path(done.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(
        (Path(path) for path in versions),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / program, os.X_OK) for program in ("initdb", "pg_ctl")):
            return bindir
    looked = ", ".join(str(path) for path in candidates) or "pg_config, PATH"
    raise PostgresUnavailable(
        f"PostgreSQL's initdb and pg_ctl not found (looked in: {looked}); "
        "install the PostgreSQL server (Debian: postgresql)"
    )


def initdb(binaries: PostgresBinaries, data_dir: Path) -> None:
    """A new data directory (which must not exist yet), its parent handed to the user.

    Superuser postgres, trust authentication, UTF8 without locale; not synced to disk.
    """
    binaries.hand_over(data_dir.parent)
    binaries.run(
        "initdb",
        f"--pgdata={data_dir}",
        "--username=postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
        cwd=data_dir.parent,
    )


class PostgresCluster:
    """A cluster of our own, on 127.0.0.1:port, in a new directory that close() removes.

    Made from a copy of `template` (a data directory made by `initdb`, much faster than
    running initdb again) or by initdb. durable=False trades crash safety for speed: see
    FAST_SETTINGS. Not started: call start(), or use it as a context manager, which
    starts it and closes it.
    """

    def __init__(
        self,
        binaries: PostgresBinaries,
        port: int,
        *,
        durable: bool = True,
        template: Path | None = None,
    ) -> None:
        self.binaries = binaries
        self.port = port
        self.durable = durable
        self.directory = Path(tempfile.mkdtemp(prefix="chat-policy-pg-"))
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "server.log"
        try:
            if template is None:
                initdb(binaries, self.data_dir)
            else:
                shutil.copytree(template, self.data_dir, symlinks=True)
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(port),
                "unix_socket_directories": _quoted(str(self.data_dir)),
                **({} if durable else FAST_SETTINGS),
            }
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write("\n# PostgresCluster\n")
                conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
            binaries.hand_over(self.directory)
        except BaseException:
            shutil.rmtree(self.directory)
            raise

    @property
    def url(self) -> str:
        """The URL of database postgres, as superuser postgres."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """The URL of database `name`, as superuser postgres."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections; it must be stopped."""
        if self.is_running:
            raise PostgresError(f"the cluster on port {self.port} is running already")
        try:
            self._pg_ctl("start", f"--log={self.log_path}")
        except PostgresError as error:
            raise PostgresError(f"{error}\n{self.log_tail()}") from None

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server and wait until it is gone; it must be running.

        fast: a clean shutdown, sessions ended. immediate: like a crash, recovered from
        the WAL on the next start (without durable, the last commits may be lost).
        """
        if not self.is_running:
            raise PostgresError(f"the cluster on port {self.port} is not running")
        try:
            self._pg_ctl("stop", f"--mode={mode}")
        except PostgresError as error:
            raise PostgresError(f"{error}\n{self.log_tail()}") from None

    def restart(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """stop(mode), then start()."""
        self.stop(mode)
        self.start()

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, while it runs (from postmaster.pid)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if process_running(pid) else None

    @property
    def is_running(self) -> bool:
        """Whether the server (its postmaster) runs."""
        return self.pid is not None

    def create_database(self, name: str) -> str:
        """Create database `name`; its URL."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log, headed by its path."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no server log at {self.log_path})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"last {lines} lines of {self.log_path}:\n{tail}"

    def close(self) -> None:
        """Stop the server if it runs (immediately: nothing to keep) and remove the directory.

        When pg_ctl fails, the postmaster is killed, which its processes follow.
        """
        try:
            if self.is_running:
                try:
                    self.stop("immediate")
                finally:
                    self._kill()
        finally:
            if self.directory.exists():
                shutil.rmtree(self.directory)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _pg_ctl(self, action: str, *args: str) -> None:
        self.binaries.run(
            "pg_ctl",
            action,
            f"--pgdata={self.data_dir}",
            "--wait",
            f"--timeout={PG_CTL_TIMEOUT_S}",
            "--silent",
            *args,
            cwd=self.directory,
        )

    def _kill(self) -> None:
        """SIGKILL the postmaster if it still runs, and wait for it to be gone."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _quoted(value: str) -> str:
    """A string as a postgresql.conf value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def process_running(pid: int) -> bool:
    """Whether a process runs (not a zombie: pg_ctl's server is no child of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: alive as far as we can tell
    return stat.rpartition(")")[2].split()[0] != "Z"
