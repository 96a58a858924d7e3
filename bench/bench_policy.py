"""Benchmark of policy decisions in process, run by `scripts/bench-policy` (see --help).

Policy.decide is timed one decision at a time (time.perf_counter_ns around the call, the way
the service calls it: a rate counter and the clock passed in) for these policies:

- baseline: the shipped default policy (no rules, allow), the denominator of every ratio;
- example: examples/policy.toml, its rate limit counting in an InMemoryRateCounter;
- example explain: the same with explain=True (every evaluated rule reported);
- large: a generated policy of --rules rules, one name rule of which bans --words words.

Requests come from a seeded pool of varied requests, cycled; each row keeps its own place in
the pool, its own simulated clock (CLOCK_STEP_MS per decision) and its own rate counter, pruned
every PRUNE_EVERY decisions outside the timing as the service's retention pass would. Each
round times --decisions decisions per row, the rows taking turns (the order rotates between
rounds); each cell is the median of the rounds with min..max, ratios are taken within a
round. The garbage collector stays on, as in the service; gc.collect() runs between rows.
The Markdown report goes to stdout (and --json writes the numbers), progress to stderr.
"""

from __future__ import annotations

import argparse
import functools
import gc
import ipaddress
import json
import os
import random
import resource
import statistics
import string
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.report import cell, heading, machine, markdown_table, number, percentile, verdict
from bench.report import progress as report_progress
from policy_service.engine.group_types import canonical_group_type
from policy_service.engine.policy import CreationRequest, Decision, Effect, Policy, RuleResult
from policy_service.engine.policy_file import load_policy
from policy_service.engine.rate_limit import InMemoryRateCounter

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_POLICY = ROOT / "examples" / "policy.toml"

GOALS_P99_US = {"example": 50.0, "large": 200.0}
WARMUP_DECISIONS = 2_000  # untimed decisions per row before the first round
PRUNE_EVERY = 3_000  # decisions between two (untimed) prunes of a row's rate counter
EXPLAIN_SAMPLE = 2_000  # requests of the pool replayed with explain=True to count rules tried
POOL_SIZE = 10_000  # distinct requests, cycled
CLOCK_START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
CLOCK_STEP_MS = 200  # simulated time between two decisions of a row: 5 creations/s
DAY_MS = 86_400_000
MB = 1e6

# The world the pool and the large policy share.
APPS = {1_400_000_001: 70, 1_400_000_002: 25, 1_400_000_003: 5}
UNUSED_APPS = range(1_400_009_000, 1_400_009_100)  # named by rules, never by requests
GROUP_TYPES = ("Work", "Public", "Meeting", "AVChatRoom", "Community")
RULE_GROUP_TYPES = (*GROUP_TYPES, "Private", "ChatRoom")  # rules may use the old names too
REQUEST_GROUP_TYPES = {
    "Public": 25,
    "Work": 18,
    "Private": 10,
    "Meeting": 10,
    "ChatRoom": 5,
    "AVChatRoom": 5,
    "Community": 15,
    "": 2,
}
PLATFORMS = {
    "Android": 35,
    "iOS": 30,
    "Web": 12,
    "Windows": 8,
    "Mac": 5,
    "iPad": 3,
    "RESTAPI": 4,
    "Unknown": 1,
    "": 2,
}
RULE_PLATFORMS = ("Android", "iOS", "Web", "Windows", "Mac", "iPad", "RESTAPI", "Linux")
USERS = 200_000  # user_NNNNNN accounts
HEAVY_USERS = 500  # of them, users_000000.. create 10% of the groups
BOTS = ("import-bot-1", "import-bot-2")  # 1% of the groups each: over the example's rate limit
VIPS = 20_000  # vip_NNNNN accounts, which the large policy's match rules name
BLOCKED_ACCOUNTS = 3_000  # spam_NNNNNN accounts, blocked by the large policy
DENY_CIDRS = 300  # networks denied by the large policy
REALISTIC_BANNED = ("free money", "casino", "赌博", "代开发票", "加微信", "六合彩", "onlyfans")
ASCII_WORDS = (  # noqa: SIM905 (a list of words reads best as text)
    "team project weekend hiking book club study group family class alumni"
    " design review sync football music travel parents gaming startup"
    " support sales ops night coffee photo yoga running cooking movie"
    " reading chess garden volunteers"
).split()
CJK_WORDS = (  # noqa: SIM905 (a list of words reads best as text)
    "学习 小组 家长群 同学会 篮球 足球 周末 徒步 读书会 项目 讨论 设计"
    " 评审 运营 客服 旅行 摄影 美食 电影 健身 三年二班 技术交流 产品"
    " 市场 销售 老乡会 宝妈 游戏 开黑 音乐 羽毛球 考研"
).split()
EMOJI = ("🎉", "🏀", "📚", "☕", "🚀", "🌸")
KIND_SHARES = {  # of --rules; every other rule is a scoped `match` rule
    "when": 0.05,
    "name": 0.01,
    "members": 0.01,
    "blocked": 0.01,
    "quota": 0.01,
    "platform_types": 0.005,
    "client_ip": 0.005,
    "owner": 0.003,
}
NAME_PATTERNS = (r"[^<>]*", r"(?s)(?!.*(?:https?://|www\.)).*", r"[^\x00-\x1f]*")

