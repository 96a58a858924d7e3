"""Reading a policy file (TOML, format version 1) into a Policy, with precise errors.

Every error names the file, the line, the rule and the field at fault. Lists of accounts or
banned words may live in files of their own (one entry per line, `#` comments), named
relative to the policy file; the policy's revision is a hash of all of its files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from policy_service.engine.address_ranges import AddressRanges
from policy_service.engine.banned_words import BannedWords
from policy_service.engine.cel_conditions import NULLABLE_VARIABLES, CelCondition
from policy_service.engine.group_types import GROUP_TYPE_ALIASES, canonical_group_type
from policy_service.engine.policy import (
    CUSTOM_REFUSAL_CODES,
    DEFAULT_RULE_ID,
    REFUSAL_CODE,
    Check,
    Effect,
    Matched,
    Outcome,
    Policy,
    Rule,
    Scope,
)
from policy_service.engine.rules import (
    BlockedCheck,
    ClientIpCheck,
    MembersCheck,
    NameCheck,
    OwnerCheck,
    PlatformTypesCheck,
    QuotaCheck,
    RateLimitCheck,
)
from policy_service.engine.toml_tables import (
    KeyLines,
    LocatedError,
    Problem,
    located,
    only_keys,
    parse_toml,
    read_file,
)

SUPPORTED_VERSION = 1
GROUP_TYPES = frozenset({"Work", "Public", "Meeting", "AVChatRoom", "Community"})
MAX_WINDOW_S = 31 * 86400
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_WINDOW = re.compile(r"([1-9][0-9]*)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COMMON_KEYS = frozenset(
    {
        "id",
        "kind",
        "description",
        "shadow",
        "effect",
        "error_code",
        "error_info",
        "group_types",
        "operator_accounts",
        "opt_platforms",
        "when",
    }
)


class PolicyError(LocatedError):
    """The policy cannot be used; str() reads `FILE:LINE: rule 'ID' field 'KEY': problem`."""

    def __init__(
        self,
        message: str,
        *,
        where: str = "policy",
        line: int | None = None,
        rule_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.rule_id, self.field = rule_id, field
        super().__init__(message, where=where, line=line, subject=_subject(rule_id, field))


def _subject(rule_id: str | None, field: str | None) -> str:
    """`rule 'ID' field 'KEY'`, each part only when known."""
    subject = f"rule {rule_id!r}" if rule_id else ""
    if field:
        subject = f"{subject} field {field!r}".strip()
    return subject


def load_policy(path: Path | None) -> Policy:
    """Load and validate a policy file; None loads the shipped allow-everything default."""
    if path is None:
        source = resources.files("policy_service").joinpath("default_policy.toml").read_bytes()
        return parse_policy(source, "default policy")
    return parse_policy(read_file(path, PolicyError), str(path), base_dir=path.parent)


def parse_policy(source: bytes, where: str = "policy", base_dir: Path | None = None) -> Policy:
    """Parse policy TOML; list files are read relative to base_dir (none when None)."""
    text, document = parse_toml(source, where, PolicyError)
    return _Loader(text, where, base_dir, source).policy(document)


class _Loader:
    def __init__(self, text: str, where: str, base_dir: Path | None, source: bytes) -> None:
        self.where, self.base_dir = where, base_dir
        self.lines = KeyLines(text, "rules")
        self.digest = hashlib.sha256(source)
        self.sources: list[Path] = []
        self.warnings: list[str] = []

    def error(self, problem: Problem, section: str, rule_id: str | None = None) -> PolicyError:
        return PolicyError(
            problem.message,
            where=self.where,
            line=self.lines.line(section, problem.key),
            rule_id=rule_id,
            field=problem.key,
        )

    def policy(self, document: Mapping[str, object]) -> Policy:
        try:
            only_keys(document, {"version", "default", "rules"})
            version = document.get("version")
            if type(version) is not int or version != SUPPORTED_VERSION:
                raise Problem("version", f"must be {SUPPORTED_VERSION}, got {version!r}")
            if not isinstance(document.get("rules", []), list):
                raise Problem("rules", "must be an array of tables ([[rules]])")
        except Problem as problem:
            raise self.error(problem, "") from None
        try:
            default_table = _table(document.get("default", {}), "default")
            only_keys(default_table, {"effect", "error_code", "error_info"})
            default = _outcome(default_table, Effect.ALLOW)
        except Problem as problem:
            raise self.error(problem, "default", DEFAULT_RULE_ID) from None
        raw_rules = document.get("rules", [])
        assert isinstance(raw_rules, list)
        rules: list[Rule] = []
        seen: set[str] = set()
        for index, raw in enumerate(raw_rules):
            rule = self.rule(raw, index)
            if rule.id in seen:
                raise self.error(
                    Problem("id", "is used by an earlier rule"), f"rules.{index}", rule.id
                )
            seen.add(rule.id)
            rules.append(rule)
        windows = [r.check.window_ms for r in rules if isinstance(r.check, RateLimitCheck)]
        return Policy(
            tuple(rules),
            default,
            "sha256:" + self.digest.hexdigest()[:16],
            longest_window_ms=max(windows, default=0),
            sources=tuple(self.sources),
            warnings=tuple(self.warnings),
        )

    def rule(self, raw: object, index: int) -> Rule:
        section = f"rules.{index}"
        rule_id: str | None = None
        try:
            table = _table(raw, f"rules[{index}]")
            candidate = table.get("id")
            if not isinstance(candidate, str) or not _RULE_ID.fullmatch(candidate):
                raise Problem(
                    "id",
                    "must be 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit",
                )
            if candidate == DEFAULT_RULE_ID:
                raise Problem("id", f"{DEFAULT_RULE_ID!r} names the default, not a rule")
            rule_id = candidate
            kind = table.get("kind", "match")
            if not isinstance(kind, str) or kind not in _KINDS:
                raise Problem("kind", f"must be one of {', '.join(_KINDS)}, got {kind!r}")
            keys, build = _KINDS[kind]
            only_keys(table, _COMMON_KEYS | keys)
            _string(table, "description")
            shadow = table.get("shadow", False)
            if not isinstance(shadow, bool):
                raise Problem("shadow", "must be true or false")
            if kind != "match" and table.get("effect", "deny") != "deny":
                raise Problem("effect", f"a {kind} rule can only deny")
            outcome = _outcome(table, Effect.ALLOW if kind == "match" else Effect.DENY)
            when = _condition(table)
            scope = Scope(
                group_types=frozenset(_group_types(table, "group_types")),
                operator_accounts=frozenset(_strings(table, "operator_accounts")),
                opt_platforms=frozenset(p.casefold() for p in _strings(table, "opt_platforms")),
                when=when,
            )
            required = _REQUIRED_ONE_OF.get(kind, frozenset())
            if required and not required & table.keys():
                raise Problem(None, f"a {kind} rule must set one of {', '.join(sorted(required))}")
            check = build(_Context(table, rule_id, shadow, self.read_list))
        except Problem as problem:
            raise self.error(problem, section, rule_id) from None
        if when is not None:
            line = self.lines.line(section, "when")
            for name in sorted(when.unguarded):
                message = _unguarded_warning(name, outcome.effect)
                self.warnings.append(located(message, self.where, line, _subject(rule_id, "when")))
        return Rule(rule_id, kind, outcome, scope, check, shadow)

    def read_list(self, table: Mapping[str, object], inline: str, file_key: str) -> list[str]:
        entries = _strings(table, inline)
        name = _string(table, file_key)
        if not name:
            return entries
        if self.base_dir is None:
            raise Problem(file_key, "list files need a policy file to be relative to")
        path = self.base_dir / name
        try:
            content = path.read_bytes()
            lines = content.decode("utf-8-sig").splitlines()
        except OSError as error:
            raise Problem(file_key, f"cannot read {str(path)!r}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise Problem(file_key, f"{str(path)!r} is not UTF-8") from None
        self.sources.append(path)
        self.digest.update(b"\0" + name.encode() + b"\0" + content)
        return entries + [s for line in lines if (s := line.strip()) and not s.startswith("#")]


@dataclass(frozen=True)
class _Context:
    table: Mapping[str, object]
    rule_id: str
    shadow: bool
    read_list: Callable[[Mapping[str, object], str, str], list[str]]


def _match(context: _Context) -> Check:
    return Matched()


def _quota(context: _Context) -> Check:
    table = context.table
    by_type_table = _table(table.get("max_created_by_type", {}), "max_created_by_type")
    by_type: dict[str, int] = {}
    for group_type, limit in by_type_table.items():
        canonical = _known_type(group_type, "max_created_by_type")
        by_type[canonical] = _count(limit, "max_created_by_type", minimum=0)
    default_max = table.get("max_created")
    return QuotaCheck(
        max_by_type=by_type,
        default_max=None if default_max is None else _count(default_max, "max_created", 0),
        deny_when_unknown=_effect_switch(table, "when_unknown"),
    )


def _name(context: _Context) -> Check:
    table = context.table
    pattern = _string(table, "pattern")
    try:
        compiled = re.compile(pattern) if pattern else None
    except re.error as error:
        raise Problem("pattern", f"not a valid regular expression: {error}") from None
    words = context.read_list(table, "banned_words", "banned_words_file")
    minimum, maximum = _optional_count(table, "min_length"), _optional_count(table, "max_length")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise Problem("min_length", f"is above max_length ({minimum} > {maximum})")
    return NameCheck(minimum, maximum, compiled, BannedWords(words) if words else None)


def _members(context: _Context) -> Check:
    table = context.table
    reject_duplicates = table.get("reject_duplicates", False)
    if not isinstance(reject_duplicates, bool):
        raise Problem("reject_duplicates", "must be true or false")
    minimum, maximum = _optional_count(table, "min_members"), _optional_count(table, "max_members")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise Problem("min_members", f"is above max_members ({minimum} > {maximum})")
    blocked = context.read_list(table, "blocked_accounts", "blocked_accounts_file")
    return MembersCheck(minimum, maximum, reject_duplicates, frozenset(blocked))


def _owner(context: _Context) -> Check:
    return OwnerCheck(frozenset(context.read_list(context.table, "admins", "admins_file")))


def _blocked(context: _Context) -> Check:
    table = context.table
    check_owner = table.get("check_owner", False)
    if not isinstance(check_owner, bool):
        raise Problem("check_owner", "must be true or false")
    return BlockedCheck(
        frozenset(context.read_list(table, "accounts", "accounts_file")), check_owner
    )


def _platform_types(context: _Context) -> Check:
    table = context.table
    allowed: dict[str, frozenset[str]] = {}
    for platform, types in _table(table.get("allowed", {}), "allowed").items():
        allowed[platform.casefold()] = frozenset(_type_list(types, f"allowed.{platform}"))
    other = table.get("other")
    return PlatformTypesCheck(
        allowed, None if other is None else frozenset(_type_list(other, "other"))
    )


def _client_ip(context: _Context) -> Check:
    table = context.table
    ranges: dict[str, AddressRanges | None] = {}
    for key in ("allow_cidrs", "deny_cidrs"):
        cidrs = _strings(table, key)
        try:
            ranges[key] = AddressRanges(cidrs) if cidrs else None
        except ValueError as error:
            raise Problem(key, str(error)) from None
    return ClientIpCheck(
        ranges["allow_cidrs"], ranges["deny_cidrs"], _effect_switch(table, "when_missing")
    )


def _rate_limit(context: _Context) -> Check:
    table = context.table
    if "limit" not in table or "window" not in table:
        raise Problem("limit" if "limit" not in table else "window", "is required")
    per = table.get("per", "operator")
    if per not in ("operator", "owner"):
        raise Problem("per", f"must be 'operator' or 'owner', got {per!r}")
    return RateLimitCheck(
        rule_id=context.rule_id,
        limit=_count(table["limit"], "limit", minimum=1),
        window_ms=_window_s(table["window"]) * 1000,
        per_owner=per == "owner",
        deny_on_store_error=_effect_switch(table, "on_store_error"),
        shadow=context.shadow,
    )


_KINDS: dict[str, tuple[frozenset[str], Callable[[_Context], Check]]] = {
    "match": (frozenset(), _match),
    "quota": (frozenset({"max_created", "max_created_by_type", "when_unknown"}), _quota),
    "name": (
        frozenset({"min_length", "max_length", "pattern", "banned_words", "banned_words_file"}),
        _name,
    ),
    "members": (
        frozenset(
            {
                "min_members",
                "max_members",
                "reject_duplicates",
                "blocked_accounts",
                "blocked_accounts_file",
            }
        ),
        _members,
    ),
    "owner": (frozenset({"admins", "admins_file"}), _owner),
    "blocked": (frozenset({"accounts", "accounts_file", "check_owner"}), _blocked),
    "platform_types": (frozenset({"allowed", "other"}), _platform_types),
    "client_ip": (frozenset({"allow_cidrs", "deny_cidrs", "when_missing"}), _client_ip),
    "rate_limit": (frozenset({"limit", "window", "per", "on_store_error"}), _rate_limit),
}


# The keys without which a rule of the kind could never refuse anything.
_REQUIRED_ONE_OF = {
    "quota": frozenset({"max_created", "max_created_by_type"}),
    "name": frozenset({"min_length", "max_length", "pattern", "banned_words", "banned_words_file"}),
    "members": frozenset(
        {
            "min_members",
            "max_members",
            "reject_duplicates",
            "blocked_accounts",
            "blocked_accounts_file",
        }
    ),
    "blocked": frozenset({"accounts", "accounts_file"}),
    "platform_types": frozenset({"allowed", "other"}),
    "client_ip": frozenset({"allow_cidrs", "deny_cidrs", "when_missing"}),
    "rate_limit": frozenset({"limit", "window"}),
}


def _outcome(table: Mapping[str, object], default_effect: Effect) -> Outcome:
    effect_name = table.get("effect", default_effect.value)
    try:
        effect = Effect(effect_name)
    except ValueError:
        raise Problem("effect", f"must be 'allow' or 'deny', got {effect_name!r}") from None
    info = table.get("error_info", "")
    if not isinstance(info, str):
        raise Problem("error_info", "must be a string")
    if effect is Effect.ALLOW:
        if "error_code" in table or info:
            field = "error_code" if "error_code" in table else "error_info"
            raise Problem(field, "only applies to effect 'deny'")
        return Outcome(Effect.ALLOW)
    code = table.get("error_code", REFUSAL_CODE)
    if type(code) is not int or (code != REFUSAL_CODE and code not in CUSTOM_REFUSAL_CODES):
        raise Problem("error_code", f"must be 1 or in [10100, 10200], got {code!r}")
    return Outcome(Effect.DENY, code, info)


def _condition(table: Mapping[str, object]) -> CelCondition | None:
    expression = _string(table, "when")
    if not expression:
        return None
    try:
        return CelCondition(expression)
    except ValueError as error:
        raise Problem("when", str(error)) from None


def _unguarded_warning(name: str, effect: Effect) -> str:
    """The warning for a `when` that reads the nullable variable `name` unguarded."""
    refuses = " (so this deny rule refuses nothing)" if effect is Effect.DENY else ""
    return (
        f"warning: {name} is read without a null check; it is null when Chat omits"
        f" {NULLABLE_VARIABLES[name]}, and then this expression fails and the rule is"
        f" skipped{refuses}. Guard the read: `{name} != null && ...`"
    )


def _effect_switch(table: Mapping[str, object], key: str) -> bool:
    """An "allow"/"deny" setting (default allow); True means deny."""
    value = table.get(key, "allow")
    if value not in ("allow", "deny"):
        raise Problem(key, f"must be 'allow' or 'deny', got {value!r}")
    return value == "deny"


def _window_s(value: object) -> int:
    seconds = value if type(value) is int else None
    if isinstance(value, str) and (match := _WINDOW.fullmatch(value)):
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None or not 1 <= seconds <= MAX_WINDOW_S:
        raise Problem(
            "window",
            f"must be seconds or like '90s', '10m', '1h', '1d', at most 31d; got {value!r}",
        )
    return seconds


def _count(value: object, field: str, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise Problem(field, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _optional_count(table: Mapping[str, object], field: str) -> int | None:
    value = table.get(field)
    return None if value is None else _count(value, field, minimum=0)


def _group_types(table: Mapping[str, object], field: str) -> list[str]:
    return [_known_type(t, field) for t in _strings(table, field)]


def _type_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Problem(field, "must be a list of group types")
    return [_known_type(t, field) for t in value]


def _known_type(group_type: str, field: str) -> str:
    canonical = canonical_group_type(group_type)
    if canonical not in GROUP_TYPES:
        known = ", ".join(sorted(GROUP_TYPES | set(GROUP_TYPE_ALIASES)))
        raise Problem(field, f"unknown group type {group_type!r} (known: {known})")
    return canonical


def _table(raw: object, field: str) -> Mapping[str, object]:
    if not isinstance(raw, dict):
        raise Problem(field, "must be a table")
    return raw


def _string(table: Mapping[str, object], field: str) -> str:
    value = table.get(field, "")
    if not isinstance(value, str):
        raise Problem(field, "must be a string")
    return value


def _strings(table: Mapping[str, object], field: str) -> list[str]:
    values = table.get(field, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise Problem(field, "must be a list of non-empty strings")
    return values
