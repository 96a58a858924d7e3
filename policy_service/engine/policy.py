"""The group-creation policy: requests, rules, and the evaluation that decides.

A policy is a list of rules tried in order. A rule applies to a request when its scope
(group types, operators, platforms, a CEL `when`) matches; an applying rule then runs its
check, and a failed check decides with the rule's outcome. The first rule that decides wins;
the default decides when none does. A shadow rule is evaluated and reported ("would decide")
but never decides. policy_file.py reads policies from TOML; rules.py holds the checks.
"""

from __future__ import annotations

import bisect
import enum
import logging
import os
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import cel

from chat_policy_shared.field_limits import (
    MAX_ACCOUNT_BYTES,
    MAX_NAME_BYTES,
    MAX_SHORT_TEXT_BYTES,
    text_problem,
)
from policy_service import clock
from policy_service.engine.address_ranges import Address
from policy_service.engine.group_types import canonical_group_type
from policy_service.engine.rate_limit import RateCounter
from policy_service.errors import InvalidArgument, StoreUnavailable

DEFAULT_RULE_ID = "default"
REFUSAL_CODE = 1
CUSTOM_REFUSAL_CODES = range(10100, 10201)

log = logging.getLogger(__name__)


class Effect(enum.Enum):
    """What a rule (or the default) does to a request it decides."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class CreationRequest:
    """A Group.CallbackBeforeCreateGroup request; empty strings and None mean "Chat omitted"."""

    sdk_app_id: int
    operator_account: str = ""
    owner_account: str = ""
    group_type: str = ""
    name: str = ""
    create_group_num: int | None = None
    member_accounts: tuple[str, ...] = ()
    event_time_ms: int | None = None
    client_ip: str = ""
    opt_platform: str = ""

    def validate(self) -> None:
        """Raise InvalidArgument, naming the field, unless the request names its application
        and every text field can be kept by every store (field_limits)."""
        if not 0 < self.sdk_app_id < 2**63:
            raise InvalidArgument("sdk_app_id", "is required and must be below 2**63")
        texts = [
            ("operator_account", self.operator_account, MAX_ACCOUNT_BYTES),
            ("owner_account", self.owner_account, MAX_ACCOUNT_BYTES),
            ("group_type", self.group_type, MAX_SHORT_TEXT_BYTES),
            ("name", self.name, MAX_NAME_BYTES),
            ("client_ip", self.client_ip, MAX_SHORT_TEXT_BYTES),
            ("opt_platform", self.opt_platform, MAX_SHORT_TEXT_BYTES),
        ]
        texts += [
            (f"member_accounts[{index}]", account, MAX_ACCOUNT_BYTES)
            for index, account in enumerate(self.member_accounts)
        ]
        for name, value, max_bytes in texts:
            if problem := text_problem(value, max_bytes):
                raise InvalidArgument(name, problem)


@dataclass(frozen=True)
class Outcome:
    """An effect and, for a refusal, what Chat tells the creator."""

    effect: Effect
    error_code: int = 0
    error_info: str = ""


class RuleResult(enum.Enum):
    """What happened to one rule during an evaluation."""

    NOT_APPLICABLE = "not_applicable"  # its scope did not match
    PASSED = "passed"  # it applied and its check passed: no decision
    DECIDED = "decided"  # it decided the request
    SHADOW = "shadow"  # a shadow rule that would have decided
    ERROR = "error"  # its condition or check failed to evaluate: skipped


@dataclass(frozen=True)
class RuleEvaluation:
    """One rule's result for one request, with the reason its check gave."""

    rule_id: str
    kind: str
    result: RuleResult
    effect: Effect
    reason: str = ""


class Evaluation:
    """The per-request state rules share: the request and what is derived from it once (the
    group type's current name, the platform folded, the folded name, the parsed ClientIP,
    CEL values), the clock, and the rate-limit slots taken (given back on a refusal); a dry
    run takes none, its rate limits only count."""

    __slots__ = (
        "address",
        "cel_context",
        "cel_variables",
        "counter",
        "dry_run",
        "folded_name",
        "group_type",
        "now_ms",
        "platform",
        "request",
        "slots",
    )

    def __init__(
        self,
        request: CreationRequest,
        now_ms: int,
        counter: RateCounter | None,
        dry_run: bool = False,
    ) -> None:
        self.request = request
        self.now_ms = now_ms
        self.counter = counter
        self.dry_run = dry_run
        self.group_type = canonical_group_type(request.group_type)
        self.platform = request.opt_platform.casefold()
        self.folded_name: str | None = None
        self.address: Address | bool | None = False  # False: not parsed yet
        self.cel_context: cel.Context | None = None
        self.cel_variables: set[str] = set()
        self.slots: list[int] = []