progress = functools.partial(report_progress, "bench-policy")


# --- the world, the large policy and the requests ----------------------------------------


@dataclass(frozen=True)
class World:
    """What both the large policy and the requests draw from."""

    words: list[str]
    blocked: list[str]
    deny_cidrs: list[str]


def ascii_word(rng: random.Random, low: int, high: int) -> str:
    """Lowercase letters, low to high of them."""
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(low, high)))


def cjk_word(rng: random.Random, low: int, high: int) -> str:
    """CJK unified ideographs (U+4E00..U+9FA5), low to high of them."""
    return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(low, high)))


def banned_words(count: int, rng: random.Random) -> list[str]:
    """`count` distinct words and phrases: a few real ones, then long random ASCII words
    (short ones would be inside ordinary names), ASCII phrases, CJK words and mixes."""
    words = list(REALISTIC_BANNED[:count])
    seen = set(words)
    while len(words) < count:
        kind = rng.random()
        if kind < 0.45:
            word = ascii_word(rng, 6, 12)
        elif kind < 0.60:
            word = f"{ascii_word(rng, 4, 8)} {ascii_word(rng, 4, 8)}"
        elif kind < 0.95:
            word = cjk_word(rng, 2, 5)
        else:
            word = ascii_word(rng, 2, 4) + cjk_word(rng, 2, 3)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def random_network(rng: random.Random) -> str:
    """A CIDR: mostly IPv4 /16 to /24, else IPv6 /32 to /48, host bits clear."""
    if rng.random() < 0.85:
        prefix = rng.randint(16, 24)
        base = rng.randint(1 << 24, 223 << 24) >> (32 - prefix) << (32 - prefix)
        return str(ipaddress.IPv4Network((base, prefix)))
    prefix = rng.randint(32, 48)
    base = (0x2400 << 112 | rng.getrandbits(112)) >> (128 - prefix) << (128 - prefix)
    return str(ipaddress.IPv6Network((base, prefix)))


def make_world(seed: int, words: int) -> World:
    """The banned words, blocked accounts and denied networks of this seed."""
    rng = random.Random(f"{seed}:world")
    blocked = [f"spam_{n:06d}" for n in rng.sample(range(1_000_000), BLOCKED_ACCOUNTS)]
    cidrs = sorted({random_network(rng) for _ in range(DENY_CIDRS)})
    return World(banned_words(words, random.Random(f"{seed}:words")), blocked, cidrs)


