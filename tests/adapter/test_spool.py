"""The durable spool and its replayer: real SQLite files, real processes, real threads."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.spool import (
    MIGRATIONS,
    Rejected,
    Replayer,
    RetryLater,
    SetAsideEvent,
    Spool,
    SpooledEvent,
    SpoolFull,
    SpoolUnavailable,
    UnknownEvents,
)
from tests.waiting import wait_for

METHOD = "RecordGroupFull"

MakeSpool = Callable[..., Spool]
MakeReplayer = Callable[..., Replayer]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the spool's file goes."""
    return tmp_path / "spool" / "adapter-spool.db"


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    """The replay leader's lock file."""
    return tmp_path / "spool" / "replay.lock"


@pytest.fixture
def make_spool(path: Path) -> Iterator[MakeSpool]:
    """Open spools on `path` (or another file); all are closed afterwards."""
    opened: list[Spool] = []

    def make(max_events: int = 1000, at: Path | None = None) -> Spool:
        spool = Spool(at or path, max_events)
        opened.append(spool)
        return spool

    yield make
    for spool in opened:
        spool.close()


@pytest.fixture
def spool(make_spool: MakeSpool) -> Spool:
    """A fresh spool holding at most 1000 events."""
    return make_spool()


@pytest.fixture
def make_replayer(lock_path: Path) -> Iterator[MakeReplayer]:
    """Build replayers sharing `lock_path`, whose health check finds the service away unless
    `service_answers` says otherwise; all are stopped afterwards."""
    built: list[Replayer] = []

    def make(
        spool: Spool,
        deliver: Callable[[SpooledEvent], None],
        service_answers: Callable[[], bool] = lambda: False,
        **options: Any,
    ) -> Replayer:
        replayer = Replayer(spool, deliver, service_answers, lock_path, **options)
        built.append(replayer)
        return replayer

    yield make
    for replayer in built:
        replayer.stop()


def add(spool: Spool, n: int, prefix: str = "r") -> list[int]:
    """Append n events whose request and request ID name their position; their ids."""
    return [
        spool.append(METHOD, f"{prefix}{i}".encode(), f"{prefix}-{i}", 1000 + i) for i in range(n)
    ]


def set_aside_rows(path: Path) -> list[tuple[int, str, str, int]]:
    """(id, request_id, reason, attempts) of every set-aside event, read directly."""
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT id, request_id, reason, attempts FROM set_aside_event ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def test_appended_events_come_back_oldest_first_with_all_fields(spool: Spool) -> None:
    """oldest returns events in order of acceptance with every field as appended."""
    first = spool.append(METHOD, b"\x00\x01payload", "req-1", 1670574414123)
    second = spool.append("CheckGroupCreation", b"", "req-2", 1670574414124)
    assert second > first
    assert spool.oldest(10) == [
        SpooledEvent(first, METHOD, b"\x00\x01payload", "req-1", 1670574414123, 0),
        SpooledEvent(second, "CheckGroupCreation", b"", "req-2", 1670574414124, 0),
    ]
    assert [event.id for event in spool.oldest(1)] == [first]
    assert spool.depth() == 2


def test_remove_forgets_the_event_and_twice_is_harmless(spool: Spool) -> None:
    """A removed event is gone from oldest and depth; removing it again changes nothing."""
    ids = add(spool, 3)
    spool.remove(ids[1])
    spool.remove(ids[1])
    spool.remove(999_999)
    assert [event.id for event in spool.oldest(10)] == [ids[0], ids[2]]
    assert spool.depth() == 2


def test_events_survive_reopening_and_ids_keep_increasing(path: Path) -> None:
    """A new Spool on the same file sees the events in order; a new id exceeds every old one."""
    first = Spool(path, 10)
    ids = add(first, 3)
    first.remove(ids[2])
    first.close()
    second = Spool(path, 10)
    try:
        assert [(event.id, event.request_id) for event in second.oldest(10)] == [
            (ids[0], "r-0"),
            (ids[1], "r-1"),
        ]
        assert second.append(METHOD, b"x", "later", 5000) > ids[2]
    finally:
        second.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


