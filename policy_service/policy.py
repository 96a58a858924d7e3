"""The group-creation policy: its TOML file format, loading, and evaluation of a request.

A policy is a list of rules tried in order; the first rule whose conditions all match decides,
and the `[default]` table decides when none does. A rule with no conditions always matches.
"""

from __future__ import annotations

import enum
import hashlib
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SUPPORTED_VERSION = 1
DEFAULT_RULE_ID = "default"
REFUSAL_CODE = 1
CUSTOM_REFUSAL_CODES = range(10100, 10201)

# Chat renamed two group types; rules and requests may use either name.
GROUP_TYPE_ALIASES = {"Private": "Work", "ChatRoom": "Meeting"}


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the rule and field at fault."""


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


@dataclass(frozen=True)
class Outcome:
    """An effect and, for a refusal, what Chat tells the creator."""

    effect: Effect
    error_code: int = 0
    error_info: str = ""


@dataclass(frozen=True)
class Rule:
    """One rule: conditions (empty set = any value) and the outcome when they all match."""

    id: str
    outcome: Outcome
    group_types: frozenset[str] = frozenset()
    operator_accounts: frozenset[str] = frozenset()
    opt_platforms: frozenset[str] = frozenset()

    def matches(self, request: CreationRequest) -> bool:
        """True when every condition the rule sets holds for the request."""
        return (
            _in(self.group_types, canonical_group_type(request.group_type))
            and _in(self.operator_accounts, request.operator_account)
            and _in(self.opt_platforms, request.opt_platform.casefold())
        )


@dataclass(frozen=True)
class Decision:
    """The answer to one request, with what explains it."""

    outcome: Outcome
    rule_id: str
    policy_revision: str
    decision_id: str


@dataclass(frozen=True)
class Policy:
    """A loaded policy: its rules in order, its default and the revision of its source."""

    rules: tuple[Rule, ...]
    default: Outcome
    revision: str

    def decide(self, request: CreationRequest) -> Decision:
        """Evaluate the rules in order; the first match decides, else the default."""
        for rule in self.rules:
            if rule.matches(request):
                return self._decision(rule.outcome, rule.id)
        return self._decision(self.default, DEFAULT_RULE_ID)

    def _decision(self, outcome: Outcome, rule_id: str) -> Decision:
        return Decision(outcome, rule_id, self.revision, uuid.uuid4().hex)


def canonical_group_type(group_type: str) -> str:
    """The current name of a group type ("Private" -> "Work"); unknown names pass through."""
    return GROUP_TYPE_ALIASES.get(group_type, group_type)


def load_policy(path: Path | None) -> Policy:
    """Load and validate a policy file; None loads the shipped allow-everything default."""
    if path is None:
        source = resources.files("policy_service").joinpath("default_policy.toml").read_bytes()
        where = "default policy"
    else:
        try:
            source = path.read_bytes()
        except OSError as error:
            raise PolicyError(f"{path}: cannot read: {error.strerror}") from None
        where = str(path)
    return parse_policy(source, where)


def parse_policy(source: bytes, where: str = "policy") -> Policy:
    """Parse policy TOML; PolicyError says what is wrong, prefixed with `where`."""
    try:
        document = tomllib.loads(source.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"{where}: not valid TOML: {error}") from None
    try:
        return _policy_from_document(document, _revision(source))
    except PolicyError as error:
        raise PolicyError(f"{where}: {error}") from None


def _policy_from_document(document: Mapping[str, object], revision: str) -> Policy:
    _only_keys(document, {"version", "default", "rules"}, "top level")
    version = document.get("version")
    if version != SUPPORTED_VERSION:
        raise PolicyError(f"version: must be {SUPPORTED_VERSION}, got {version!r}")
    default_table = _table(document.get("default", {}), "default")
    _only_keys(default_table, {"effect", "error_code", "error_info"}, "default")
    default = _outcome(default_table, "default")
    raw_rules = document.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError("rules: must be an array of tables ([[rules]])")
    rules = tuple(_rule(raw, index) for index, raw in enumerate(raw_rules))
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise PolicyError(f"rule {rule.id!r}: id is used twice")
        seen.add(rule.id)
    return Policy(rules, default, revision)


def _rule(raw: object, index: int) -> Rule:
    table = _table(raw, f"rules[{index}]")
    rule_id = table.get("id")
    if not isinstance(rule_id, str) or not rule_id or rule_id == DEFAULT_RULE_ID:
        raise PolicyError(f"rules[{index}].id: must be a non-empty string other than 'default'")
    where = f"rule {rule_id!r}"
    conditions = {"group_types", "operator_accounts", "opt_platforms"}
    _only_keys(table, {"id", "effect", "error_code", "error_info", *conditions}, where)
    outcome = _outcome(table, where)
    group_types = _strings(table, "group_types", where)
    return Rule(
        id=rule_id,
        outcome=outcome,
        group_types=frozenset(map(canonical_group_type, group_types)),
        operator_accounts=frozenset(_strings(table, "operator_accounts", where)),
        opt_platforms=frozenset(p.casefold() for p in _strings(table, "opt_platforms", where)),
    )


def _outcome(table: Mapping[str, object], where: str) -> Outcome:
    effect_name = table.get("effect", "allow")
    try:
        effect = Effect(effect_name)
    except ValueError:
        raise PolicyError(
            f"{where}.effect: must be 'allow' or 'deny', got {effect_name!r}"
        ) from None
    code = table.get("error_code", REFUSAL_CODE if effect is Effect.DENY else 0)
    info = table.get("error_info", "")
    if not isinstance(info, str):
        raise PolicyError(f"{where}.error_info: must be a string")
    if effect is Effect.ALLOW:
        if "error_code" in table or info:
            raise PolicyError(f"{where}: error_code and error_info only apply to effect 'deny'")
        return Outcome(Effect.ALLOW)
    if type(code) is not int or (code != REFUSAL_CODE and code not in CUSTOM_REFUSAL_CODES):
        raise PolicyError(f"{where}.error_code: must be 1 or in [10100, 10200], got {code!r}")
    return Outcome(Effect.DENY, code, info)


def _table(raw: object, where: str) -> Mapping[str, object]:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    return raw


def _strings(table: Mapping[str, object], field: str, where: str) -> list[str]:
    values = table.get(field, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise PolicyError(f"{where}.{field}: must be a list of non-empty strings")
    return values


def _only_keys(table: Mapping[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _in(allowed: frozenset[str], value: str) -> bool:
    return not allowed or value in allowed


def _revision(source: bytes) -> str:
    return "sha256:" + hashlib.sha256(source).hexdigest()[:16]