def weighted(rng: random.Random, weights: dict[Any, int]) -> Any:
    """One key of `weights`, drawn in proportion to its weight."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def request_name(rng: random.Random, world: World) -> str:
    """A group name: English, Chinese, mixed, emoji, full-width; some banned, some long."""
    style = rng.random()
    if style < 0.40:
        name = " ".join(w.title() for w in rng.sample(ASCII_WORDS, rng.randint(2, 4)))
    elif style < 0.75:
        name = "".join(rng.sample(CJK_WORDS, rng.randint(2, 4)))
    elif style < 0.88:
        name = f"{rng.choice(['Python', 'Go', 'AI', '2025届', 'K12'])}{rng.choice(CJK_WORDS)}群"
    elif style < 0.93:
        name = f"{rng.choice(EMOJI)} {rng.choice(ASCII_WORDS)} {rng.choice(CJK_WORDS)}"
    elif style < 0.95:
        name = f"\uff36\uff29\uff30 {rng.choice(CJK_WORDS)} #{rng.randint(1, 99)}"  # full-width VIP
    elif style < 0.98:
        name = f"{rng.choice(CJK_WORDS)} {rng.choice(REALISTIC_BANNED)} {rng.randint(1, 9)}"
    elif style < 0.99:
        name = f"{rng.choice(ASCII_WORDS)} {rng.choice(world.words)}"
    else:
        name = " ".join(rng.choices(ASCII_WORDS + CJK_WORDS, k=rng.randint(10, 16)))
    return name if rng.random() < 0.9 else f"{name} {rng.randint(1, 999)}"


def request_ip(rng: random.Random, world: World) -> str:
    """A ClientIP: IPv4 mostly, IPv6, IPv4-mapped IPv6, missing, or in a denied network."""
    kind = rng.random()
    if kind < 0.75:
        return str(ipaddress.IPv4Address(rng.randint(1 << 24, (224 << 24) - 1)))
    if kind < 0.90:
        return str(ipaddress.IPv6Address(0x240E << 112 | rng.getrandbits(112)))
    if kind < 0.93:
        return f"::ffff:{ipaddress.IPv4Address(rng.randint(1 << 24, (224 << 24) - 1))}"
    if kind < 0.985:
        return ""
    network = ipaddress.ip_network(rng.choice(world.deny_cidrs))
    return str(network[rng.randrange(network.num_addresses)])


def request_operator(rng: random.Random, world: World) -> str:
    """The operator: users (some much busier), bots, admins, VIPs, blocked accounts."""
    kind = rng.random()
    if kind < 0.02:
        return rng.choice(BOTS)
    if kind < 0.03:
        return "administrator"
    if kind < 0.035:
        return "support-bot"
    if kind < 0.038:
        return rng.choice(["spammer-1", "spammer-2"])
    if kind < 0.043:
        return rng.choice(world.blocked)
    if kind < 0.063:
        return f"vip_{rng.randrange(VIPS):05d}"
    if kind < 0.163:
        return f"user_{rng.randrange(HEAVY_USERS):06d}"
    return f"user_{rng.randrange(USERS):06d}"


def request_members(rng: random.Random, world: World) -> tuple[str, ...]:
    """0 to 50 initial members; a few lists repeat a member or name a blocked account."""
    size = rng.choice([rng.randint(0, 2), rng.randint(3, 20), rng.randint(3, 20), 0])
    if rng.random() < 0.2:
        size = rng.randint(21, 50)
    members = [f"user_{rng.randrange(USERS):06d}" for _ in range(size)]
    if members and rng.random() < 0.01:
        members[-1] = members[0]
    if members and rng.random() < 0.005:
        members[rng.randrange(len(members))] = rng.choice([*world.blocked[:50], "spammer-2"])
    return tuple(members)


def request_pool(world: World, seed: int, size: int) -> list[CreationRequest]:
    """`size` varied requests (the same for a seed, whatever the policy)."""
    rng = random.Random(f"{seed}:requests")
    pool = []
    for index in range(size):
        operator = request_operator(rng, world)
        owner_kind = rng.random()
        owner = operator if owner_kind < 0.80 else ""
        if owner_kind >= 0.94:
            owner = f"user_{rng.randrange(USERS):06d}"
        present = rng.random() < 0.7
        pool.append(
            CreationRequest(
                sdk_app_id=weighted(rng, APPS),
                operator_account=operator,
                owner_account=owner,
                group_type=weighted(rng, REQUEST_GROUP_TYPES),
                name=request_name(rng, world),
                create_group_num=min(200, int(rng.expovariate(1 / 4))) if present else None,
                member_accounts=request_members(rng, world),
                event_time_ms=CLOCK_START_MS + index * (DAY_MS // size),
                client_ip=request_ip(rng, world),
                opt_platform=weighted(rng, PLATFORMS),
            )
        )
    return pool


def toml(value: object) -> str:
    """A TOML value: strings, booleans, integers, arrays and inline tables of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list | tuple):
        return f"[{', '.join(toml(item) for item in value)}]"
    if isinstance(value, dict):
        items = ", ".join(f"{toml(str(key))} = {toml(item)}" for key, item in value.items())
        return f"{{ {items} }}"
    raise TypeError(f"no TOML for {value!r}")


def kind_counts(rules: int) -> dict[str, int]:
    """How many rules of each kind a large policy of `rules` rules has."""
    counts = {kind: max(1, round(rules * share)) for kind, share in KIND_SHARES.items()}
    counts["match"] = rules - sum(counts.values())
    return counts


