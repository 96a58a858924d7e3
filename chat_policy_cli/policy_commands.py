"""`chat-policy policy check` and `chat-policy policy test`: a policy file, without a server
(and `policy show`, which asks the running service: chat_policy_cli.policy_show_command).

`policy check FILE` loads a policy and prints `FILE: ok, N rules, revision sha256:...` (exit 0)
or the error, which names the file, line, rule and field (exit 1). Warnings, in the same form,
go to stderr and leave the exit status 0: a `when` that reads a variable that can be null
(create_group_num) without a null check, so that the rule is skipped for such a request.

`policy test CASES [--policy FILE] [--json]` runs a TOML file of test cases against a policy:
exit 0 when every case passes, 1 when one fails, 2 when the cases file or the policy cannot be
used (the message names the file, line, case and key). The cases file:

    policy = "policy.toml"      # optional, relative to the cases file; --policy FILE (relative
                                # to the working directory) overrides it; one of them is required

    [[cases]]                   # one or more, run in file order
    name = "admins may create public groups from the web"   # required
    now = "2026-01-01T12:00:00Z"  # optional: the evaluation clock, an RFC 3339 time with an
                                  # offset or Unix milliseconds; default 2026-01-01T00:00:00Z,
                                  # so that a cases file gives the same results every day
    repeat = 3                  # optional, default 1: send the request this many times (at the
                                # same `now`); every response must meet `expect`

    [cases.request]             # optional, as is every key (absent = Chat omitted it)
    sdk_app_id = 1400000000     # default 1400000000
    operator = "administrator"  # Operator_Account
    owner = ""                  # Owner_Account
    group_type = "Public"       # Type
    name = "x"                  # Name
    create_group_num = 3        # CreateGroupNum
    members = ["bob"]           # the MemberList's accounts
    platform = "Web"            # OptPlatform
    client_ip = "192.0.2.1"     # ClientIP
    event_time = "2026-01-01T12:00:00Z"   # EventTime: RFC 3339 or Unix milliseconds

    [cases.expect]              # `decision` is required; the other keys are checked when present
    decision = "allow"          # or "deny"
    error_code = 0              # the refusal's error_code (0 for an allowed request)
    rule = "admins-may-create-anything"   # the deciding rule's id ("default": no rule decided)
    shadow = ["night-time-communities"]   # exactly these shadow rules would have decided
    reason_contains = "banned word"       # a substring of the deciding rule's reason

A key not listed above is an error, anywhere. Times in TOML's own date-time syntax (unquoted,
with an offset) are accepted too. Cases share one in-memory rate-limit counter, so a sequence of
cases tests a rate limit: a case's allowed requests count against the cases after it.

The output has a line per case, `ok   INDEX NAME` or `FAIL INDEX NAME` (cases count from 1);
under it, passed or not, a line for each rule that could not be evaluated and was skipped (a
CEL error: `create_group_num > 3` when the case has no create_group_num); under a failure, the
expectation, what the policy decided (for a repeated case: at the first
request that failed) and the rules it evaluated; last, `N passed, M failed`. With --json it is
one JSON document: {"passed": N, "failed": M, "cases": [{"index", "name", "passed", "request",
"repeat", "expected", "got": {"decision", "error_code", "rule", "reason", "shadow",
"evaluations": [{"rule", "result", "reason"}]}}]}, where `request` is the number of the request
`got` describes (the first that failed, else the last).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chat_policy_cli.policy_show_command import add_show_arguments, run_show
from chat_policy_cli.times import parse_time_ms
from policy_service.engine.policy import CreationRequest, Decision, Effect, Policy
from policy_service.engine.policy_file import PolicyError, load_policy
from policy_service.engine.rate_limit import InMemoryRateCounter
from policy_service.engine.toml_tables import (
    KeyLines,
    LocatedError,
    Problem,
    only_keys,
    parse_toml,
    read_file,
)

DEFAULT_SDK_APP_ID = 1400000000
DEFAULT_NOW = "2026-01-01T00:00:00Z"
EXIT_PASSED, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2
INDENT = "     "

_TOP_KEYS = frozenset({"policy", "cases"})
_CASE_KEYS = frozenset({"name", "now", "repeat", "request", "expect"})
_REQUEST_KEYS = frozenset(
    {
        "sdk_app_id",
        "operator",
        "owner",
        "group_type",
        "name",
        "create_group_num",
        "members",
        "platform",
        "client_ip",
        "event_time",
    }
)
_EXPECT_KEYS = frozenset({"decision", "error_code", "rule", "shadow", "reason_contains"})


def add_policy_arguments(policy: argparse.ArgumentParser) -> None:
    """The subcommands of `chat-policy policy`: check, test and show."""
    subcommands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = subcommands.add_parser(
        "check", help="load a policy file and say whether it is valid (exit 1 if not)"
    )
    check.add_argument("file", metavar="FILE", help="the policy file")
    test = subcommands.add_parser(
        "test",
        help="run a TOML file of test cases against a policy"
        " (exit 1 if a case fails, 2 if the cases or the policy are invalid)",
    )
    test.add_argument("cases", metavar="CASES", help="the cases file")
    test.add_argument(
        "--policy", metavar="FILE", help="the policy to test; overrides the cases file's `policy`"
    )
    test.add_argument("--json", action="store_true", help="print one JSON document")
    add_show_arguments(
        subcommands.add_parser(
            "show", help="show the policy the running service decides with, and its rule counts"
        )
    )


def run_policy(args: argparse.Namespace) -> int:
    """Run `policy check`, `policy test` or `policy show`; the exit status is the command's."""
    if args.policy_command == "check":
        return check_policy_file(args.file)
    if args.policy_command == "show":
        return run_show(args)
    return run_policy_tests(args.cases, policy=args.policy, as_json=args.json)