def test_full_spool_refuses_and_set_aside_events_free_room(
    path: Path, make_spool: MakeSpool
) -> None:
    """At the maximum append raises SpoolFull and adds nothing; remove or set_aside frees room."""
    spool = make_spool(max_events=3)
    ids = add(spool, 3)
    with pytest.raises(SpoolFull):
        spool.append(METHOD, b"x", "too-many", 1)
    assert spool.depth() == 3
    assert [event.id for event in spool.oldest(10)] == ids

    spool.remove(ids[0])
    fourth = spool.append(METHOD, b"x", "fits", 2)
    spool.record_failure(ids[1], 10)
    spool.set_aside(ids[1], "INVALID_ARGUMENT: bad group", 3)
    assert spool.depth() == 2
    fifth = spool.append(METHOD, b"x", "fits-too", 4)
    with pytest.raises(SpoolFull):
        spool.append(METHOD, b"x", "too-many", 5)
    assert [event.id for event in spool.oldest(10)] == [ids[2], fourth, fifth]
    assert set_aside_rows(path) == [(ids[1], "r-1", "INVALID_ARGUMENT: bad group", 1)]


def test_record_failure_counts_attempts_and_sets_the_next_one(spool: Spool) -> None:
    """Each recorded failure adds one to the event's attempts and moves its next attempt, for
    that event only; an event is due from its next attempt on, a new one at once."""
    ids = add(spool, 2)
    spool.record_failure(ids[0], 5000)
    spool.record_failure(ids[0], 7000)
    spool.record_failure(999_999, 1)
    assert [(event.attempts, event.next_attempt_ms) for event in spool.oldest(10)] == [
        (2, 7000),
        (0, 0),
    ]
    assert [event.id for event in spool.oldest(10, due_by_ms=6999)] == [ids[1]]
    assert [event.id for event in spool.oldest(10, due_by_ms=7000)] == ids


