"""Hot reload of the access file: on SIGHUP and when the file changes.

A reload reads and checks the whole file beside the rules in force, then swaps one reference:
a call being admitted uses the rules it started with. A file that fails to load is refused
with an error line; the replica keeps the last good rules.
"""

from __future__ import annotations

import logging
from pathlib import Path

from policy_service.access.access_file import AccessError, load_access
from policy_service.access.access_rules import AccessRules
from policy_service.file_watcher import FileWatcher, ReloadHook, file_stat

log = logging.getLogger(__name__)


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


class AccessFileWatcher(FileWatcher):
    """Reloads an AccessHolder when SIGHUP is signalled or its file changes."""

    def __init__(
        self, holder: AccessHolder, interval_s: float, on_reload: ReloadHook | None = None
    ) -> None:
        super().__init__(
            "access-reload",
            holder.reload,
            lambda: file_stat(holder.path),
            interval_s,
            on_reload,
        )