class LargePolicy:
    """Writes the large policy (policy.toml, banned_words.txt, blocked_accounts.txt) into a
    directory: scoped match rules naming VIP accounts (allow or deny), rarely-true CEL rules,
    and checks that most requests pass, so that most requests walk every rule of their type.
    """

    def __init__(self, world: World, rules: int, seed: int) -> None:
        self.world, self.rng = world, random.Random(f"{seed}:policy")
        self.counts = kind_counts(rules)
        kinds = [kind for kind, count in self.counts.items() for _ in range(count)]
        self.rng.shuffle(kinds)
        self.made: Counter[str] = Counter()
        self.rules = [self.rule(kind, index) for index, kind in enumerate(kinds)]

    def write(self, directory: Path) -> Path:
        """Write the files; return the policy file's path."""
        (directory / "banned_words.txt").write_text(
            "# generated by bench/bench_policy.py\n" + "\n".join(self.world.words) + "\n"
        )
        (directory / "blocked_accounts.txt").write_text("\n".join(self.world.blocked) + "\n")
        lines = ["# generated by bench/bench_policy.py", "version = 1", "", "[default]"]
        lines += ['effect = "allow"', ""]
        for rule in self.rules:
            lines += ["[[rules]]", *(f"{key} = {toml(value)}" for key, value in rule.items()), ""]
        path = directory / "policy.toml"
        path.write_text("\n".join(lines))
        return path

    def rule(self, kind: str, index: int) -> dict[str, object]:
        """One rule of `kind`: its id first, its scope and check, its outcome last."""
        first = self.made[kind] == 0
        self.made[kind] += 1
        rule: dict[str, object] = {"id": f"{kind.replace('_', '-')}-{index:04d}"}
        if kind != "match" and kind != "when":
            rule["kind"] = kind
        rule.update(getattr(self, f"_{kind}")(first))
        if rule.get("effect", "deny") == "deny":
            rule["error_code"] = 10100 + index % 101
            rule["error_info"] = f"Refused by rule {index} of the benchmark's large policy."
        return rule

    def types(self, share: float) -> dict[str, object]:
        """group_types of one or two types, for `share` of the rules."""
        if self.rng.random() >= share:
            return {}
        return {"group_types": self.rng.sample(RULE_GROUP_TYPES, self.rng.randint(1, 2))}

    def _match(self, first: bool) -> dict[str, object]:
        rng = self.rng
        accounts = sorted({f"vip_{rng.randrange(VIPS):05d}" for _ in range(rng.randint(1, 20))})
        rule: dict[str, object] = {"operator_accounts": accounts, **self.types(0.7)}
        if rng.random() < 0.4:
            rule["opt_platforms"] = rng.sample(RULE_PLATFORMS, rng.randint(1, 3))
        if rng.random() < 0.05:
            rule["shadow"] = True
        rule["effect"] = "allow" if rng.random() < 0.6 else "deny"
        return rule

    def _when(self, first: bool) -> dict[str, object]:
        rng, world = self.rng, self.world
        app, platform_ = rng.choice(UNUSED_APPS), toml(rng.choice(RULE_PLATFORMS))
        expressions: list[Callable[[], str]] = [
            lambda: f"sdk_app_id == {app} && size(members) > {rng.randint(10, 40)}",
            lambda: f"name.startsWith({toml(ascii_word(rng, 8, 8))})",
            lambda: f'operator.startsWith("tmp_") && platform == {platform_}',
            lambda: f"create_group_num != null && create_group_num > {rng.randint(900, 5000)}",
            lambda: f"name.contains({toml(rng.choice(world.words))})",
            lambda: f'client_ip.startsWith("10.{rng.randrange(256)}.")',
            lambda: f"{toml(rng.choice(world.blocked))} in members",
            lambda: 'members.exists(m, m.startsWith("spam_")) && group_type == "Public"',
            lambda: (
                f'(time.getHours() + 8) % 24 < 6 && group_type == "Community"'
                f" && sdk_app_id == {app}"
            ),
            lambda: f"size(name) > {rng.randint(60, 120)}",
            lambda: f'owner != "" && owner != operator && sdk_app_id == {app}',
        ]
        rule: dict[str, object] = {**self.types(0.3), "when": rng.choice(expressions)()}
        if rng.random() < 0.1:
            rule["shadow"] = True
        rule["effect"] = "allow" if rng.random() < 0.2 else "deny"
        return rule

    def _name(self, first: bool) -> dict[str, object]:
        rng = self.rng
        if first:
            return {"min_length": 1, "max_length": 64, "banned_words_file": "banned_words.txt"}
        rule: dict[str, object] = {**self.types(0.5), "max_length": rng.choice([40, 50, 64, 100])}
        if rng.random() < 0.5:
            rule["pattern"] = rng.choice(NAME_PATTERNS)
        if rng.random() < 0.5:
            words = rng.sample(REALISTIC_BANNED, 2) + rng.sample(self.world.words, 10)
            rule["banned_words"] = words
        return rule

    def _members(self, first: bool) -> dict[str, object]:
        rng = self.rng
        rule: dict[str, object] = {**self.types(0.5), "max_members": rng.choice([100, 200, 500])}
        if rng.random() < 0.5:
            rule["reject_duplicates"] = True
        if rng.random() < 0.7:
            rule["blocked_accounts"] = rng.sample(self.world.blocked, rng.randint(5, 30))
        return rule

    def _blocked(self, first: bool) -> dict[str, object]:
        rng = self.rng
        if first:
            return {"accounts_file": "blocked_accounts.txt", "check_owner": True}
        return {
            **self.types(0.3),
            "accounts": rng.sample(self.world.blocked, rng.randint(10, 50)),
            "check_owner": rng.random() < 0.5,
        }

    def _quota(self, first: bool) -> dict[str, object]:
        rng = self.rng
        if rng.random() < 0.5:
            return {**self.types(0.7), "max_created": rng.randint(300, 1000)}
        by_type = {t: rng.randint(300, 1000) for t in rng.sample(GROUP_TYPES, 2)}
        return {"max_created_by_type": by_type, "when_unknown": "allow"}

    def _platform_types(self, first: bool) -> dict[str, object]:
        rng = self.rng
        desktop = ["Work", "Public", "Meeting", "Community"]
        allowed = {p: desktop for p in rng.sample(["Web", "Windows", "Mac", "Linux"], 2)}
        allowed[rng.choice(["Android", "iOS", "iPad"])] = list(GROUP_TYPES)
        return {"allowed": allowed}

    def _client_ip(self, first: bool) -> dict[str, object]:
        rng = self.rng
        if first:
            return {"deny_cidrs": self.world.deny_cidrs, "when_missing": "allow"}
        if rng.random() < 0.3:
            return {
                "operator_accounts": [f"svc_{n}" for n in range(rng.randint(1, 5))],
                "allow_cidrs": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"],
            }
        return {**self.types(0.3), "deny_cidrs": rng.sample(self.world.deny_cidrs, 30)}

    def _owner(self, first: bool) -> dict[str, object]:
        admins = [f"vip_{self.rng.randrange(VIPS):05d}" for _ in range(10)] + ["support-bot"]
        return {"opt_platforms": ["Web", "Windows", "Mac"], "admins": sorted(set(admins))}


