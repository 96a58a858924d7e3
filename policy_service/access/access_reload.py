"""Hot reload of the access file: on SIGHUP and when the file changes.

A reload reads and checks the whole file beside the rules in force, then swaps one reference:
a call being admitted uses the rules it started with. A file that fails to load is refused
with an error line; the replica keeps the last good rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from policy_service.access.access_file import AccessError, load_access
from policy_service.access.access_rules import AccessRules
from policy_service.background import cancel_task

log = logging.getLogger(__name__)

ReloadHook = Callable[[str, bool, str], Awaitable[None]]
"""Told of every reload: (reason "file changed" or "SIGHUP", loaded, "revision sha256:..." or
why the file was refused). The service points it at the audit trail ("access.reload")."""


class AccessHolder:
    """The access rules a replica applies now, and reloading them from their file."""

    def __init__(self, path: Path, rules: AccessRules) -> None:
        """Hold rules already loaded from `path`."""
        self.path = path
        self.rules = rules
        self.last_reload_error = ""
        """Why the latest reload was refused; empty when it loaded, or none was tried."""

    def reload(self) -> tuple[bool, str]:
        """Load the file again and apply it if valid: (True, "revision sha256:..."), or
        (False, why) and the rules in force are kept."""
        try:
            rules = load_access(self.path)
        except AccessError as error:
            self.last_reload_error = str(error)
            log.error(
                "access file reload refused, still applying %s: %s", self.rules.revision, error
            )
            return False, str(error)
        previous, self.rules = self.rules, rules
        self.last_reload_error = ""
        if rules.revision == previous.revision:
            log.info("access file reloaded: unchanged, revision %s", rules.revision)
        else:
            log.info(
                "access file reloaded: revision %s -> %s, %d callers",
                previous.revision,
                rules.revision,
                len(rules.grants),
            )
        return True, f"revision {rules.revision}"


class AccessFileWatcher:
    """Reloads an AccessHolder when SIGHUP is signalled or its file changes: a task on the
    service's loop polls the file's stat every interval_s and loads it in a worker thread."""

    def __init__(
        self, holder: AccessHolder, interval_s: float, on_reload: ReloadHook | None = None
    ) -> None:
        self._holder = holder
        self._interval_s = interval_s
        self._on_reload = on_reload
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seen = _stat(holder.path)

    def start(self) -> None:
        """Start watching, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="access-reload")

    def request_reload(self) -> None:
        """Ask for a reload now (on the loop: the SIGHUP handler runs there)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop watching."""
        await cancel_task(self._task)

    async def _run(self) -> None:
        while True:
            signalled = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
                signalled = True
            self._wake.clear()
            seen = _stat(self._holder.path)
            if not signalled and seen == self._seen:
                continue
            self._seen = seen
            try:
                loaded, detail = await asyncio.to_thread(self._holder.reload)
            except Exception as error:  # a bug: keep watching, with the last good rules
                log.exception("access file reload failed unexpectedly; still applying the last")
                loaded, detail = False, f"unexpected error: {error}"
            if self._on_reload is not None:
                try:
                    await self._on_reload("SIGHUP" if signalled else "file changed", loaded, detail)
                except Exception:
                    log.exception("the access reload hook failed")


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What identifies the file's content on disk (None: it cannot be read)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)
