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
    Spool,
    SpooledEvent,
    SpoolFull,
    SpoolUnavailable,
)

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
    """Build replayers sharing `lock_path`; all are stopped afterwards."""
    built: list[Replayer] = []

    def make(spool: Spool, deliver: Callable[[SpooledEvent], None], **options: Any) -> Replayer:
        replayer = Replayer(spool, deliver, lock_path, **options)
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


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll until condition() holds; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


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
    spool.record_failure(ids[1])
    spool.set_aside(ids[1], "INVALID_ARGUMENT: bad group", 3)
    assert spool.depth() == 2
    fifth = spool.append(METHOD, b"x", "fits-too", 4)
    with pytest.raises(SpoolFull):
        spool.append(METHOD, b"x", "too-many", 5)
    assert [event.id for event in spool.oldest(10)] == [ids[2], fourth, fifth]
    assert set_aside_rows(path) == [(ids[1], "r-1", "INVALID_ARGUMENT: bad group", 1)]


def test_record_failure_counts_attempts(spool: Spool) -> None:
    """Each recorded failure adds one to the event's attempts, and only to that event."""
    ids = add(spool, 2)
    spool.record_failure(ids[0])
    spool.record_failure(ids[0])
    spool.record_failure(999_999)
    assert [event.attempts for event in spool.oldest(10)] == [2, 0]


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


def test_retry_later_stops_at_the_failing_event_and_keeps_it(
    spool: Spool, make_replayer: MakeReplayer, caplog: pytest.LogCaptureFixture
) -> None:
    """RetryLater ends the pass at that event, counts the attempt, and a later pass delivers all."""
    caplog.set_level(logging.INFO, logger="adapter.spool")
    ids = add(spool, 4)
    failing = {ids[1]}
    delivered: list[int] = []

    def deliver(event: SpooledEvent) -> None:
        if event.id in failing:
            raise RetryLater("UNAVAILABLE: connection refused")
        delivered.append(event.id)

    replayer = make_replayer(spool, deliver)
    assert replayer.run_once() == 1
    assert replayer.run_once() == 0
    assert delivered == [ids[0]]
    assert [(event.id, event.attempts) for event in spool.oldest(10)] == [
        (ids[1], 2),
        (ids[2], 0),
        (ids[3], 0),
    ]

    failing.clear()
    assert replayer.run_once() == 3
    assert delivered == ids
    assert spool.depth() == 0
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    paused = [message for level, message in messages if level == "WARNING"]
    assert len(paused) == 1
    assert "spool replay paused" in paused[0] and "connection refused" in paused[0]
    assert ("INFO", "spool drained: delivered 4") in messages
    assert ("INFO", "spool depth=4") in messages


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
    wait_until(lambda: spool.depth() == 0)
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
    wait_until(lambda: delivered == ["first-0"])

    add(spool, 1, prefix="second")
    replayer.wake()
    wait_until(lambda: delivered == ["first-0", "second-0"])

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
