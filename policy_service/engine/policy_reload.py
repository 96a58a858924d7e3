"""Hot reload of the group-creation policy: on SIGHUP and when its files change.

A reload loads and validates the whole policy beside the running one, then swaps one
reference: a request in flight finishes with the policy it started with, and none waits for
a load. A policy that fails to load is refused; the replica keeps the last good one and
GetPolicy and the log say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from policy_service.background import cancel_task
from policy_service.clock import now_ms
from policy_service.engine.policy import Policy
from policy_service.engine.policy_file import PolicyError, load_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadStatus:
    """How the latest reload went: when it was tried and, if it was refused, why."""

    attempted_at_ms: int | None = None
    error: str = ""


class PolicyHolder:
    """The policy a replica runs now, and reloading it from its file."""

    def __init__(self, path: Path | None, policy: Policy) -> None:
        """Hold an already loaded policy; path None means the shipped default (never reloaded)."""
        self.path = path
        self.policy = policy
        self.loaded_at_ms = now_ms()
        self.status = ReloadStatus()
        self._lock = threading.Lock()
        _log_warnings(policy)

    @property
    def source(self) -> str:
        """The policy file's path, or "default policy"."""
        return str(self.path) if self.path is not None else "default policy"

    def reload(self) -> bool:
        """Load the file again and run it if valid; False (keeping the running policy) if not."""
        if self.path is None:
            return True
        with self._lock:  # SIGHUP and a file change at once load once each, in turn.
            attempted = now_ms()
            try:
                policy = load_policy(self.path)
            except PolicyError as error:
                self.status = ReloadStatus(attempted, str(error))
                log.error(
                    "policy reload refused, still running %s: %s", self.policy.revision, error
                )
                return False
            self.status = ReloadStatus(attempted)
            if policy.revision == self.policy.revision:
                log.info("policy reloaded: unchanged, revision %s", policy.revision)
                return True
            previous, self.policy, self.loaded_at_ms = self.policy, policy, attempted
            log.info(
                "policy reloaded: revision %s -> %s, %d rules",
                previous.revision,
                policy.revision,
                len(policy.rules),
            )
            _log_warnings(policy)
            return True


def _log_warnings(policy: Policy) -> None:
    """Log what `chat-policy policy check` warns about a policy the replica now runs."""
    for warning in policy.warnings:
        log.warning("policy %s: %s", policy.revision, warning)


# Told of each reload: what started it ("file changed", "SIGHUP"), whether the new policy was
# loaded, and its revision or why it was refused (the service points it at the audit trail).
ReloadHook = Callable[[str, bool, str], Awaitable[None]]


class PolicyFileWatcher:
    """Reloads a PolicyHolder when SIGHUP is signalled or its files change: a task on the
    service's loop polls the files' stat every interval_s; a reload (reading and compiling
    the files) runs in a worker thread, so that requests keep being served meanwhile. Each
    reload is reported to on_reload, if given."""

    def __init__(
        self, holder: PolicyHolder, interval_s: float, on_reload: ReloadHook | None = None
    ) -> None:
        self._holder = holder
        self._interval_s = interval_s
        self._on_reload = on_reload
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seen = self._signature()

    def start(self) -> None:
        """Start watching, on the running loop (a no-op for the shipped default policy)."""
        if self._holder.path is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="policy-reload")

    def request_reload(self) -> None:
        """Ask for a reload now (on the loop: the SIGHUP handler runs there)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop watching (a reload already under way finishes in its thread)."""
        await cancel_task(self._task)

    async def _run(self) -> None:
        while True:
            signalled = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
                signalled = True
            self._wake.clear()
            if signalled or self._signature() != self._seen:
                loaded, detail = await self._reload()
                # After the load: a new policy may read other list files.
                self._seen = self._signature()
                if self._on_reload is not None:
                    try:
                        await self._on_reload(
                            "SIGHUP" if signalled else "file changed", loaded, detail
                        )
                    except Exception:
                        log.exception("reporting a policy reload failed unexpectedly")

    async def _reload(self) -> tuple[bool, str]:
        """Reload in a worker thread: whether it loaded, and the revision or why not."""
        try:
            loaded = await asyncio.to_thread(self._holder.reload)
        except Exception as error:
            log.exception("policy reload failed unexpectedly; still running the last")
            return False, f"unexpected error: {error}"
        if loaded:
            return True, f"revision {self._holder.policy.revision}"
        return False, self._holder.status.error

    def _signature(self) -> tuple[tuple[int, int, int] | None, ...]:
        """What identifies the content of the policy file and its list files on disk."""
        holder = self._holder
        if holder.path is None:
            return ()
        return tuple(_stat(path) for path in (holder.path, *holder.policy.sources))


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)
