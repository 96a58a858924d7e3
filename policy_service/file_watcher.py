"""Hot reload of a file the service runs by (the policy, the access file): on SIGHUP and when
the file changes.

A task on the service's loop polls what identifies the files on disk every interval_s; a
reload runs in a worker thread, so that calls keep being served meanwhile, and is reported to
a hook (the service points it at the audit trail).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path

from policy_service.background import cancel_task

log = logging.getLogger(__name__)

ReloadHook = Callable[[str, bool, str], Awaitable[None]]
"""Told of every reload: what started it ("file changed", "SIGHUP"), whether the new file was
loaded, and its revision ("revision sha256:...") or why it was refused."""

Reload = Callable[[], tuple[bool, str]]
"""Load the file again and apply it if valid: (loaded, the revision or why it was refused)."""


class FileWatcher:
    """Runs `reload` when SIGHUP is signalled or `signature` (what identifies the files'
    content on disk, taken after each reload) changes."""

    def __init__(
        self,
        name: str,
        reload: Reload,
        signature: Callable[[], Hashable],
        interval_s: float,
        on_reload: ReloadHook | None = None,
    ) -> None:
        self._name = name
        self._reload = reload
        self._signature = signature
        self._interval_s = interval_s
        self._on_reload = on_reload
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seen = signature()

    def start(self) -> None:
        """Start watching, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

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
            if not signalled and self._signature() == self._seen:
                continue
            try:
                loaded, detail = await asyncio.to_thread(self._reload)
            except Exception as error:  # a bug: keep watching, with the last good file
                log.exception("%s failed unexpectedly; the last good file stays", self._name)
                loaded, detail = False, f"unexpected error: {error}"
            # After the load: a new policy may read other list files.
            self._seen = self._signature()
            if self._on_reload is not None:
                try:
                    await self._on_reload("SIGHUP" if signalled else "file changed", loaded, detail)
                except Exception:
                    log.exception("reporting a %s failed unexpectedly", self._name)


def file_stat(path: Path) -> tuple[int, int, int] | None:
    """What identifies a file's content on disk (None: it cannot be read)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)
