"""How often each rule of the running policy decided, would have (shadow) or failed, in this
replica since it loaded that revision: what GetPolicy reports per rule."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from policy_service.engine.policy import Decision


@dataclass
class RuleCount:
    """One rule's counts."""

    decided: int = 0
    shadow_hits: int = 0
    errors: int = 0


class RuleCounts:
    """Counts per rule id for one revision; a decision of another revision starts over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revision = ""
        self._counts: dict[str, RuleCount] = {}

    def add(self, decision: Decision) -> None:
        """Count one decision."""
        with self._lock:
            if decision.policy_revision != self._revision:
                self._revision, self._counts = decision.policy_revision, {}
            counts = self._counts
            counts.setdefault(decision.rule_id, RuleCount()).decided += 1
            for hit in decision.shadow_hits:
                counts.setdefault(hit.rule_id, RuleCount()).shadow_hits += 1
            for error in decision.errors:
                counts.setdefault(error.rule_id, RuleCount()).errors += 1

    def of(self, revision: str) -> dict[str, RuleCount]:
        """A copy of the counts of `revision` (empty if it decided nothing yet)."""
        with self._lock:
            if revision != self._revision:
                return {}
            return {rule: RuleCount(**vars(c)) for rule, c in self._counts.items()}