# --- policy check ------------------------------------------------------------------------


def check_policy_file(file: str) -> int:
    """Load the policy FILE; print one line saying it is valid (0) or the error (1). Its
    warnings go to stderr and leave the status as it is: the service runs such a policy."""
    try:
        policy = load_policy(Path(file))
    except PolicyError as error:
        print(error, file=sys.stderr)
        return 1
    for warning in policy.warnings:
        print(warning, file=sys.stderr)
    count = len(policy.rules)
    print(f"{file}: ok, {count} rule{'' if count == 1 else 's'}, revision {policy.revision}")
    return 0


# --- policy test: the cases file ---------------------------------------------------------


class CasesError(LocatedError):
    """The cases file cannot be used; str() reads `FILE:LINE: case N 'NAME' key 'KEY': problem`."""

    def __init__(
        self,
        message: str,
        *,
        where: str,
        line: int | None = None,
        case: int | None = None,
        name: str | None = None,
        key: str | None = None,
    ) -> None:
        self.case, self.name, self.key = case, name, key
        super().__init__(message, where=where, line=line, subject=_subject(case, name, key))


def _subject(case: int | None, name: str | None, key: str | None) -> str:
    """`case N 'NAME' key 'KEY'`, each part only when known."""
    parts = []
    if case is not None:
        parts.append(f"case {case}" + (f" {name!r}" if name else ""))
    if key:
        parts.append(f"key {key!r}")
    return " ".join(parts)


@dataclass(frozen=True)
class Expectation:
    """What a case expects of each decision; None means "not checked"."""

    decision: Effect
    error_code: int | None = None
    rule: str | None = None
    shadow: tuple[str, ...] | None = None
    reason_contains: str | None = None

    def met_by(self, decision: Decision) -> bool:
        """True when the decision meets every expectation that is set."""
        return (
            decision.outcome.effect is self.decision
            and self.error_code in (None, decision.outcome.error_code)
            and self.rule in (None, decision.rule_id)
            and (self.shadow is None or sorted(self.shadow) == sorted(_shadow_ids(decision)))
            and (self.reason_contains is None or self.reason_contains in decision.reason)
        )

    def as_dict(self) -> dict[str, object]:
        """The keys that are set, as the cases file names them."""
        values: dict[str, object] = {"decision": self.decision.value}
        if self.rule is not None:
            values["rule"] = self.rule
        if self.error_code is not None:
            values["error_code"] = self.error_code
        if self.shadow is not None:
            values["shadow"] = list(self.shadow)
        if self.reason_contains is not None:
            values["reason_contains"] = self.reason_contains
        return values


