"""`chat-policy spool list|replay|drop` in-process, on a real spool file in a temporary data
dir, as the adapter leaves it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapter.settings import AdapterSettings
from adapter.spool import Spool
from chat_policy_cli.main import main
from chatpolicy.v1 import group_state_service_pb2 as pb

APP = 1400000000
REASON = (
    "the policy service rejected the webhook: INVALID_ARGUMENT: event_time is 3600 s ahead"
    " of the service's clock"
)


@pytest.fixture(autouse=True)
def no_chat_policy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without CHAT_POLICY_* variables."""
    for name in list(os.environ):
        if name.startswith("CHAT_POLICY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The adapter's data dir."""
    return tmp_path / "data"


def open_spool(data_dir: Path) -> Spool:
    """The adapter's spool in `data_dir`, opened as the adapter opens it."""
    settings = AdapterSettings(data_dir=data_dir)
    return Spool(settings.spool_path, settings.spool_max_events)


def spooled_full(spool: Spool, group_id: str, topic_id: str = "") -> int:
    """Spool a RecordGroupFull of `group_id` at 2026-12-04T15:02:54.553Z; its id."""
    request = pb.RecordGroupFullRequest(sdk_app_id=APP, group_id=group_id, topic_id=topic_id)
    request.event_time.FromMilliseconds(1_796_396_574_553)
    return spool.append(
        "RecordGroupFull", request.SerializeToString(), f"req-{group_id}", 1_796_396_574_000
    )


@pytest.fixture
def ids(data_dir: Path) -> list[int]:
    """Three set-aside events (the first failed twice before) and one waiting; the set-aside
    ids."""
    spool = open_spool(data_dir)
    try:
        chosen = [spooled_full(spool, "@TGS#a", "topic-1"), spooled_full(spool, "@TGS#b")]
        chosen.append(spool.append("RecordSomethingNew", b"\xff", "req-new", 1_796_396_574_000))
        spooled_full(spool, "@TGS#waiting")
        spool.record_failure(chosen[0], 0)
        spool.record_failure(chosen[0], 0)
        for event_id in chosen:
            spool.set_aside(event_id, REASON, 1_796_396_575_000 + event_id)
    finally:
        spool.close()
    return chosen


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `chat-policy ARGV...` in-process: its exit status, stdout and stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def state(data_dir: Path) -> tuple[list[tuple[int, int]], list[int]]:
    """(id, attempts) of every waiting event, and the ids set aside."""
    spool = open_spool(data_dir)
    try:
        waiting = [(event.id, event.attempts) for event in spool.oldest(100)]
        return waiting, [event.id for event in spool.set_aside_events()]
    finally:
        spool.close()


def test_list_shows_each_set_aside_event_and_the_waiting_count(
    capsys: pytest.CaptureFixture[str], data_dir: Path, ids: list[int]
) -> None:
    """`spool list` prints a table of the set-aside events (the call decoded where it can be)
    and a line counting them and the waiting events."""
    status, out, err = run(capsys, "spool", "list", "--data-dir", str(data_dir))
    assert (status, err) == (0, "")
    a, b, new = ids
    at = "2026-12-04T15:02:54.553Z"
    events = [f"app {APP} group @TGS#a topic topic-1 at {at}", f"app {APP} group @TGS#b at {at}"]
    width = len(events[0])
    assert out.splitlines() == [
        f"ID  SET ASIDE                 METHOD              {'EVENT'.ljust(width)}  REASON",
        f"{a}   2026-12-04T15:02:55.00{a}Z  RecordGroupFull     {events[0]}  {REASON}",
        f"{b}   2026-12-04T15:02:55.00{b}Z  RecordGroupFull     {events[1].ljust(width)}  {REASON}",
        f"{new}   2026-12-04T15:02:55.00{new}Z  RecordSomethingNew  {'-'.ljust(width)}  {REASON}",
        "3 set-aside events; 1 event waiting for the policy service",
    ]


def test_list_json_holds_every_field_and_the_decoded_call(
    capsys: pytest.CaptureFixture[str], data_dir: Path, ids: list[int]
) -> None:
    """`spool list --json` is one document: each set-aside event with its call in the .proto's
    field names (null when unreadable), and the waiting count."""
    status, out, _ = run(capsys, "spool", "list", "--data-dir", str(data_dir), "--json")
    document = json.loads(out)
    assert status == 0
    assert document["waiting"] == 1
    first, _, unreadable = document["set_aside"]
    assert first == {
        "id": ids[0],
        "method": "RecordGroupFull",
        "request_id": "req-@TGS#a",
        "enqueued": "2026-12-04T15:02:54.000Z",
        "set_aside": f"2026-12-04T15:02:55.00{ids[0]}Z",
        "attempts": 2,
        "reason": REASON,
        "request": {
            "sdk_app_id": str(APP),
            "group_id": "@TGS#a",
            "topic_id": "topic-1",
            "event_time": "2026-12-04T15:02:54.553Z",
        },
    }
    assert (unreadable["method"], unreadable["request"]) == ("RecordSomethingNew", None)


def test_an_empty_spool_lists_no_set_aside_events(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing set aside, `spool list` says so in one line; the data dir comes from
    CHAT_POLICY_DATA_DIR when --data-dir is not given."""
    open_spool(data_dir).close()
    monkeypatch.setenv("CHAT_POLICY_DATA_DIR", str(data_dir))
    assert run(capsys, "spool", "list") == (
        0,
        "no set-aside events; 0 events waiting for the policy service\n",
        "",
    )


def test_replay_puts_events_back_in_the_queue_with_attempts_reset(
    capsys: pytest.CaptureFixture[str], data_dir: Path, ids: list[int]
) -> None:
    """`spool replay ID` moves the event back to the waiting ones with no attempts, and says
    the running adapter delivers them; --all moves the rest."""
    status, out, _ = run(capsys, "spool", "replay", str(ids[0]), "--data-dir", str(data_dir))
    assert status == 0
    assert out == (
        "replayed 1 set-aside event: back in the queue with attempts reset; the running"
        " adapter's replayer delivers the 2 events waiting now\n"
    )
    waiting, set_aside = state(data_dir)
    assert (ids[0], 0) in waiting
    assert set_aside == ids[1:]

    status, out, _ = run(capsys, "spool", "replay", "--all", "--data-dir", str(data_dir), "--json")
    assert (status, json.loads(out)) == (0, {"replayed": 2, "waiting": 4})
    assert state(data_dir)[1] == []


def test_drop_deletes_set_aside_events_and_says_how_many(
    capsys: pytest.CaptureFixture[str], data_dir: Path, ids: list[int]
) -> None:
    """`spool drop ID ID` and `spool drop --all` delete set-aside events, never waiting ones."""
    status, out, _ = run(
        capsys, "spool", "drop", str(ids[2]), str(ids[0]), "--data-dir", str(data_dir)
    )
    assert (status, out) == (0, "dropped 2 set-aside events\n")
    assert state(data_dir)[1] == [ids[1]]
    status, out, _ = run(capsys, "spool", "drop", "--all", "--data-dir", str(data_dir), "--json")
    assert (status, json.loads(out)) == (0, {"dropped": 1})
    waiting, set_aside = state(data_dir)
    assert (len(waiting), set_aside) == (1, [])


@pytest.mark.parametrize(("verb", "done"), [("replay", "replayed"), ("drop", "dropped")])
def test_an_unknown_id_is_exit_1_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], data_dir: Path, ids: list[int], verb: str, done: str
) -> None:
    """An id that is not set aside (a waiting event's, or none) is named on stderr, exit 1,
    and not even the known ids given with it are touched."""
    before = state(data_dir)
    waiting_id = before[0][0][0]
    status, out, err = run(
        capsys, "spool", verb, str(ids[0]), "777", str(waiting_id), "--data-dir", str(data_dir)
    )
    assert (status, out) == (1, "")
    assert err == (
        f"chat-policy spool {verb}: no set-aside event with id {waiting_id}, 777; nothing {done}\n"
    )
    assert state(data_dir) == before


@pytest.mark.parametrize("argv", [["list"], ["replay", "--all"], ["drop", "1"]])
def test_a_data_dir_without_a_spool_is_exit_2_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    """A data dir holding no spool is a configuration error naming the file it looked for."""
    status, out, err = run(capsys, "spool", *argv, "--data-dir", str(tmp_path))
    assert (status, out) == (2, "")
    assert err == (
        f"chat-policy spool {argv[0]}: no spool at {tmp_path / 'adapter-spool.db'}: is the"
        " data dir the adapter's? (--data-dir)\n"
    )
    assert not (tmp_path / "adapter-spool.db").exists()


@pytest.mark.parametrize(
    "argv",
    [["spool", "replay"], ["spool", "drop", "1", "--all"], ["spool", "drop", "x"], ["spool"]],
)
def test_replay_and_drop_need_ids_or_all(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Without IDs or --all, with both, or with an id that is no number: usage, exit 2."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().err.startswith("usage: chat-policy spool")


@pytest.mark.parametrize("verb", ["list", "replay", "drop"])
def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str], verb: str) -> None:
    """Each spool command's --help lists its exit statuses."""
    with pytest.raises(SystemExit) as raised:
        main(["spool", verb, "--help"])
    out = capsys.readouterr().out
    assert raised.value.code == 0
    assert "1  an ID is not a set-aside event: nothing was changed" in out
