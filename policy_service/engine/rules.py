"""The checks of the first-class rule kinds: what each verifies once its rule applies.

Each check returns None when the request passes, or the reason it fails, which the rule turns
into its outcome (docs/policies.md documents every kind and its keys).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from policy_service.engine.address_ranges import AddressRanges, parse_address
from policy_service.engine.banned_words import BannedWords, fold
from policy_service.engine.policy import ConditionError, Evaluation
from policy_service.engine.rate_limit import Acquisition
from policy_service.errors import StoreUnavailable


@dataclass(frozen=True)
class QuotaCheck:
    """At most a number of groups of a type per creator, from Chat's CreateGroupNum (how many
    groups of this type the creator already has). max_by_type overrides default_max."""

    max_by_type: Mapping[str, int]
    default_max: int | None
    deny_when_unknown: bool

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Fails when the creator already has the quota's number of groups of the type."""
        request = evaluation.request
        group_type = evaluation.group_type
        limit = self.max_by_type.get(group_type, self.default_max)
        if limit is None:
            return None
        created = request.create_group_num
        if created is None:
            return "CreateGroupNum omitted" if self.deny_when_unknown else None
        if created >= limit:
            return f"already created {created} {group_type or 'untyped'} groups (quota {limit})"
        return None


@dataclass(frozen=True)
class NameCheck:
    """The group name: length in characters (code points after NFC), a pattern the whole name
    must match, and banned words or phrases."""

    min_length: int | None
    max_length: int | None
    pattern: re.Pattern[str] | None
    banned: BannedWords | None

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Fails on the first of length, pattern, banned word that the name breaks."""
        name = evaluation.request.name
        length = len(name) if name.isascii() else len(unicodedata.normalize("NFC", name))
        if self.min_length is not None and length < self.min_length:
            return f"name has {length} characters, fewer than {self.min_length}"
        if self.max_length is not None and length > self.max_length:
            return f"name has {length} characters, more than {self.max_length}"
        if self.pattern is not None and self.pattern.fullmatch(name) is None:
            return f"name does not match {self.pattern.pattern!r}"
        if self.banned is not None:
            folded = evaluation.folded_name
            if folded is None:
                folded = evaluation.folded_name = fold(name)
            word = self.banned.first_in(folded)
            if word is not None:
                return f"name contains banned word {word!r}"
        return None


@dataclass(frozen=True)
class MembersCheck:
    """The initial member list: its size, duplicates, and accounts that may not be in it."""

    min_members: int | None
    max_members: int | None
    reject_duplicates: bool
    blocked_accounts: frozenset[str]

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Fails on the first of size, duplicate, blocked member that the list breaks."""
        members = evaluation.request.member_accounts
        if self.min_members is not None and len(members) < self.min_members:
            return f"{len(members)} initial members, fewer than {self.min_members}"
        if self.max_members is not None and len(members) > self.max_members:
            return f"{len(members)} initial members, more than {self.max_members}"
        if self.reject_duplicates and len(set(members)) != len(members):
            seen: set[str] = set()
            for member in members:
                if member in seen:
                    return f"member {member!r} is listed twice"
                seen.add(member)
        if self.blocked_accounts:
            for member in members:
                if member in self.blocked_accounts:
                    return f"member {member!r} is blocked"
        return None


@dataclass(frozen=True)
class OwnerCheck:
    """The operator must be the owner (or name no other owner) unless listed as an admin."""

    admins: frozenset[str]

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Fails when the operator creates a group for someone else and is not an admin."""
        request = evaluation.request
        owner, operator = request.owner_account, request.operator_account
        if owner and owner != operator and operator not in self.admins:
            return f"operator {operator!r} is not the owner {owner!r} nor an admin"
        return None


@dataclass(frozen=True)
class BlockedCheck:
    """Blocked accounts, as operator and (when check_owner) as owner."""

    accounts: frozenset[str]
    check_owner: bool

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Fails when the operator, or the owner when checked, is blocked."""
        request = evaluation.request
        if request.operator_account in self.accounts:
            return f"operator {request.operator_account!r} is blocked"
        if self.check_owner and request.owner_account in self.accounts:
            return f"owner {request.owner_account!r} is blocked"
        return None


@dataclass(frozen=True)
class PlatformTypesCheck:
    """Which group types may be created from which platform (OptPlatform, case-insensitive);
    `other` applies to platforms not listed (None: they are not restricted)."""

    allowed: Mapping[str, frozenset[str]]
    other: frozenset[str] | None

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Fails when the platform's list does not have the group type."""
        request = evaluation.request
        allowed = self.allowed.get(evaluation.platform, self.other)
        group_type = evaluation.group_type
        if allowed is not None and group_type not in allowed:
            platform = request.opt_platform or "unknown platform"
            return f"{group_type or 'untyped'} groups may not be created from {platform}"
        return None


@dataclass(frozen=True)
class ClientIpCheck:
    """The creator's ClientIP must be in `allow` (when set) and not in `deny`; a missing or
    unparsable address fails only when deny_when_missing."""

    allow: AddressRanges | None
    deny: AddressRanges | None
    deny_when_missing: bool

    awaits = False

    def violation(self, evaluation: Evaluation) -> str | None:
        """Fails when the address is outside the allowed networks or inside a denied one."""
        text = evaluation.request.client_ip
        address = evaluation.address
        if address is False:
            address = evaluation.address = parse_address(text) if text else None
        if address is None or isinstance(address, bool):
            return f"ClientIP {text!r} missing or invalid" if self.deny_when_missing else None
        if self.deny is not None and address in self.deny:
            return f"ClientIP {text.strip()} is in a denied network"
        if self.allow is not None and address not in self.allow:
            return f"ClientIP {text.strip()} is not in an allowed network"
        return None


@dataclass(frozen=True)
class RateLimitCheck:
    """At most `limit` allowed creations per operator (or owner) in a sliding window, counted
    in the store so that replicas share the count. A refused request does not count.

    A shadow rule counts every creation it sees (it takes a slot even over the limit), since
    those creations do happen. A dry run takes no slot: it counts the window, and fails when
    the window already holds `limit`, as acquire would.
    """

    rule_id: str
    limit: int
    window_ms: int
    per_owner: bool
    deny_on_store_error: bool
    shadow: bool

    awaits = True

    async def violation(self, evaluation: Evaluation) -> str | None:
        """Takes a slot (a dry run: none), or fails when the window already holds `limit`."""
        request = evaluation.request
        subject = (request.owner_account if self.per_owner else "") or request.operator_account
        if not subject:
            return None
        counter = evaluation.counter
        if counter is None:
            raise ConditionError("no rate-limit counter to count with")
        bucket = f"{self.rule_id}:{request.sdk_app_id}:{subject}"
        try:
            if evaluation.dry_run:
                count = await counter.count_slots(
                    bucket, window_ms=self.window_ms, now_ms=evaluation.now_ms
                )
                taken = Acquisition(count, count < self.limit, None)
            else:
                taken = await counter.acquire(
                    bucket,
                    window_ms=self.window_ms,
                    limit=self.limit,
                    now_ms=evaluation.now_ms,
                    force=self.shadow,
                )
        except StoreUnavailable as error:
            if self.deny_on_store_error:
                return f"rate-limit store unavailable: {error}"
            raise ConditionError(f"rate-limit store unavailable: {error}") from None
        if taken.slot is not None:
            evaluation.slots.append(taken.slot)
        if not taken.within_limit:
            who = "owner" if self.per_owner and request.owner_account else "operator"
            return f"{who} {subject!r} reached {self.limit} creations in {self.window_ms // 1000}s"
        return None