@dataclass(frozen=True)
class Case:
    """One test case: a request sent `repeat` times at `now_ms`, and what it expects."""

    index: int
    name: str
    request: CreationRequest
    now_ms: int
    repeat: int
    expect: Expectation


@dataclass(frozen=True)
class CasesFile:
    """A loaded cases file: its cases in order, and the policy it names (None: not named)."""

    cases: tuple[Case, ...]
    policy: Path | None


@dataclass(frozen=True)
class _Table:
    """A TOML table of the cases file and the prefix its keys are named with in errors."""

    values: Mapping[str, object]
    prefix: str = ""

    def key(self, name: str) -> str:
        """The key as errors name it ("request.name")."""
        return self.prefix + name

    def only(self, allowed: frozenset[str]) -> None:
        """Fail on the first key not in allowed."""
        only_keys(self.values, allowed, self.prefix)

    def table(self, name: str, *, required: bool = False) -> _Table:
        """The sub-table under name (empty when absent and not required)."""
        if name not in self.values:
            if required:
                raise Problem(self.key(name), "is required")
            return _Table({}, self.key(name) + ".")
        value = self.values[name]
        if not isinstance(value, dict):
            raise Problem(self.key(name), "must be a table")
        return _Table(value, self.key(name) + ".")

    def string(self, name: str) -> str | None:
        """A string value; None when absent."""
        value = self.values.get(name)
        if value is not None and not isinstance(value, str):
            raise Problem(self.key(name), "must be a string")
        return value

    def required_string(self, name: str) -> str:
        """A non-empty string value that must be present."""
        value = self.string(name)
        if value is None:
            raise Problem(self.key(name), "is required")
        if not value:
            raise Problem(self.key(name), "must not be empty")
        return value

    def integer(self, name: str, minimum: int) -> int | None:
        """An integer of at least minimum; None when absent."""
        value = self.values.get(name)
        if value is None:
            return None
        if type(value) is not int or value < minimum:
            raise Problem(self.key(name), f"must be an integer >= {minimum}, got {value!r}")
        return value

    def strings(self, name: str) -> tuple[str, ...] | None:
        """A list of strings; None when absent."""
        value = self.values.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Problem(self.key(name), "must be a list of strings")
        return tuple(value)

    def time_ms(self, name: str) -> int | None:
        """A time as Unix milliseconds; None when absent."""
        value = self.values.get(name)
        if value is None:
            return None
        try:
            return parse_time_ms(value)
        except ValueError as error:
            raise Problem(self.key(name), str(error)) from None


DEFAULT_NOW_MS = parse_time_ms(DEFAULT_NOW)


def load_cases(path: Path) -> CasesFile:
    """Read and validate a cases file; CasesError names the file, line, case and key."""
    where = str(path)
    text, document = parse_toml(read_file(path, CasesError), where, CasesError)
    lines = KeyLines(text, "cases")
    top = _Table(document)
    try:
        top.only(_TOP_KEYS)
        policy = top.string("policy")
        if policy == "":
            raise Problem("policy", "must name the policy file")
        raw_cases = document.get("cases")
        if not isinstance(raw_cases, list) or not raw_cases:
            raise Problem("cases", "must be one or more [[cases]] tables")
    except Problem as problem:
        raise CasesError(
            problem.message, where=where, line=lines.line("", problem.key), key=problem.key
        ) from None
    cases = tuple(_case(raw, index, where, lines) for index, raw in enumerate(raw_cases, start=1))
    return CasesFile(cases, None if policy is None else path.parent / policy)


