"""``herald hooks status`` and ``herald hooks replay`` on a SQLite workspace, and
``check-config``'s note on asyncio-only transports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.store.base import ORIGIN, DeadLetter, EventPosition
from engine.testing import in_workspace, write_config
from tests.events.sink import Request, ThreadSink

START = 1_764_657_000.0


def workspace(tmp_path: Path, url: str, extra: str = "") -> Path:
    return write_config(tmp_path, driver="file", extra=f"""
[hooks.crm]
transport = "http"
url = "{url}"
events = ["import_api", "import_file"]
batch_size = 2
{extra}""")


def record(config: Path, n: int) -> list[int]:
    """``n`` import events, one a minute from START; their ids."""

    async def go(store: Any) -> list[int]:
        db = await store.database_id("main", create=True)
        for i in range(n):
            kind = "import_api" if i % 2 else "import_file"
            await store.record_import_event(kind, START + 60 * i, db,
                                            json.dumps({"created": i}).encode())
        return [e.position.id for e in await store.hook_events(ORIGIN, 1000)]

    return in_workspace(config, go)


def status(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["--config", str(config), "hooks", "status", "--json"]) == 0
    (hook,) = json.loads(capsys.readouterr().out)
    assert isinstance(hook, dict)
    return hook


def test_status_of_a_hook_no_process_delivered_yet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = workspace(tmp_path, "http://127.0.0.1:9/hook")
    hook = status(capsys, config)
    assert hook["name"] == "crm"
    assert hook["seen"] is False
    assert hook["cursor"] is None
    assert hook["dead_letters"] == []


def test_a_hook_first_seen_after_events_starts_at_the_end_of_the_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = workspace(tmp_path, "http://127.0.0.1:9/hook")
    ids = record(config, 5)

    async def go(store: Any) -> None:
        await store.claim_hook("crm", "web1:42:abc", 600.0)
        await store.release_hook("crm", "web1:42:abc")

    in_workspace(config, go)
    hook = status(capsys, config)
    assert hook["seen"] is True
    assert hook["cursor"] == [0, ids[-1]]
    assert hook["behind"] == 0
    assert hook["owner"] == ""  # released


def test_status_of_a_failing_hook_with_dead_letters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = workspace(tmp_path, "http://127.0.0.1:9/hook")

    async def seen_first(store: Any) -> None:
        await store.claim_hook("crm", "web1:42:abc", 600.0)

    in_workspace(config, seen_first)  # the hook starts at the (empty) record's end
    ids = record(config, 5)

    async def go(store: Any) -> None:
        letter = DeadLetter(0, "crm", ORIGIN, EventPosition(0, ids[1]), 2, "HTTP 503",
                            START, START + 3 * 86400)
        assert await store.dead_letter("crm", "web1:42:abc", letter)
        assert await store.fail_hook("crm", "web1:42:abc", "POST ...: HTTP 500", START + 120)

    in_workspace(config, go)
    hook = status(capsys, config)
    assert hook["cursor"] == [0, ids[1]]
    assert hook["behind"] == 3
    assert hook["owner"] == "web1:42:abc"
    assert hook["last_error"] == "POST ...: HTTP 500"
    assert hook["failing_since"] == "2025-12-02T06:32:00.000Z"
    assert hook["dead_letter_events"] == 2
    (letter,) = hook["dead_letters"]
    assert letter["events"] == 2
    assert letter["error"] == "HTTP 503"
    assert letter["upto"] == [0, ids[1]]

    assert main(["--config", str(config), "hooks", "status"]) == 0
    out = capsys.readouterr().out
    assert "crm (http): cursor" in out
    assert "3 event(s) behind" in out
    assert "failing since 2025-12-02T06:32:00.000Z: POST ...: HTTP 500" in out
    assert "dead letters: 1 (2 events)" in out


def dead_lettered(config: Path, n: int, upto: int) -> list[int]:
    """``n`` events, of which the first ``upto`` are a dead letter of hook crm."""

    async def seen_first(store: Any) -> None:
        await store.claim_hook("crm", "web1:42:abc", 600.0)

    in_workspace(config, seen_first)
    ids = record(config, n)

    async def go(store: Any) -> None:
        letter = DeadLetter(0, "crm", ORIGIN, EventPosition(0, ids[upto - 1]), upto,
                            "HTTP 503", START, START + 100)
        assert await store.dead_letter("crm", "web1:42:abc", letter)
        await store.release_hook("crm", "web1:42:abc")

    in_workspace(config, go)
    return ids


def event_ids(requests: list[Request]) -> list[int]:
    return [int(m["event_id"]) for r in requests for m in json.loads(r.body)]


def test_replay_sends_the_dead_letters_and_drops_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadSink() as sink:
        config = workspace(tmp_path, sink.url, 'secret = "0123456789abcdef0123"')
        ids = dead_lettered(config, 5, 3)
        assert main(["--config", str(config), "hooks", "replay", "crm"]) == 0
        assert "1 dead letter(s) delivered (3 events)" in capsys.readouterr().out
        requests = sink.taken()
    assert event_ids(requests) == ids[:3]
    assert [len(json.loads(r.body)) for r in requests] == [2, 1]  # batch_size
    assert all("x-herald-signature" in r.headers for r in requests)
    assert status(capsys, config)["dead_letters"] == []


def test_a_replay_that_fails_keeps_the_letter_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadSink(lambda r: (500, b"no", 0.0)) as sink:
        config = workspace(tmp_path, sink.url)
        dead_lettered(config, 3, 2)
        assert main(["--config", str(config), "hooks", "replay", "crm"]) == 1
        assert "HTTP 500" in capsys.readouterr().err
    assert len(status(capsys, config)["dead_letters"]) == 1


def test_replay_since_sends_the_events_since_then_up_to_the_cursor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadSink() as sink:
        config = workspace(tmp_path, sink.url)
        ids = dead_lettered(config, 5, 4)  # the cursor is past event 4; 5 is still to come
        # events 3 and 4 (at START+120 and +180) again, after the letter's 1-4
        assert main(["--config", str(config), "hooks", "replay", "crm",
                     "--since", "2025-12-02T06:32:00Z"]) == 0
        out = capsys.readouterr().out
        assert "2 event(s) since 2025-12-02T06:32:00Z delivered again" in out
        assert event_ids(sink.taken()) == ids[:4] + ids[2:4]


def test_replay_of_an_unknown_hook_or_a_bad_time_is_bad_usage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = workspace(tmp_path, "http://127.0.0.1:9/hook")
    assert main(["--config", str(config), "hooks", "replay", "erp"]) == 2
    assert "no hook named 'erp' (configured: crm)" in capsys.readouterr().err
    assert main(["--config", str(config), "hooks", "replay", "crm",
                 "--since", "yesterday"]) == 2
    assert "--since: not a date" in capsys.readouterr().err


@pytest.mark.parametrize(("backend", "noted"), [("trio", True), ("asyncio", False)])
def test_check_config_notes_an_asyncio_only_transport_on_trio(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        backend: str, noted: bool) -> None:
    config = write_config(tmp_path, driver="file", extra="""
[hooks.queue]
transport = "rabbitmq"
url = "amqp://guest:guest@127.0.0.1:5672/"
exchange = "herald"
events = ["deliv_sms"]

[hooks.crm]
transport = "http"
url = "http://127.0.0.1:9/hook"
events = ["deliv_sms"]
""")
    monkeypatch.setenv("HERALD_BACKEND", backend)
    assert main(["check-config", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "ok\n"
    assert ("hooks.queue: the rabbitmq client runs only on asyncio" in captured.err) is noted
    assert "hooks.crm" not in captured.err