class ConditionError(Exception):
    """A condition could not be evaluated for this request; the message says why."""


class Condition(Protocol):
    """A condition a rule's scope may carry (a CEL expression)."""

    expression: str

    def holds(self, evaluation: Evaluation) -> bool:
        """True when it holds; ConditionError when it cannot be evaluated."""
        ...


class Check(Protocol):
    """What a rule verifies once it applies.

    A check is plain CPU work, except one that counts in the store (a rate limit): its
    `awaits` is true and its violation returns an awaitable of the same answer, which
    Policy.decide awaits. Every other check runs inline, without a coroutine of its own.
    """

    awaits: bool

    def violation(self, evaluation: Evaluation) -> str | Awaitable[str | None] | None:
        """The reason the request fails the check, or None when it passes; ConditionError
        when the check cannot be made for this request."""
        ...


@dataclass(frozen=True)
class Scope:
    """Which requests a rule applies to: every condition set must match (empty = any)."""

    group_types: frozenset[str] = frozenset()
    operator_accounts: frozenset[str] = frozenset()
    opt_platforms: frozenset[str] = frozenset()
    when: Condition | None = None

    def applies(self, evaluation: Evaluation) -> bool:
        """True when the request is in scope; ConditionError from a failing `when`."""
        if self.group_types and evaluation.group_type not in self.group_types:
            return False
        operator = evaluation.request.operator_account
        if self.operator_accounts and operator not in self.operator_accounts:
            return False
        if self.opt_platforms and evaluation.platform not in self.opt_platforms:
            return False
        return self.when is None or self.when.holds(evaluation)