def test_a_spool_of_the_first_schema_is_migrated_and_its_events_are_due(path: Path) -> None:
    """A file written before per-event backoff opens as is: its events wait, due at once."""
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute(
        "INSERT INTO spooled_event (method, request, request_id, enqueued_ms, attempts)"
        " VALUES (?, ?, ?, ?, ?)",
        (METHOD, b"old", "r-old", 1000, 4),
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    spool = Spool(path, 10)
    try:
        [event] = spool.oldest(10, due_by_ms=0)
        assert (event.request_id, event.attempts, event.next_attempt_ms) == ("r-old", 4, 0)
        assert spool.set_aside_count() == 0
    finally:
        spool.close()


def test_threads_sharing_one_spool_lose_nothing(spool: Spool) -> None:
    """Eight threads appending through one Spool object get distinct ids for all 400 events."""
    ids: list[int] = []
    ids_lock = threading.Lock()

    def append_50(name: str) -> None:
        mine = add(spool, 50, prefix=name)
        with ids_lock:
            ids.extend(mine)

    threads = [threading.Thread(target=append_50, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(ids)) == 400
    assert spool.depth() == 400


def _append_from_process(path: str, name: str, count: int, start: Any) -> None:
    """Runs in a spawned process: wait for the start signal, open the spool, append."""
    assert start.wait(60)
    spool = Spool(Path(path), 10_000)
    try:
        add(spool, count, prefix=name)
    finally:
        spool.close()


def test_processes_appending_at_once_lose_nothing_and_keep_their_order(
    path: Path, make_spool: MakeSpool
) -> None:
    """Four processes opening a fresh file and appending 200 each leave 800 events, in order."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    names = [f"p{n}" for n in range(4)]
    processes = [
        context.Process(target=_append_from_process, args=(str(path), name, 200, start))
        for name in names
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(90)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]

    spool = make_spool()
    events = spool.oldest(10_000)
    assert spool.depth() == len(events) == 800
    assert len({event.id for event in events}) == 800
    for name in names:
        mine = [event.request_id for event in events if event.request_id.startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(200)]


def test_only_one_replayer_leads_and_each_event_is_delivered_once(
    make_spool: MakeSpool, make_replayer: MakeReplayer
) -> None:
    """While one replayer holds the lock the other delivers nothing; stop() hands over the lead."""
    spool_a, spool_b = make_spool(), make_spool()
    delivered: list[int] = []
    a = make_replayer(spool_a, lambda event: delivered.append(event.id), batch_size=2)
    b = make_replayer(spool_b, lambda event: delivered.append(event.id), batch_size=2)

    ids = add(spool_a, 5)
    assert a.run_once() == 5
    ids += add(spool_b, 3, prefix="b")
    assert b.run_once() == 0
    assert spool_b.depth() == 3
    assert a.run_once() == 3

    ids += add(spool_b, 2, prefix="c")
    a.stop()
    assert b.run_once() == 2
    assert a.run_once() == 0
    assert delivered == ids
    assert spool_a.depth() == 0


class Clock:
    """The replayer's clock, moved by hand (Unix seconds)."""

    def __init__(self, now_s: float = 1_700_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def ms(self) -> int:
        """The clock's time in Unix milliseconds."""
        return int(self.now_s * 1000)


def test_an_event_failing_for_now_does_not_hold_the_ones_behind_it(
    spool: Spool, make_replayer: MakeReplayer, caplog: pytest.LogCaptureFixture
) -> None:
    """With a poison event at the head that always says RetryLater, one pass delivers the three
    behind it; the poison one is tried again only when due, with a growing backoff."""
    caplog.set_level(logging.INFO, logger="adapter.spool")
    poison, *good = add(spool, 4)
    tried: list[int] = []

    def deliver(event: SpooledEvent) -> None:
        tried.append(event.id)
        if event.id == poison:
            raise RetryLater("UNAVAILABLE: store error")

    clock = Clock()
    replayer = make_replayer(spool, deliver, clock=clock, backoff_initial_s=1.0)
    assert replayer.run_once() == 3
    assert tried == [poison, *good]
    [event] = spool.oldest(10)
    assert event.attempts == 1
    assert 500 <= event.next_attempt_ms - 1_700_000_000_000 <= 1000

    for attempts in range(2, 10):
        tried.clear()
        clock.now_s = event.next_attempt_ms / 1000 - 0.001
        assert replayer.run_once() == 0
        assert tried == []  # not due yet
        clock.now_s = event.next_attempt_ms / 1000
        assert replayer.run_once() == 0
        assert tried == [poison]
        previous, [event] = event, spool.oldest(10)
        assert event.attempts == attempts
        # 1 s doubling up to 30 s, each jittered down by up to half.
        ceiling_ms = min(30_000, 1000 * 2 ** (attempts - 1))
        assert ceiling_ms / 2 <= event.next_attempt_ms - previous.next_attempt_ms <= ceiling_ms
    assert not any("paused" in record.getMessage() for record in caplog.records)


def test_an_event_that_keeps_failing_is_logged_at_the_tenth_attempt(
    spool: Spool, make_replayer: MakeReplayer, caplog: pytest.LogCaptureFixture
) -> None:
    """An event failing for now is logged as a warning at its 10th failure, not before."""
    (event_id,) = add(spool, 1)

    def deliver(event: SpooledEvent) -> None:
        raise RetryLater("UNAVAILABLE: store error")

    clock = Clock()
    replayer = make_replayer(spool, deliver, clock=clock)
    for attempts in range(1, 11):
        assert replayer.run_once() == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == (1 if attempts == 10 else 0)
        clock.now_s += 60
    assert (
        f"event {event_id} ({METHOD}, request_id=r-0) failed (10 attempts so far)" in (warnings[0])
    )
    assert "store error" in warnings[0]


def test_when_the_service_looks_away_a_pass_stops_and_the_replayer_backs_off(
    spool: Spool, make_replayer: MakeReplayer, caplog: pytest.LogCaptureFixture
) -> None:
    """With every event failing and the health check failing too, a pass stops after three in
    a row, makes them due again (the outage failed them), and the replay thread then waits its
    backoff instead of trying the others at once."""
    ids = add(spool, 10)
    tried: list[int] = []

    def deliver(event: SpooledEvent) -> None:
        tried.append(event.id)
        raise RetryLater("UNAVAILABLE: connection refused")

    clock = Clock()
    replayer = make_replayer(spool, deliver, clock=clock)
    assert replayer.run_once() == 0
    assert tried == ids[:3]
    assert [event.attempts for event in spool.oldest(10)] == [1, 1, 1] + [0] * 7
    assert [event.id for event in spool.oldest(10, due_by_ms=clock.ms())] == ids
    paused = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(paused) == 1
    assert (
        "spool replay paused: 3 events in a row failed and the service's health check fails"
        in paused[0]
    )
    assert f"event {ids[2]}" in paused[0] and "connection refused" in paused[0]

    tried.clear()
    threaded = make_replayer(
        spool, deliver, clock=clock, idle_s=0.001, backoff_initial_s=3600, backoff_max_s=3600
    )
    replayer.stop()
    threaded.start()
    wait_for(lambda: len(tried) >= 3)
    threaded.stop()
    assert tried == ids[:3]  # then the thread waited its backoff: no fourth attempt


def test_events_failing_alone_in_a_row_do_not_stop_a_pass_while_the_service_answers(
    spool: Spool, make_replayer: MakeReplayer
) -> None:
    """Three events in a row that fail for now while the service answers its health check
    are backed off alone, and the same pass delivers the events behind them."""
    *poison, good = add(spool, 4)
    delivered: list[int] = []
    checks: list[bool] = []

    def deliver(event: SpooledEvent) -> None:
        if event.id in poison:
            raise RetryLater("DEADLINE_EXCEEDED")
        delivered.append(event.id)

    def service_answers() -> bool:
        checks.append(True)
        return True

    clock = Clock()
    replayer = make_replayer(spool, deliver, service_answers, clock=clock)
    assert replayer.run_once() == 1
    assert delivered == [good]
    assert checks == [True]
    assert [event.id for event in spool.oldest(10)] == poison
    assert spool.oldest(10, due_by_ms=clock.ms()) == []  # each waits its own backoff


def test_after_an_outage_every_event_is_delivered(
    spool: Spool, make_replayer: MakeReplayer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every event is delivered on the first pass after an outage, none waiting out a backoff
    of its own; the drain is logged with the count."""
    caplog.set_level(logging.INFO, logger="adapter.spool")
    ids = add(spool, 5)
    down = True
    delivered: list[int] = []

    def deliver(event: SpooledEvent) -> None:
        if down:
            raise RetryLater("UNAVAILABLE")
        delivered.append(event.id)

    clock = Clock()
    replayer = make_replayer(spool, deliver, clock=clock)
    assert replayer.run_once() == 0
    down = False
    assert replayer.run_once() == 5
    assert sorted(delivered) == ids
    assert spool.depth() == 0
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert ("INFO", "spool drained: delivered 5") in messages
    assert ("INFO", "spool depth=5") in messages


def test_rejected_event_is_set_aside_and_replay_continues(
    path: Path, spool: Spool, make_replayer: MakeReplayer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Rejected event moves to set_aside_event with its reason; the next ones are delivered."""
    ids = add(spool, 3)
    delivered: list[int] = []

    def deliver(event: SpooledEvent) -> None:
        if event.id == ids[1]:
            raise Rejected("INVALID_ARGUMENT: group_id is empty")
        delivered.append(event.id)

    assert make_replayer(spool, deliver).run_once() == 2
    assert delivered == [ids[0], ids[2]]
    assert spool.depth() == 0
    assert set_aside_rows(path) == [(ids[1], "r-1", "INVALID_ARGUMENT: group_id is empty", 0)]
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1
    for part in (str(ids[1]), METHOD, "group_id is empty"):
        assert part in errors[0].getMessage()
    assert getattr(errors[0], "request_id", None) == "r-1"


def test_unexpected_error_does_not_end_the_replay_thread(
    spool: Spool, make_replayer: MakeReplayer, caplog: pytest.LogCaptureFixture
) -> None:
    """After deliver raises RuntimeError the thread backs off, retries, delivers, stops in time."""
    calls: list[int] = []

    def deliver(event: SpooledEvent) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            raise RuntimeError("bug in deliver")

    replayer = make_replayer(spool, deliver, backoff_initial_s=0.01, idle_s=0.01)
    (event_id,) = add(spool, 1)
    replayer.start()
    replayer.start()
    wait_for(lambda: spool.depth() == 0)
    assert calls == [event_id, event_id]
    assert any(
        record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
        for record in caplog.records
    )

    began = time.monotonic()
    replayer.stop(timeout_s=5.0)
    assert time.monotonic() - began < 5.0
    assert not any(thread.name == "spool-replayer" for thread in threading.enumerate())


def test_wake_ends_a_long_idle_wait_and_stop_is_prompt(
    spool: Spool, make_replayer: MakeReplayer
) -> None:
    """With a 60 s idle interval, wake() gets a new event delivered and stop() returns at once."""
    delivered: list[str] = []
    replayer = make_replayer(spool, lambda event: delivered.append(event.request_id), idle_s=60.0)
    add(spool, 1, prefix="first")
    replayer.start()
    wait_for(lambda: delivered == ["first-0"])

    add(spool, 1, prefix="second")
    replayer.wake()
    wait_for(lambda: delivered == ["first-0", "second-0"])

    began = time.monotonic()
    replayer.stop(timeout_s=5.0)
    assert time.monotonic() - began < 2.0


def test_unusable_file_is_spool_unavailable(tmp_path: Path) -> None:
    """A directory or a file that is not a database at the spool's path gives SpoolUnavailable."""
    with pytest.raises(SpoolUnavailable, match="unable to open"):
        Spool(tmp_path, 10)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, " * 512)
    with pytest.raises(SpoolUnavailable, match="not a database"):
        Spool(garbage, 10)


def test_closed_spool_is_unavailable_and_the_replayer_survives_it(
    path: Path, make_replayer: MakeReplayer
) -> None:
    """Using a closed spool raises SpoolUnavailable; run_once treats it as a pause, not a crash."""
    spool = Spool(path, 10)
    add(spool, 1)
    spool.close()
    with pytest.raises(SpoolUnavailable):
        spool.depth()
    assert make_replayer(spool, lambda event: None).run_once() == 0


# --- set-aside events: what `chat-policy spool` does with them --------------------------------


def set_aside(spool: Spool, n: int) -> list[int]:
    """Append n events and set each aside; their ids."""
    ids = add(spool, n, prefix="bad")
    for event_id in ids:
        spool.record_failure(event_id, 99)
        spool.set_aside(event_id, f"INVALID_ARGUMENT: event {event_id}", 5000 + event_id)
    return ids


def test_set_aside_events_are_listed_and_counted(spool: Spool) -> None:
    """Set-aside events come back with every field and are counted apart from the depth."""
    add(spool, 1)
    first, second = set_aside(spool, 2)
    assert spool.set_aside_events() == [
        SetAsideEvent(
            first,
            METHOD,
            b"bad0",
            "bad-0",
            1000,
            1,
            f"INVALID_ARGUMENT: event {first}",
            5000 + first,
        ),
        SetAsideEvent(
            second,
            METHOD,
            b"bad1",
            "bad-1",
            1001,
            1,
            f"INVALID_ARGUMENT: event {second}",
            5000 + second,
        ),
    ]
    assert (spool.set_aside_count(), spool.depth()) == (2, 1)


def test_restore_puts_events_back_due_at_once_with_attempts_reset(spool: Spool) -> None:
    """Restored events wait again under their own ids, due at once, with no attempts."""
    first, second, third = set_aside(spool, 3)
    assert spool.restore([third, first]) == 2
    assert [(e.id, e.request_id, e.attempts, e.next_attempt_ms) for e in spool.oldest(10)] == [
        (first, "bad-0", 0, 0),
        (third, "bad-2", 0, 0),
    ]
    assert [event.id for event in spool.set_aside_events()] == [second]
    assert spool.restore() == 1
    assert spool.set_aside_count() == 0
    assert spool.depth() == 3


def test_drop_deletes_set_aside_events_for_good(spool: Spool) -> None:
    """Dropped events are gone from both tables; drop() without ids drops every one."""
    (waiting,) = add(spool, 1)
    first, second, third = set_aside(spool, 3)
    assert spool.drop([second]) == 1
    assert [event.id for event in spool.set_aside_events()] == [first, third]
    assert spool.drop() == 2
    assert spool.drop() == 0
    assert spool.set_aside_count() == 0
    assert [event.id for event in spool.oldest(10)] == [waiting]


def test_an_unknown_id_changes_nothing(spool: Spool) -> None:
    """Restoring or dropping an id that is not set aside (a waiting one, or none) raises
    UnknownEvents naming it, and leaves every event where it was."""
    (waiting,) = add(spool, 1)
    (first,) = set_aside(spool, 1)
    for change in (spool.restore, spool.drop):
        with pytest.raises(UnknownEvents, match=f"no set-aside event with id {waiting}, 424242"):
            change([first, 424242, waiting])
    assert [event.id for event in spool.set_aside_events()] == [first]
    assert [event.id for event in spool.oldest(10)] == [waiting]