# --- loading, with its memory ------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


@dataclass(frozen=True)
class Load:
    """Loading one policy: its time, what tracemalloc saw, and the process RSS."""

    load_ms: float
    traced_net_mb: float
    traced_peak_mb: float
    rss_before_mb: float
    rss_after_mb: float


def load_measured(load: Callable[[], Policy]) -> tuple[Policy, Load]:
    """Load the policy (timed, RSS around it), then once more, discarded, in a fresh
    tracemalloc window (tracing slows loading, so it is not the timed load)."""
    gc.collect()
    rss_before = rss_bytes()
    began = time.perf_counter_ns()
    policy = load()
    load_ms = (time.perf_counter_ns() - began) / 1e6
    gc.collect()
    rss_after = rss_bytes()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    copy = load()
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del copy
    gc.collect()
    return policy, Load(
        load_ms, (after - before) / MB, (peak - before) / MB, rss_before / MB, rss_after / MB
    )


# --- timing ------------------------------------------------------------------------------


@dataclass
class Subject:
    """One row: a policy decided one way, with its own pool position, clock and counter."""

    name: str
    policy: Policy
    explain: bool
    goal_p99_us: float | None = None
    counter: InMemoryRateCounter = field(default_factory=InMemoryRateCounter)
    done: int = 0  # decisions made so far: the pool position and the simulated clock
    values: dict[str, list[float]] = field(default_factory=dict)
    tried: float = 0.0  # rules applying (scope matched) per decision (mean, with explain)
    indexed: float = 0.0  # rules indexed for the request's group type (mean)


