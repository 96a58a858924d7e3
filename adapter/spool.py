"""A durable on-disk spool of failed policy calls, and the replayer that delivers them later.

Each waiting event has its own next attempt time: one event the service keeps failing backs
off alone while the events behind it are delivered. Events the service refuses for good are
set aside for an operator (`chat-policy spool`), who can put them back in the queue or drop
them.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Schema versions, applied in order; PRAGMA user_version records how many have run.
MIGRATIONS = (
    """
    CREATE TABLE spooled_event (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        method TEXT NOT NULL,
        request BLOB NOT NULL,
        request_id TEXT NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL
    );
    CREATE TABLE set_aside_event (
        id INTEGER PRIMARY KEY,
        method TEXT NOT NULL,
        request BLOB NOT NULL,
        request_id TEXT NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        reason TEXT NOT NULL,
        set_aside_ms INTEGER NOT NULL
    );
    """,
    # Per-event backoff: an event is tried again once the clock reaches its next_attempt_ms
    # (Unix ms; 0, the value of events spooled before this, is due at once).
    """
    ALTER TABLE spooled_event ADD COLUMN next_attempt_ms INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX spooled_event_next_attempt ON spooled_event (next_attempt_ms);
    """,
)

# The columns both tables share.
_COLUMNS = "id, method, request, request_id, enqueued_ms, attempts"


class SpoolFull(Exception):
    """The spool holds its maximum number of events; nothing was added."""


class SpoolUnavailable(Exception):
    """The spool's file cannot be read or written (message says why)."""


class RetryLater(Exception):
    """Delivery failed for now (service unavailable); try again after backoff."""


class Rejected(Exception):
    """The service refused the event for good; it is set aside until an operator acts."""


class UnknownEvents(Exception):
    """Some ids given are not set-aside events (`ids`, sorted); nothing was changed."""

    def __init__(self, ids: Collection[int]) -> None:
        self.ids = sorted(ids)
        super().__init__(f"no set-aside event with id {', '.join(map(str, self.ids))}")


@dataclass(frozen=True)
class SpooledEvent:
    """One spooled call: the method, its serialized request, how often delivery failed and
    when it is due again (Unix ms; 0: at once)."""

    id: int
    method: str
    request: bytes
    request_id: str
    enqueued_ms: int
    attempts: int
    next_attempt_ms: int = 0


@dataclass(frozen=True)
class SetAsideEvent:
    """An event the service refused for good: the spooled call, why, and when (Unix ms)."""

    id: int
    method: str
    request: bytes
    request_id: str
    enqueued_ms: int
    attempts: int
    reason: str
    set_aside_ms: int


