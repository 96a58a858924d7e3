"""Rule conditions written in CEL, compiled once when the policy loads.

An expression sees the request as these variables (docs/policies.md documents them):
sdk_app_id, operator, owner, group_type (the current name: "Work", not "Private"), name,
create_group_num (null when Chat omitted it), members, platform, client_ip and time (the
request's EventTime, else the service's clock; a UTC timestamp).

Building CEL values costs about a microsecond per variable (more for the member list), so a
request converts a variable only when an expression that reads it is first evaluated.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable

import cel

from policy_service.engine.cel_guards import unguarded_reads
from policy_service.engine.group_types import canonical_group_type
from policy_service.engine.policy import ConditionError, CreationRequest, Evaluation

_VALUES: dict[str, Callable[[CreationRequest, int], object]] = {
    "sdk_app_id": lambda r, now: r.sdk_app_id,
    "operator": lambda r, now: r.operator_account,
    "owner": lambda r, now: r.owner_account,
    "group_type": lambda r, now: canonical_group_type(r.group_type),
    "name": lambda r, now: r.name,
    "create_group_num": lambda r, now: r.create_group_num,
    "members": lambda r, now: list(r.member_accounts),
    "platform": lambda r, now: r.opt_platform,
    "client_ip": lambda r, now: r.client_ip,
    "time": lambda r, now: datetime.datetime.fromtimestamp(
        (r.event_time_ms if r.event_time_ms is not None else now) / 1000, datetime.UTC
    ),
}
VARIABLES = frozenset(_VALUES)
# The variables that are null for some requests, each with the field of Chat's that is then
# absent: CreateGroupNum (Chat's newest version omits it). Every other variable always has a
# value: "" for an absent string, [] for no members, the service's clock for no EventTime.
NULLABLE_VARIABLES = {"create_group_num": "CreateGroupNum"}

# A sample request every expression is tried on at load: an undefined variable or a result
# that is not a bool is a load error rather than a surprise in production.
_SAMPLE = {
    "sdk_app_id": 1400000000,
    "operator": "alice",
    "owner": "alice",
    "group_type": "Public",
    "name": "sample",
    "create_group_num": 1,
    "members": ["bob"],
    "platform": "Web",
    "client_ip": "192.0.2.1",
    "time": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
}

# CEL string literals, raw ones (no escapes) first.
_STRING_LITERAL = re.compile(
    r'(?s)[rR]""".*?"""'
    r"|[rR]'''.*?'''"
    r'|[rR]"[^"\n]*"'
    r"|[rR]'[^'\n]*'"
    r'|""".*?"""'
    r"|'''.*?'''"
    r'|"(?:\\.|[^"\\\n])*"'
    r"|'(?:\\.|[^'\\\n])*'"
    r'|[rR]"[^"\n]*"'
    r"|[rR]'[^'\n]*'"
    r'|""".*?"""'
    r"|'\''.*?'\''"
    r'|"(?:\\.|[^"\\\n])*"'
    r"|'(?:\\.|[^'\\\n])*'"
)
_IDENTIFIER = re.compile(r"(?<![.\w])([A-Za-z_]\w*)")


class CelCondition:
    """One compiled CEL expression that must evaluate to a bool."""

    def __init__(self, expression: str) -> None:
        """Compile and try the expression on a sample request; ValueError says what is wrong."""
        self.expression = expression
        try:
            self._program = cel.compile(expression)
        except ValueError as error:
            raise ValueError(f"not valid CEL: {_first_line(error)}") from None
        self.variables = variables_in(expression)
        # The nullable variables it reads without a null check: for a request where one is
        # null the expression fails and its rule is skipped (policy check warns).
        self.unguarded = unguarded_reads(expression, self.variables & NULLABLE_VARIABLES.keys())
        try:
            result = self._program.execute(cel.Context(_SAMPLE))
        except Exception as error:
            if isinstance(error, RuntimeError) and "Undefined variable" in str(error):
                raise ValueError(
                    f"{_first_line(error)} (variables: {', '.join(sorted(VARIABLES))})"
                ) from None
            return  # Depends on the request's values: reported per request at run time.
        if not isinstance(result, bool):
            raise ValueError(f"must evaluate to a bool, got {type(result).__name__}")

    def holds(self, evaluation: Evaluation) -> bool:
        """Evaluate for one request; ConditionError when CEL fails or gives a non-bool."""
        try:
            context = evaluation.cel_context
            if context is None:
                context = evaluation.cel_context = cel.Context()
            missing = self.variables - evaluation.cel_variables
            if missing:
                request, now = evaluation.request, evaluation.now_ms
                for name in missing:
                    context.add_variable(name, _VALUES[name](request, now))
                evaluation.cel_variables |= missing
            result = self._program.execute(context)
        except Exception as error:  # The interpreter's errors have no common base class.
            raise ConditionError(f"CEL error: {_first_line(error)}") from None
        if not isinstance(result, bool):
            raise ConditionError(f"CEL result is {type(result).__name__}, not bool")
        return result


def variables_in(expression: str) -> frozenset[str]:
    """The request variables an expression may read: identifiers outside string literals
    that name one; a field or a macro's own variable of the same name is harmless."""
    code = _STRING_LITERAL.sub('""', expression)
    return frozenset(name for name in _IDENTIFIER.findall(code) if name in VARIABLES)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