def run(subject: Subject, requests: Sequence[CreationRequest], count: int) -> dict[str, float]:
    """Time `count` decisions of the subject, each on its own; their statistics in µs."""
    samples = array("q", bytes(8 * count))
    decide, counter, explain = subject.policy.decide, subject.counter, subject.explain
    perf = time.perf_counter_ns
    size, allow, allowed = len(requests), Effect.ALLOW, 0
    for chunk in range(0, count, PRUNE_EVERY):
        end = min(count, chunk + PRUNE_EVERY)
        for index in range(chunk, end):
            n = subject.done + index
            request, now = requests[n % size], CLOCK_START_MS + n * CLOCK_STEP_MS
            start = perf()
            decision = settled(decide(request, counter=counter, now_ms=now, explain=explain))
            samples[index] = perf() - start
            if decision.outcome.effect is allow:
                allowed += 1
        now = CLOCK_START_MS + (subject.done + end) * CLOCK_STEP_MS  # untimed, as retention
        settled(counter.prune_slots(now - subject.policy.longest_window_ms))
    subject.done += count
    ordered = sorted(samples)
    return {
        "p50": percentile(ordered, 50) / 1000,
        "p99": percentile(ordered, 99) / 1000,
        "p99_9": percentile(ordered, 99.9) / 1000,
        "mean": sum(ordered) / len(ordered) / 1000,
        "allowed": 100 * allowed / count,
    }


def settled(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (Policy.decide counting in an InMemoryRateCounter)
    to its end, inline: the decision as the service's event loop makes it, without the cost
    of an event loop round per decision in the timings."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the coroutine suspended: it needs an event loop")


def timer_overhead_us(count: int) -> float:
    """p50 of timing a call that does nothing, with decide's arguments: the floor of a row."""

    def nothing(request: CreationRequest, *, counter: object, now_ms: int, explain: bool) -> None:
        """Does nothing."""

    request, counter, perf = CreationRequest(1), InMemoryRateCounter(), time.perf_counter_ns
    samples = []
    for index in range(count):
        start = perf()
        nothing(request, counter=counter, now_ms=index, explain=False)
        samples.append(perf() - start)
    return percentile(sorted(samples), 50) / 1000


def walk(subject: Subject, requests: Sequence[CreationRequest]) -> None:
    """Replay part of the pool with explain=True (fresh counter, untimed): how many rules
    apply to a decision (their scope matched), of those of the request's group type."""
    counter = InMemoryRateCounter()
    sample = requests[:EXPLAIN_SAMPLE]
    decisions: list[Decision] = [
        settled(
            subject.policy.decide(
                request, counter=counter, now_ms=CLOCK_START_MS + n * CLOCK_STEP_MS, explain=True
            )
        )
        for n, request in enumerate(sample)
    ]
    rules = subject.policy.rules
    typed = {t for rule in rules for t in rule.scope.group_types}  # as Policy indexes them
    indexed: dict[str, frozenset[str]] = {}
    tried, walked = [], []
    for request, decision in zip(sample, decisions, strict=True):
        group_type = canonical_group_type(request.group_type)
        if group_type not in indexed:
            indexed[group_type] = frozenset(
                rule.id
                for rule in rules
                if not rule.scope.group_types
                or (group_type in typed and group_type in rule.scope.group_types)
            )
        ids = indexed[group_type]
        tried.append(len(ids))
        walked.append(
            sum(
                1
                for e in decision.evaluations
                if e.rule_id in ids and e.result is not RuleResult.NOT_APPLICABLE
            )
        )
    subject.tried, subject.indexed = statistics.fmean(walked), statistics.fmean(tried)
    errors = sum(1 for d in decisions for e in d.evaluations if e.result is RuleResult.ERROR)
    if errors:
        progress(f"{subject.name}: {errors} rule errors in {len(sample)} explained decisions")


def measure(
    subjects: list[Subject], requests: Sequence[CreationRequest], args: argparse.Namespace
) -> None:
    """Warm up, then --rounds rounds of --decisions decisions per subject, taking turns."""
    for subject in subjects:
        run(subject, requests, WARMUP_DECISIONS)
    for round_number in range(args.rounds):
        turn = round_number % len(subjects)
        for subject in subjects[turn:] + subjects[:turn]:
            progress(f"round {round_number + 1} of {args.rounds}: {subject.name}")
            gc.collect()
            for key, value in run(subject, requests, args.decisions).items():
                subject.values.setdefault(key, []).append(value)
        gc.collect()
        baseline = subjects[0].values
        for subject in subjects:
            for key in ("p50", "p99"):
                subject.values.setdefault(f"{key}_ratio", []).append(
                    subject.values[key][-1] / baseline[key][-1]
                )


