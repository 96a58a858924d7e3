"""Hot reload of the group-creation policy: on SIGHUP and when its files change.

A reload loads and validates the whole policy beside the running one, then swaps one
reference: a request in flight finishes with the policy it started with, and none waits for
a load. A policy that fails to load is refused; the replica keeps the last good one and
GetPolicy and the log say why.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from policy_service.clock import now_ms
from policy_service.engine.policy import Policy
from policy_service.engine.policy_file import PolicyError, load_policy
from policy_service.file_watcher import FileWatcher, ReloadHook, file_stat

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


class PolicyFileWatcher(FileWatcher):
    """Reloads a PolicyHolder when SIGHUP is signalled or its files (the policy file and the
    list files it reads) change; the shipped default policy is never reloaded."""

    def __init__(
        self, holder: PolicyHolder, interval_s: float, on_reload: ReloadHook | None = None
    ) -> None:
        self._holder = holder
        super().__init__("policy-reload", self._load, self._files, interval_s, on_reload)

    def start(self) -> None:
        """Start watching, on the running loop (a no-op for the shipped default policy)."""
        if self._holder.path is not None:
            super().start()

    def _load(self) -> tuple[bool, str]:
        """Reload (in the watcher's worker thread): whether it loaded, the revision or why not."""
        if self._holder.reload():
            return True, f"revision {self._holder.policy.revision}"
        return False, self._holder.status.error

    def _files(self) -> tuple[tuple[int, int, int] | None, ...]:
        """What identifies the content of the policy file and its list files on disk."""
        holder = self._holder
        if holder.path is None:
            return ()
        return tuple(file_stat(path) for path in (holder.path, *holder.policy.sources))