def _case(raw: object, index: int, where: str, lines: KeyLines) -> Case:
    """Validate the index-th (from 1) [[cases]] table."""
    section = f"cases.{index - 1}"  # KeyLines counts [[cases]] from 0
    name: str | None = None
    try:
        if not isinstance(raw, dict):
            raise Problem(None, "must be a table ([[cases]])")
        table = _Table(raw)
        table.only(_CASE_KEYS)
        name = table.required_string("name")
        now_ms = table.time_ms("now")
        repeat = table.integer("repeat", minimum=1)
        request = _request(table.table("request"))
        expect = _expectation(table.table("expect", required=True))
    except Problem as problem:
        raise CasesError(
            problem.message,
            where=where,
            line=lines.line(section, problem.key),
            case=index,
            name=name,
            key=problem.key,
        ) from None
    return Case(
        index,
        name,
        request,
        DEFAULT_NOW_MS if now_ms is None else now_ms,
        1 if repeat is None else repeat,
        expect,
    )


def _request(table: _Table) -> CreationRequest:
    """The [cases.request] table as the request Chat would have sent."""
    table.only(_REQUEST_KEYS)
    sdk_app_id = table.integer("sdk_app_id", minimum=0)
    return CreationRequest(
        sdk_app_id=DEFAULT_SDK_APP_ID if sdk_app_id is None else sdk_app_id,
        operator_account=table.string("operator") or "",
        owner_account=table.string("owner") or "",
        group_type=table.string("group_type") or "",
        name=table.string("name") or "",
        create_group_num=table.integer("create_group_num", minimum=0),
        member_accounts=table.strings("members") or (),
        event_time_ms=table.time_ms("event_time"),
        client_ip=table.string("client_ip") or "",
        opt_platform=table.string("platform") or "",
    )


def _expectation(table: _Table) -> Expectation:
    """The [cases.expect] table."""
    table.only(_EXPECT_KEYS)
    decision = table.values.get("decision")
    if decision is None:
        raise Problem(table.key("decision"), "is required")
    if decision not in ("allow", "deny"):
        raise Problem(table.key("decision"), f"must be 'allow' or 'deny', got {decision!r}")
    effect = Effect(decision)
    error_code = table.integer("error_code", minimum=0)
    if effect is Effect.ALLOW and error_code not in (None, 0):
        raise Problem(table.key("error_code"), "an allowed request has error_code 0")
    rule = table.string("rule")
    if rule == "":
        raise Problem(table.key("rule"), "must be a rule id or 'default'")
    return Expectation(
        effect, error_code, rule, table.strings("shadow"), table.string("reason_contains")
    )


# --- policy test: running ------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    """How one case went: the decision of its first failing request, else of its last."""

    case: Case
    passed: bool
    decision: Decision
    request_number: int


async def run_case(policy: Policy, case: Case, counter: InMemoryRateCounter) -> CaseResult:
    """Send the case's request `repeat` times, all of them, and check every decision."""
    failure: CaseResult | None = None
    decision: Decision | None = None
    for number in range(1, case.repeat + 1):
        decision = await policy.decide(
            case.request, counter=counter, now_ms=case.now_ms, explain=True
        )
        if failure is None and not case.expect.met_by(decision):
            failure = CaseResult(case, False, decision, number)
    assert decision is not None  # repeat >= 1
    return failure or CaseResult(case, True, decision, case.repeat)


def run_cases(policy: Policy, cases: Sequence[Case]) -> list[CaseResult]:
    """Run the cases in order with one rate-limit counter for all of them (on an event loop
    of their own: Policy.decide is a coroutine)."""

    async def run_all() -> list[CaseResult]:
        counter = InMemoryRateCounter()
        return [await run_case(policy, case, counter) for case in cases]

    return asyncio.run(run_all())