class Matched:
    """The check of a plain `match` rule: applying is deciding."""

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Always decides."""
        return "matched"


@dataclass(frozen=True)
class Rule:
    """One rule of a policy."""

    id: str
    kind: str
    outcome: Outcome
    scope: Scope = field(default_factory=Scope)
    check: Check = field(default_factory=Matched)
    shadow: bool = False


@dataclass(frozen=True)
class Decision:
    """The answer to one request and what explains it.

    shadow_hits are the shadow rules that would have decided; errors the rules skipped
    because they could not be evaluated; evaluations every evaluated rule, when asked.
    """

    outcome: Outcome
    rule_id: str
    reason: str
    policy_revision: str
    decision_id: str
    shadow_hits: tuple[RuleEvaluation, ...] = ()
    errors: tuple[RuleEvaluation, ...] = ()
    evaluations: tuple[RuleEvaluation, ...] = ()


@dataclass(frozen=True)
class Policy:
    """A loaded policy: its rules in order, its default and the revision of its sources.

    sources are the list files it read besides the policy file; longest_window_ms is its
    longest rate-limit window (how long rate-limit slots must be kept); warnings are the
    problems that did not stop it loading, each `FILE:LINE: rule 'ID' field 'KEY': ...`.
    """

    rules: tuple[Rule, ...]
    default: Outcome
    revision: str
    longest_window_ms: int = 0
    sources: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    _index: _RuleIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _RuleIndex(self.rules))

    async def decide(
        self,
        request: CreationRequest,
        *,
        counter: RateCounter | None = None,
        now_ms: int | None = None,
        explain: bool = False,
        dry_run: bool = False,
    ) -> Decision:
        """Evaluate the rules in order: the first that decides wins, else the default.

        A coroutine only because a rate-limit rule awaits the store's counter; the rest is
        synchronous CPU work on the caller's thread (no executor hop).

        counter counts rate-limited creations (a rate-limit rule without one is an error,
        and skipped); now_ms is the clock rate limits and `time` use, the service's by
        default. A refusal gives back the rate-limit slots the evaluation took. A dry run
        takes none (a rate-limit rule counts the window plus this request) and is explained.
        """
        if now_ms is None:
            now_ms = clock.now_ms()
        explain = explain or dry_run
        evaluation = Evaluation(request, now_ms, counter, dry_run)
        # Explaining walks every rule, so that the ones the index skips show as not applicable.
        rules = (
            self.rules
            if explain
            else self._index.candidates(evaluation.group_type, request.operator_account)
        )
        evaluations: list[RuleEvaluation] = []
        shadow_hits: list[RuleEvaluation] = []
        errors: list[RuleEvaluation] = []
        outcome, rule_id, reason = self.default, DEFAULT_RULE_ID, "no rule decided"
        for rule in rules:
            try:
                if not rule.scope.applies(evaluation):
                    if explain:
                        evaluations.append(_evaluated(rule, RuleResult.NOT_APPLICABLE))
                    continue
                check = rule.check
                found = check.violation(evaluation)
                if check.awaits:  # a rate limit, counting in the store
                    violation = await cast("Awaitable[str | None]", found)
                else:
                    violation = cast("str | None", found)
            except ConditionError as error:
                errors.append(_evaluated(rule, RuleResult.ERROR, str(error)))
                if explain:
                    evaluations.append(errors[-1])
                continue
            if violation is None:
                if explain:
                    evaluations.append(_evaluated(rule, RuleResult.PASSED))
                continue
            if rule.shadow:
                shadow_hits.append(_evaluated(rule, RuleResult.SHADOW, violation))
                if explain:
                    evaluations.append(shadow_hits[-1])
                continue
            if explain:
                evaluations.append(_evaluated(rule, RuleResult.DECIDED, violation))
            outcome, rule_id, reason = rule.outcome, rule.id, violation
            break
        if outcome.effect is Effect.DENY and evaluation.slots and counter is not None:
            await _give_back(counter, evaluation.slots)
        return Decision(
            outcome,
            rule_id,
            reason,
            self.revision,
            new_decision_id(),
            tuple(shadow_hits),
            tuple(errors),
            tuple(evaluations),
        )


class _RuleIndex:
    """The rules that can apply to a request, in policy order, by its group type and operator.

    A request walks only the rules whose group_types and operator_accounts scopes admit it,
    whatever the policy holds for other types and operators: the shared rules of its type,
    with the few that name its operator merged in at their places.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        types = {t for rule in rules for t in rule.scope.group_types}
        self._shared: dict[str | None, tuple[list[int], list[Rule]]] = {}
        self._named: dict[tuple[str | None, str], list[tuple[int, Rule]]] = {}
        for group_type in (*types, None):
            fits = [
                (position, rule)
                for position, rule in enumerate(rules)
                if not rule.scope.group_types or group_type in rule.scope.group_types
            ]
            shared = [(p, r) for p, r in fits if not r.scope.operator_accounts]
            self._shared[group_type] = ([p for p, _ in shared], [r for _, r in shared])
            for position, rule in fits:
                for operator in rule.scope.operator_accounts:
                    self._named.setdefault((group_type, operator), []).append((position, rule))

    def candidates(self, group_type: str, operator: str) -> Sequence[Rule]:
        """The rules to walk for a request, in policy order."""
        key: str | None = group_type if group_type in self._shared else None
        positions, rules = self._shared[key]
        named = self._named.get((key, operator)) if self._named else None
        if not named:
            return rules
        positions, merged = list(positions), list(rules)
        for position, rule in named:
            at = bisect.bisect(positions, position)
            positions.insert(at, position)
            merged.insert(at, rule)
        return merged


def new_decision_id() -> str:
    """32 hex digits: the clock in nanoseconds, then 64 random bits. Unique, and within a
    replica later decisions sort after earlier ones, even in the same millisecond, so the
    decision log's newest-first order (decided_at_ms, decision_id) is the order of decisions."""
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


def _evaluated(rule: Rule, result: RuleResult, reason: str = "") -> RuleEvaluation:
    return RuleEvaluation(rule.id, rule.kind, result, rule.outcome.effect, reason)


async def _give_back(counter: RateCounter, slots: Sequence[int]) -> None:
    try:
        for slot in slots:
            await counter.release(slot)
    except StoreUnavailable as error:
        # The refusal stands; the creation it did not make counts until its window passes.
        log.warning("could not give back rate-limit slots %s: %s", list(slots), error)