# --- the report --------------------------------------------------------------------------


def goal_cell(subject: Subject) -> str:
    """The p99 goal and whether the median p99 meets it."""
    if subject.goal_p99_us is None:
        return ""
    met = statistics.median(subject.values["p99"]) <= subject.goal_p99_us
    return f"≤ {subject.goal_p99_us:g}: {verdict(met)}"


def latency_table(subjects: list[Subject]) -> list[str]:
    """A row per subject: rules, allowed share, latencies, ratios, goal."""
    columns = [
        *("policy", "rules", "rules applying per decision (of its type's)", "allowed, %"),
        *("p50, µs", "p99, µs", "p99.9, µs", "mean, µs", "p50 / baseline", "p99 / baseline"),
        "p99 goal, µs",
    ]
    rows = [
        [
            s.name,
            f"{len(s.policy.rules):,}",
            f"{number(s.tried)} ({number(s.indexed)})",
            *(cell(s.values[k]) for k in ("allowed", "p50", "p99", "p99_9", "mean")),
            *(cell(s.values[k]) for k in ("p50_ratio", "p99_ratio")),
            goal_cell(s),
        ]
        for s in subjects
    ]
    return markdown_table(columns, rows)


def load_table(loads: dict[str, Load]) -> list[str]:
    """A row per loaded policy: load time and memory."""
    columns = [
        *("policy", "load, ms", "tracemalloc net, MB", "tracemalloc peak, MB", "RSS before, MB"),
        *("RSS after, MB", "RSS growth, MB"),
    ]
    rows = []
    for name, load in loads.items():
        megabytes = [load.traced_net_mb, load.traced_peak_mb, load.rss_before_mb]
        megabytes += [load.rss_after_mb, load.rss_after_mb - load.rss_before_mb]
        rows.append([name, number(load.load_ms), *(f"{value:,.1f}" for value in megabytes)])
    return markdown_table(columns, rows)


def goals_line(subjects: list[Subject]) -> str:
    """The goals, each with the measured p99 and whether it is met."""
    parts = []
    for s in subjects:
        if s.goal_p99_us is not None:
            p99 = statistics.median(s.values["p99"])
            met = verdict(p99 <= s.goal_p99_us)
            parts.append(f"{s.name} p99 {number(p99)} µs ≤ {s.goal_p99_us:g} µs: {met}")
    return "Goals (median p99 of the rounds): " + "; ".join(parts) + "."


@dataclass
class Run:
    """Everything the report needs besides the subjects."""

    argv: list[str]
    args: argparse.Namespace
    loads: dict[str, Load]
    counts: dict[str, int]
    generate_s: float
    timer_us: float
    load_average: float
    total_s: float = 0.0


def report(run_: Run, subjects: list[Subject]) -> str:
    """The Markdown report: command, machine, what was measured, the tables, goals, notes."""
    args = run_.args
    kinds = ", ".join(f"{count:,} {kind}" for kind, count in run_.counts.items())
    lines = [
        *heading(["scripts/bench-policy", *run_.argv]),
        f"Policy.decide in process, {args.decisions:,} decisions per policy per round, each"
        f" timed on its own; each cell is the median of {args.rounds} rounds (min..max), the"
        " policies taking turns within a round; ratios within a round. Requests: a pool of"
        f" {POOL_SIZE:,} varied requests (seed {args.seed}), cycled.",
        "",
        "- baseline: the shipped default policy (no rules, allow);",
        "- example: examples/policy.toml, its rate limit in an InMemoryRateCounter"
        " (the service counts in its store: SQLite or PostgreSQL, not measured here);",
        "- example explain: the same, decided with explain=True;",
        f"- large: {len(subjects[-1].policy.rules):,} generated rules ({kinds}), the first"
        f" name rule with a file of {args.words:,} banned words (ASCII and CJK), a blocked"
        f" rule with a file of {BLOCKED_ACCOUNTS:,} accounts, a client_ip rule of"
        f" {DENY_CIDRS} denied networks. No rate_limit rules: they count in the store.",
        "",
        *latency_table(subjects),
        "",
        goals_line(subjects),
        "",
        *load_table(run_.loads),
        "",
        "Load: load_policy once, timed, with the process RSS before and after; then once more"
        " in a fresh tracemalloc window (net: still allocated by the loaded policy; peak: the"
        " most during the load). tracemalloc sees Python's allocators only, not the CEL"
        " programs' or Aho-Corasick automaton's own; RSS sees everything but freed memory"
        " the allocator keeps. MB = 10^6 bytes.",
        f"Rules applying: with explain=True on {EXPLAIN_SAMPLE:,} requests of the pool, the"
        " mean number of rules whose scope matched the request (in parentheses: the rules"
        " of the request's group type).",
        f"Timing one call that does nothing costs {number(run_.timer_us)} µs (p50): every"
        " latency above includes it.",
        f"Large policy generated in {run_.generate_s:.1f} s. Whole run: {run_.total_s:.0f} s"
        f" ({run_.total_s / 60:.1f} min). 1-minute load average before it:"
        f" {run_.load_average:.1f} (other work on the machine skews the results).",
    ]
    return "\n".join(lines)