def text_report(results: Sequence[CaseResult]) -> list[str]:
    """The lines of the human (and CI) report."""
    lines: list[str] = []
    for result in results:
        status = "ok  " if result.passed else "FAIL"
        lines.append(f"{status} {result.case.index} {result.case.name}")
        lines.extend(
            f"{INDENT}error: rule {e.rule_id!r} could not be evaluated and was skipped: {e.reason}"
            for e in result.decision.errors
        )
        if not result.passed:
            lines.extend(INDENT + line for line in _failure_lines(result))
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return lines


def _failure_lines(result: CaseResult) -> list[str]:
    """Expected, got, and the rules the failing decision evaluated."""
    expect, decision = result.case.expect, result.decision
    expected = [f"decision={expect.decision.value}"]
    if expect.rule is not None:
        expected.append(f"rule={expect.rule}")
    if expect.error_code is not None:
        expected.append(f"error_code={expect.error_code}")
    if expect.shadow is not None:
        expected.append(f"shadow=[{','.join(expect.shadow)}]")
    if expect.reason_contains is not None:
        expected.append(f"reason_contains={expect.reason_contains!r}")
    got = [
        f"decision={decision.outcome.effect.value}",
        f"rule={decision.rule_id}",
        f"error_code={decision.outcome.error_code}",
    ]
    if expect.shadow is not None or decision.shadow_hits:
        got.append(f"shadow=[{','.join(_shadow_ids(decision))}]")
    got.append(f"reason={decision.reason!r}")
    lines = ["expected " + " ".join(expected), "got      " + " ".join(got)]
    if result.case.repeat > 1:
        lines.append(f"at request {result.request_number} of {result.case.repeat}")
    lines.append("rules evaluated:")
    for evaluation in decision.evaluations:
        reason = f" ({evaluation.reason})" if evaluation.reason else ""
        lines.append(f"  {evaluation.rule_id}: {evaluation.result.value}{reason}")
    return lines


def json_report(results: Sequence[CaseResult]) -> str:
    """The --json report: one JSON document."""
    failed = sum(not r.passed for r in results)
    document = {
        "passed": len(results) - failed,
        "failed": failed,
        "cases": [_json_case(result) for result in results],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def _json_case(result: CaseResult) -> dict[str, object]:
    """One case of the --json report."""
    decision = result.decision
    return {
        "index": result.case.index,
        "name": result.case.name,
        "passed": result.passed,
        "request": result.request_number,
        "repeat": result.case.repeat,
        "expected": result.case.expect.as_dict(),
        "got": {
            "decision": decision.outcome.effect.value,
            "error_code": decision.outcome.error_code,
            "rule": decision.rule_id,
            "reason": decision.reason,
            "shadow": _shadow_ids(decision),
            "evaluations": [
                {"rule": e.rule_id, "result": e.result.value, "reason": e.reason}
                for e in decision.evaluations
            ],
        },
    }


def _shadow_ids(decision: Decision) -> list[str]:
    """The ids of the shadow rules that would have decided, in rule order."""
    return [hit.rule_id for hit in decision.shadow_hits]


def run_policy_tests(cases: str, policy: str | None = None, as_json: bool = False) -> int:
    """Run the cases file against the policy (--policy, else the file's `policy`); exit 0 when
    every case passes, 1 when one fails, 2 when the cases or the policy cannot be used."""
    try:
        loaded = load_cases(Path(cases))
        policy_path = Path(policy) if policy is not None else loaded.policy
        if policy_path is None:
            raise CasesError(
                'no policy to test: set `policy = "FILE"` in it or pass --policy FILE',
                where=cases,
            )
        tested = load_policy(policy_path)
    except (CasesError, PolicyError) as error:
        print(error, file=sys.stderr)
        return EXIT_UNUSABLE
    results = run_cases(tested, loaded.cases)
    print(json_report(results) if as_json else "\n".join(text_report(results)))
    return EXIT_PASSED if all(r.passed for r in results) else EXIT_FAILED
