"""JSON log lines: their shape, the request ID they carry, and gunicorn's lines among them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from adapter.gunicorn_app import AdapterApplication, GunicornLogger
from adapter.settings import AdapterSettings
from chat_policy_shared import logs


class Stdout:
    """The process's logging as logs.configure sets it up, read back from captured stdout."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        logs.configure()  # in the test's own phase, so the handler writes to capsys' stdout

    def lines(self) -> list[dict[str, object]]:
        """Every line written so far, parsed as JSON (each line must be one document)."""
        return [json.loads(line) for line in self._capsys.readouterr().out.splitlines()]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_line_is_one_json_document_with_time_level_logger_and_extras(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    """A record becomes one line of JSON: UTC time, level, logger, pid, message and extras."""
    stdout = Stdout(capsys)
    logging.getLogger("chat.test").warning("hello %s", "wörld", extra={"outcome": "recorded"})
    (line,) = stdout.lines()
    assert line["level"] == "WARNING"
    assert line["logger"] == "chat.test"
    assert line["message"] == "hello wörld"
    assert line["outcome"] == "recorded"
    assert isinstance(line["pid"], int)
    assert isinstance(line["time"], str) and line["time"].endswith("Z")
    assert "request_id" not in line


def test_lines_logged_while_serving_carry_the_request_id(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    """Inside logs.serving every line has the request ID; after it, none does."""
    stdout = Stdout(capsys)
    log = logging.getLogger("chat.test")
    with logs.serving("req-1"):
        log.info("inside")
        log.info("given", extra={"request_id": "explicit"})
    log.info("outside")
    inside, given, outside = stdout.lines()
    assert inside["request_id"] == "req-1"
    assert given["request_id"] == "explicit"
    assert "request_id" not in outside


def test_a_traceback_stays_inside_its_line(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    """An exception's traceback is a field of the line, not lines of its own."""
    stdout = Stdout(capsys)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("chat.test").exception("failed")
    (line,) = stdout.lines()
    assert "ValueError: boom" in str(line["exc_info"])


def test_the_time_is_utc_with_milliseconds_across_seconds() -> None:
    """Each line's time is its record's own, also when lines of two seconds interleave."""
    formatter = logs.JsonFormatter()
    record = logging.makeLogRecord({"msg": "tick"})
    times = []
    for created in (1_700_000_000.25, 1_700_000_001.999, 1_700_000_000.5):
        record.created = created
        times.append(json.loads(formatter.format(record))["time"])
    assert times == [
        "2023-11-14T22:13:20.250Z",
        "2023-11-14T22:13:21.999Z",
        "2023-11-14T22:13:20.500Z",
    ]


def test_any_extra_value_still_makes_one_json_line() -> None:
    """Values JSON has no type for are written as text, and integers past 64 bits in full."""
    extra = {"big": 2**70, "object": object(), "keys": {1: "one"}, "items": ("a", "é")}
    record = logging.makeLogRecord({"msg": "odd values %s", "args": ("ok",), **extra})
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "odd values ok"
    assert line["big"] == 2**70
    assert str(line["object"]).startswith("<object object at")
    assert line["keys"] == {"1": "one"}
    assert line["items"] == ["a", "é"]


def test_gunicorn_lines_go_through_the_json_handler(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    """gunicorn's error log is JSON like every line; its access log, with Sign in it, is off."""
    stdout = Stdout(capsys)
    application = AdapterApplication(AdapterSettings())
    gunicorn_log = GunicornLogger(application.cfg)
    gunicorn_log.info("Booting worker with pid: %s", 42)
    gunicorn_log.access(None, None, {}, None)  # would fail if it formatted an access line
    (line,) = stdout.lines()
    assert (line["logger"], line["message"]) == ("gunicorn.error", "Booting worker with pid: 42")


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123_x.y:z", True), ("", False), (None, False), ("a b", False), ("x" * 129, False)],
)
def test_only_short_safe_request_ids_are_accepted(given: str | None, kept: bool) -> None:
    """A caller's request ID is kept if it is 1-128 safe characters, else replaced."""
    accepted = logs.accepted_request_id(given)
    assert (accepted == given) is kept
    assert len(accepted) <= 128 and " " not in accepted
