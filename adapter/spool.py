"""A durable on-disk spool of failed policy calls, and the replayer that delivers them later."""

from __future__ import annotations

import fcntl
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
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
)

_COLUMNS = "id, method, request, request_id, enqueued_ms, attempts"


class SpoolFull(Exception):
    """The spool holds its maximum number of events; nothing was added."""


class SpoolUnavailable(Exception):
    """The spool's file cannot be read or written (message says why)."""


class RetryLater(Exception):
    """Delivery failed for now (service unavailable); try again after backoff."""


class Rejected(Exception):
    """The service refused the event for good; it is set aside, never retried."""


@dataclass(frozen=True)
class SpooledEvent:
    """One spooled call: the method, its serialized request and how often delivery failed."""

    id: int
    method: str
    request: bytes
    request_id: str
    enqueued_ms: int
    attempts: int


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

    def oldest(self, limit: int) -> list[SpooledEvent]:
        """Up to `limit` waiting events, in order of acceptance."""
        with self._lock, self._translated_errors():
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM spooled_event ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [_event_from_row(row) for row in rows]

    def remove(self, event_id: int) -> None:
        """Forget a delivered event; an absent id is ignored."""
        with self._lock, self._translated_errors():
            self._db.execute("DELETE FROM spooled_event WHERE id = ?", (event_id,))

    def record_failure(self, event_id: int) -> None:
        """Count one more failed delivery attempt of the event."""
        with self._lock, self._translated_errors():
            self._db.execute(
                "UPDATE spooled_event SET attempts = attempts + 1 WHERE id = ?", (event_id,)
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

    def close(self) -> None:
        """Close the database file."""
        with self._lock, self._translated_errors():
            self._db.close()

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


def _event_from_row(row: tuple[int, str, bytes, str, int, int]) -> SpooledEvent:
    event_id, method, request, request_id, enqueued_ms, attempts = row
    return SpooledEvent(event_id, method, bytes(request), request_id, enqueued_ms, attempts)


class Replayer:
    """Delivers spooled events oldest first from the one process holding the lock file.

    Build it after fork: a lock inherited across fork would make two processes leaders.
    """

    def __init__(
        self,
        spool: Spool,
        deliver: Callable[[SpooledEvent], None],
        lock_path: Path,
        *,
        batch_size: int = 100,
        idle_s: float = 1.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        status_every_s: float = 60.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("backoff needs 0 < backoff_initial_s <= backoff_max_s")
        self._spool = spool
        self._deliver = deliver
        self._lock_path = lock_path
        self._batch_size = batch_size
        self._idle_s = idle_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._status_every_s = status_every_s
        self._lock_fd: int | None = None  # open and flocked while this process leads
        self._lock_error_logged = False
        self._pass_lock = threading.Lock()  # one pass at a time, whoever calls run_once
        self._control = threading.Lock()  # serializes start and stop
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._paused = False  # the last pass ended in RetryLater (or the spool failed)
        self._failure_streak = 0  # consecutive paused passes; sets the backoff
        self._backlog = False  # the leader has seen a non-empty spool since it last drained
        self._backlog_delivered = 0
        self._last_status = float("-inf")

    def run_once(self) -> int:
        """If this process leads, deliver until empty or a failure; how many were delivered."""
        with self._pass_lock:
            self._paused = False
            if not self._lead():
                return 0
            delivered = 0
            try:
                while not self._stopping.is_set():
                    batch = self._spool.oldest(self._batch_size)
                    if not batch:
                        self._drained()
                        break
                    self._report_depth()
                    for event in batch:
                        if self._stopping.is_set():
                            break
                        if self._deliver_one(event):
                            delivered += 1
                            self._backlog_delivered += 1
                        self._failure_streak = 0
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
                self._stopping.wait(random.uniform(0, self._backoff_s()))
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

    def _deliver_one(self, event: SpooledEvent) -> bool:
        """Deliver one event: True if delivered, False if set aside; RetryLater to pause."""
        try:
            self._deliver(event)
        except RetryLater as error:
            self._spool.record_failure(event.id)
            raise RetryLater(f"{_describe(event)}: {error}") from error
        except Rejected as error:
            reason = str(error)
            self._spool.set_aside(event.id, reason, int(time.time() * 1000))
            log.error(
                "spool event %d set aside: %s rejected: %s",
                event.id,
                event.method,
                reason,
                extra={"request_id": event.request_id},
            )
            return False
        except Exception as error:
            log.exception(
                "spool delivery of %s failed unexpectedly",
                _describe(event),
                extra={"request_id": event.request_id},
            )
            self._spool.record_failure(event.id)
            raise RetryLater(f"{_describe(event)}: {type(error).__name__}: {error}") from error
        self._spool.remove(event.id)
        return True

    def _pause(self, error: Exception) -> None:
        self._paused = True
        if self._failure_streak == 0:
            log.warning("spool replay paused: %s, retrying with backoff", error)
        self._failure_streak += 1

    def _backoff_s(self) -> float:
        exponent = min(max(self._failure_streak - 1, 0), 32)
        return float(min(self._backoff_max_s, self._backoff_initial_s * 2**exponent))

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


def _describe(event: SpooledEvent) -> str:
    return f"event {event.id} ({event.method}, request_id={event.request_id})"