def json_report(run_: Run, subjects: list[Subject]) -> dict[str, object]:
    """The numbers of the report, for --json."""
    return {
        "command": ["scripts/bench-policy", *run_.argv],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {**vars(run_.args), "pool": POOL_SIZE, "clock_step_ms": CLOCK_STEP_MS},
        "large_policy_kinds": run_.counts,
        "timer_overhead_us": run_.timer_us,
        "total_s": run_.total_s,
        "load_average": run_.load_average,
        "policies": {
            s.name: {
                "rules": len(s.policy.rules),
                "explain": s.explain,
                "rules_tried_mean": s.tried,
                "rules_indexed_mean": s.indexed,
                "rounds": s.values,
                "median": {k: statistics.median(v) for k, v in s.values.items()},
                "goal_p99_us": s.goal_p99_us,
                "goal_met": None
                if s.goal_p99_us is None
                else statistics.median(s.values["p99"]) <= s.goal_p99_us,
            }
            for s in subjects
        },
        "loads": {name: vars(load) for name, load in run_.loads.items()},
    }


# --- command line ------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: an integer above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of scripts/bench-policy."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench-policy",
        description="Time Policy.decide in process for the default, example and a generated"
        " large policy; print a Markdown table (goals: p99 <= 50 us for the example, <= 200"
        " us for the large policy).",
    )
    parser.add_argument("--rounds", type=positive_int, default=5, help="rounds (3 or more)")
    parser.add_argument(
        "--decisions", type=positive_int, default=100_000, help="decisions per policy per round"
    )
    parser.add_argument(
        "--words", type=positive_int, default=100_000, help="banned words of the large policy"
    )
    parser.add_argument(
        "--rules", type=int, default=1_000, help="rules of the large policy (at least 20)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seeds the requests and the policy")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.rules < 20:
        parser.error("--rules: at least 20 (one of each kind, and match rules)")
    return args


def main(argv: list[str]) -> int:
    """Generate, load, measure, report."""
    args = parse_args(argv)
    began, load_average = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as directory:
        progress(f"generating the large policy: {args.rules:,} rules, {args.words:,} words")
        generating = time.monotonic()
        world = make_world(args.seed, args.words)
        large = LargePolicy(world, args.rules, args.seed)
        large_path = large.write(Path(directory))
        generate_s = time.monotonic() - generating
        requests = request_pool(world, args.seed, POOL_SIZE)
        loads: dict[str, Load] = {}
        policies: dict[str, Policy] = {}
        sources: dict[str, Callable[[], Policy]] = {
            "baseline": lambda: load_policy(None),
            "example": lambda: load_policy(EXAMPLE_POLICY),
            "large": lambda: load_policy(large_path),
        }
        for name, load in sources.items():
            progress(f"loading {name}")
            policies[name], loads[name] = load_measured(load)
    subjects = [
        Subject("baseline", policies["baseline"], explain=False),
        Subject("example", policies["example"], False, GOALS_P99_US["example"]),
        Subject("example explain", policies["example"], explain=True),
        Subject("large", policies["large"], False, GOALS_P99_US["large"]),
    ]
    progress("counting the rules decisions try (explain)")
    for subject in subjects:
        walk(subject, requests)
    timer_us = timer_overhead_us(min(args.decisions, 100_000))
    measure(subjects, requests, args)
    run_ = Run(argv, args, loads, large.counts, generate_s, timer_us, load_average)
    run_.total_s = time.monotonic() - began
    print(report(run_, subjects))
    if args.json is not None:
        args.json.write_text(json.dumps(json_report(run_, subjects), indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