class Spool:
    """Events waiting for redelivery, in one SQLite file shared by processes and threads."""

    def __init__(self, path: Path, max_events: int) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self._path = path
        self._max_events = max_events
        self._lock = threading.Lock()
        with self._translated_errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        try:
            with self._translated_errors():
                self._db.execute("PRAGMA busy_timeout=5000")
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL fsyncs the WAL on every commit: an appended event survives power loss.
                self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def append(self, method: str, request: bytes, request_id: str, now_ms: int) -> int:
        """Add an event, on disk before returning; its id. SpoolFull when at the maximum."""
        with self._transaction():
            (depth,) = self._db.execute("SELECT count(*) FROM spooled_event").fetchone()
            if depth >= self._max_events:
                raise SpoolFull(f"spool {self._path} holds {depth} events (max {self._max_events})")
            cursor = self._db.execute(
                "INSERT INTO spooled_event (method, request, request_id, enqueued_ms, attempts)"
                " VALUES (?, ?, ?, ?, 0)",
                (method, request, request_id, now_ms),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def oldest(self, limit: int, due_by_ms: int | None = None) -> list[SpooledEvent]:
        """Up to `limit` waiting events in order of acceptance; with `due_by_ms`, only those
        whose next attempt is due by then."""
        due = "" if due_by_ms is None else "WHERE next_attempt_ms <= ?"
        parameters = () if due_by_ms is None else (due_by_ms,)
        with self._lock, self._translated_errors():
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, next_attempt_ms FROM spooled_event {due} ORDER BY id LIMIT ?",
                (*parameters, limit),
            ).fetchall()
        return [_event_from_row(row) for row in rows]

    def remove(self, event_id: int) -> None:
        """Forget a delivered event; an absent id is ignored."""
        with self._lock, self._translated_errors():
            self._db.execute("DELETE FROM spooled_event WHERE id = ?", (event_id,))

    def record_failure(self, event_id: int, next_attempt_ms: int) -> None:
        """Count one more failed delivery attempt of the event; try it again at
        `next_attempt_ms` (Unix ms)."""
        with self._lock, self._translated_errors():
            self._db.execute(
                "UPDATE spooled_event SET attempts = attempts + 1, next_attempt_ms = ?"
                " WHERE id = ?",
                (next_attempt_ms, event_id),
            )

    def make_due(self, event_ids: Collection[int]) -> None:
        """Make waiting events due at once (their attempts stay counted)."""
        with self._lock, self._translated_errors():
            self._db.executemany(
                "UPDATE spooled_event SET next_attempt_ms = 0 WHERE id = ?",
                [(event_id,) for event_id in event_ids],
            )

    def set_aside(self, event_id: int, reason: str, now_ms: int) -> None:
        """Move the event, in one transaction, to set_aside_event for an operator."""
        with self._transaction():
            self._db.execute(
                f"INSERT INTO set_aside_event ({_COLUMNS}, reason, set_aside_ms)"
                f" SELECT {_COLUMNS}, ?, ? FROM spooled_event WHERE id = ?",
                (reason, now_ms, event_id),
            )
            self._db.execute("DELETE FROM spooled_event WHERE id = ?", (event_id,))

    def depth(self) -> int:
        """How many events wait for delivery (set-aside events not counted)."""
        with self._lock, self._translated_errors():
            (depth,) = self._db.execute("SELECT count(*) FROM spooled_event").fetchone()
        return int(depth)

    def set_aside_count(self) -> int:
        """How many events are set aside now."""
        with self._lock, self._translated_errors():
            (count,) = self._db.execute("SELECT count(*) FROM set_aside_event").fetchone()
        return int(count)

    def set_aside_events(self) -> list[SetAsideEvent]:
        """Every set-aside event, in order of acceptance."""
        with self._lock, self._translated_errors():
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, reason, set_aside_ms FROM set_aside_event ORDER BY id"
            ).fetchall()
        return [
            SetAsideEvent(event_id, method, bytes(request), *rest)
            for event_id, method, request, *rest in rows
        ]

    def restore(self, ids: Collection[int] | None = None) -> int:
        """Put set-aside events (`ids`, or all) back in the queue, due at once with attempts
        reset; how many. UnknownEvents, and nothing restored, if an id is not set aside.

        The spool's maximum does not apply: these events were accepted long ago.
        """
        with self._transaction():
            chosen = self._set_aside_ids(ids)
            self._db.executemany(
                f"INSERT INTO spooled_event ({_COLUMNS}, next_attempt_ms)"
                " SELECT id, method, request, request_id, enqueued_ms, 0, 0"
                " FROM set_aside_event WHERE id = ?",
                [(event_id,) for event_id in chosen],
            )
            self._db.executemany(
                "DELETE FROM set_aside_event WHERE id = ?", [(event_id,) for event_id in chosen]
            )
        return len(chosen)

    def drop(self, ids: Collection[int] | None = None) -> int:
        """Delete set-aside events (`ids`, or all) for good; how many. UnknownEvents, and
        nothing deleted, if an id is not set aside."""
        with self._transaction():
            chosen = self._set_aside_ids(ids)
            self._db.executemany(
                "DELETE FROM set_aside_event WHERE id = ?", [(event_id,) for event_id in chosen]
            )
        return len(chosen)

    def close(self) -> None:
        """Close the database file."""
        with self._lock, self._translated_errors():
            self._db.close()

    def _set_aside_ids(self, ids: Collection[int] | None) -> list[int]:
        """`ids` (or every set-aside id), checked to be set aside; inside a transaction."""
        present = {row[0] for row in self._db.execute("SELECT id FROM set_aside_event")}
        if ids is None:
            return sorted(present)
        missing = set(ids) - present
        if missing:
            raise UnknownEvents(missing)
        return sorted(set(ids))

    def _migrate(self) -> None:
        with self._transaction():
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Hold the lock and an IMMEDIATE transaction; commit on success, else roll back."""
        with self._lock, self._translated_errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            raise SpoolUnavailable(f"spool {self._path}: {error}") from error


def _event_from_row(row: tuple[int, str, bytes, str, int, int, int]) -> SpooledEvent:
    event_id, method, request, request_id, enqueued_ms, attempts, next_attempt_ms = row
    return SpooledEvent(
        event_id, method, bytes(request), request_id, enqueued_ms, attempts, next_attempt_ms
    )


class Replayer:
    """Delivers spooled events from the one process holding the lock file.

    A pass tries every event that is due, oldest first. An event that fails for now is tried
    again after its own backoff, and the pass goes on to the next one: the order does not
    matter, since the service applies each event once and orders them by EventTime. When
    `pause_after_failures` events in a row fail, `service_answers` (a health check) tells
    an outage from events that fail alone: if the service answers, the pass goes on; if not,
    the events of that run are made due again (the outage failed them, not their content),
    the pass stops, and the next one waits the replayer's backoff, which grows while passes
    keep stopping so. After an outage, then, every event is tried on the first pass that
    finds the service back. Backoffs double from `backoff_initial_s` to `backoff_max_s`.

    Build it after fork: a lock inherited across fork would make two processes leaders.
    """

    def __init__(
        self,
        spool: Spool,
        deliver: Callable[[SpooledEvent], None],
        service_answers: Callable[[], bool],
        lock_path: Path,
        *,
        batch_size: int = 100,
        idle_s: float = 1.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        pause_after_failures: int = 3,
        status_every_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("backoff needs 0 < backoff_initial_s <= backoff_max_s")
        if pause_after_failures < 1:
            raise ValueError(f"pause_after_failures must be at least 1, not {pause_after_failures}")
        self._spool = spool
        self._deliver = deliver
        self._service_answers = service_answers
        self._lock_path = lock_path
        self._batch_size = batch_size
        self._idle_s = idle_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._pause_after_failures = pause_after_failures
        self._status_every_s = status_every_s
        self._clock = clock
        self._lock_fd: int | None = None  # open and flocked while this process leads
        self._lock_error_logged = False
        self._pass_lock = threading.Lock()  # one pass at a time, whoever calls run_once
        self._control = threading.Lock()  # serializes start and stop
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._paused = False  # the last pass stopped: the service looks away, or the spool failed
        self._failure_streak = 0  # consecutive paused passes; sets the replayer's backoff
        self._last_failure = ""  # which event failed for now, and why
        self._backlog = False  # the leader has seen a non-empty spool since it last drained
        self._backlog_delivered = 0
        self._last_status = float("-inf")

    def run_once(self) -> int:
        """If this process leads, try every due event once, unless the service looks away
        (then the pass stops); how many were delivered."""
        with self._pass_lock:
            self._paused = False
            if not self._lead():
                return 0
            # Fixed for the pass: an event that fails now is not due again before it ends.
            now_ms = self._now_ms()
            delivered = 0
            failed_in_a_row: list[int] = []
            try:
                while not self._stopping.is_set():
                    batch = self._spool.oldest(self._batch_size, due_by_ms=now_ms)
                    if not batch:
                        if self._backlog and self._spool.depth() == 0:
                            self._drained()
                        break
                    self._report_depth()
                    for event in batch:
                        if self._stopping.is_set():
                            break
                        outcome = self._deliver_one(event)
                        if outcome is _Outcome.RETRY_LATER:
                            failed_in_a_row.append(event.id)
                            if len(failed_in_a_row) >= self._pause_after_failures:
                                self._stop_if_away(failed_in_a_row)
                                failed_in_a_row = []
                            continue
                        failed_in_a_row = []
                        self._failure_streak = 0
                        if outcome is _Outcome.DELIVERED:
                            delivered += 1
                            self._backlog_delivered += 1
            except (RetryLater, SpoolUnavailable) as error:
                self._pause(error)
            return delivered

    def start(self) -> None:
        """Start the replay thread (a daemon); does nothing if it is running."""
        with self._control:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="spool-replayer", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the replay thread, wait for it, and give up the leader lock."""
        with self._control:
            self._stopping.set()
            self._wake.set()
            thread, self._thread = self._thread, None
            if thread is not None:
                thread.join(timeout_s)
                if thread.is_alive():
                    self._thread = thread
                    log.warning("spool replayer did not stop within %.1f s", timeout_s)
                    return
            with self._pass_lock:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock: another process may lead
                    self._lock_fd = None
            self._stopping.clear()

    def wake(self) -> None:
        """End an idle wait now (after a local append); a backoff wait is not cut short."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception:  # a bug here must not end replay for good
                log.exception("spool replay pass failed")
                self._paused = True
                self._failure_streak += 1
            if self._paused:
                # While the service is down an append means its call just failed: keep backing off.
                self._stopping.wait(self._backoff(self._failure_streak))
            else:
                self._wake.wait(self._idle_s)

    def _lead(self) -> bool:
        """Whether this process leads, taking the lock if it is free."""
        if self._lock_fd is not None:
            return True
        fd = None
        try:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if fd is not None:
                os.close(fd)
            if not isinstance(error, BlockingIOError) and not self._lock_error_logged:
                log.warning("spool replay lock %s unusable: %s", self._lock_path, error)
                self._lock_error_logged = True
            return False
        self._lock_fd = fd
        self._lock_error_logged = False
        log.info("spool replayer: process %d now leads replay", os.getpid())
        return True

    def _deliver_one(self, event: SpooledEvent) -> _Outcome:
        """Deliver one event; remove it, set it aside, or back it off as the outcome says."""
        try:
            self._deliver(event)
        except RetryLater as error:
            self._back_off(event, str(error))
            return _Outcome.RETRY_LATER
        except Rejected as error:
            reason = str(error)
            self._spool.set_aside(event.id, reason, self._now_ms())
            log.error(
                "spool event %d set aside: %s rejected: %s",
                event.id,
                event.method,
                reason,
                extra={"request_id": event.request_id},
            )
            return _Outcome.SET_ASIDE
        except Exception as error:
            log.exception(
                "spool delivery of %s failed unexpectedly",
                _describe(event),
                extra={"request_id": event.request_id},
            )
            self._back_off(event, f"{type(error).__name__}: {error}")
            return _Outcome.RETRY_LATER
        self._spool.remove(event.id)
        return _Outcome.DELIVERED

    def _stop_if_away(self, failed: list[int]) -> None:
        """After a run of failed events: RetryLater if the service does not answer its health
        check, with those events due again; else the pass goes on (they failed alone)."""
        if self._service_answers():
            return
        self._spool.make_due(failed)
        raise RetryLater(
            f"{len(failed)} events in a row failed and the service's health check fails,"
            f" the latest {self._last_failure}"
        )

    def _back_off(self, event: SpooledEvent, why: str) -> None:
        """Count the failed attempt and set the event's next one; log it at the 10th, 100th,
        ... failure of the event (one that keeps failing while others pass)."""
        attempts = event.attempts + 1
        delay_s = self._backoff(attempts)
        self._spool.record_failure(event.id, self._now_ms() + max(1, round(delay_s * 1000)))
        self._last_failure = f"{_describe(event)}: {why}"
        if attempts >= 10 and attempts == 10 ** (len(str(attempts)) - 1):
            log.warning(
                "spool %s failed (%d attempts so far): %s; next attempt in %.1f s",
                _describe(event),
                attempts,
                why,
                delay_s,
                extra={"request_id": event.request_id},
            )

    def _pause(self, error: Exception) -> None:
        self._paused = True
        if self._failure_streak == 0:
            log.warning("spool replay paused: %s, retrying with backoff", error)
        self._failure_streak += 1

    def _backoff(self, failures: int) -> float:
        """The wait after `failures` failures in a row: doubling from the initial backoff to
        the maximum, then jittered down by up to half, so retries spread out yet grow."""
        exponent = min(max(failures - 1, 0), 32)
        ceiling = float(min(self._backoff_max_s, self._backoff_initial_s * 2**exponent))
        return random.uniform(ceiling / 2, ceiling)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _report_depth(self) -> None:
        self._backlog = True
        now = time.monotonic()
        if now - self._last_status >= self._status_every_s:
            self._last_status = now
            depth = self._spool.depth()
            if depth:
                log.info("spool depth=%d", depth)

    def _drained(self) -> None:
        self._failure_streak = 0
        if self._backlog:
            log.info("spool drained: delivered %d", self._backlog_delivered)
            self._backlog = False
            self._backlog_delivered = 0
            self._last_status = float("-inf")


class _Outcome(enum.Enum):
    """What became of one delivery attempt."""

    DELIVERED = enum.auto()
    SET_ASIDE = enum.auto()
    RETRY_LATER = enum.auto()


def _describe(event: SpooledEvent) -> str:
    return f"event {event.id} ({event.method}, request_id={event.request_id})"
