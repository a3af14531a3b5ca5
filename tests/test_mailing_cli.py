"""``herald mailing ...`` end to end, in-process (``engine.cli.main``) on a workspace whose
gateway writes every SMS to ``sent.jsonl``: create (of every kind, with schedules and
options), list, show, start, pause, resume, cancel, test and pick, and their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.cli import main
from engine.cli.mailings import duration
from engine.cluster.worker import Worker
from engine.demo import generate
from engine.runner import Herald
from engine.service import MailingService, MailingSpec, TriggerRequest
from engine.store.base import Store
from engine.testing import FakeGateway, in_workspace, write_config

PEOPLE = 20
PHONES = [f"+4479111234{i:02d}" for i in range(PEOPLE)]


class Cli:
    """``herald --config WS/herald.toml ...`` in this process: (exit code, stdout, stderr)."""

    def __init__(self, ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.ws = ws
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--config", str(self.ws / "herald.toml"), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, (args, out, err)
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def create(self, *args: str, template: str = "a.txt") -> int:
        return int(self.ok("mailing", "create", "--name", "m", "--resource", "news",
                           "--database", "main", "--template", template, *args).strip())

    def sent(self) -> list[dict[str, Any]]:
        path = self.ws / "sent.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def store(self, action: Any) -> Any:
        return in_workspace(self.ws / "herald.toml", action)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A workspace with PEOPLE subscribed profiles in database ``main`` and templates, the
    current directory (file names are given as a user would)."""
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, driver="file")
    rows = "".join(f"{p},P{i}\n" for i, p in enumerate(PHONES))
    (tmp_path / "people.csv").write_text("phone,_fname\n" + rows, encoding="utf-8")
    (tmp_path / "a.txt").write_text("A for {lead._fname}\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("B for {lead._fname}\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_text("Hi {lead._fname\n", encoding="utf-8")
    c = Cli(tmp_path, capsys)
    c.ok("import", "profiles", "people.csv", "--database", "main", "--resource", "news")
    return c


# -- create and its errors ----------------------------------------------------------------


def test_a_broadcast_is_created_as_a_draft_started_by_hand_and_shown_with_its_run(
    cli: Cli,
) -> None:
    mailing_id = cli.create("--kind", "broadcast")
    view = cli.json("mailing", "show", str(mailing_id))
    assert (view["kind"], view["state"], view["launches"]) == ("broadcast", "draft", [])
    (log,) = cli.json("mailing", "start", str(mailing_id))
    assert (log["status"], log["sent"], log["mailing_id"]) == ("finished", PEOPLE, mailing_id)
    assert sorted(m["to"] for m in cli.sent()) == PHONES
    view = cli.json("mailing", "show", str(mailing_id))
    (run,) = view["launches"]
    assert (run["phase"], run["status"], run["recipients"], run["sent"]) == (
        "launch", "finished", PEOPLE, PEOPLE)
    text = cli.ok("mailing", "show", str(mailing_id))
    assert f"mailing {mailing_id} 'm': broadcast" in text
    assert f"{run['id']:>6}  launch" in text
    code, _, err = cli("mailing", "start", str(mailing_id))  # a broadcast goes once
    assert code == 2 and err.startswith("herald: "), err


def test_a_scheduled_broadcast_shows_its_next_launch_in_its_time_zone(cli: Cli) -> None:
    mailing_id = cli.create("--kind", "broadcast", "--at", "2036-12-24T10:00",
                            "--timezone", "Europe/Moscow")
    view = cli.json("mailing", "show", str(mailing_id))
    assert view["state"] == "scheduled"
    assert view["next_launch_at"] == "2036-12-24T10:00:00+03:00"
    assert view["options"]["schedule"] == {"at": "2036-12-24T10:00",
                                           "timezone": "Europe/Moscow"}
    (row,) = cli.json("mailing", "list")["mailings"]
    assert (row["id"], row["state"], row["run_status"]) == (mailing_id, "scheduled", None)
    assert "2036-12-24 10:00 MSK" in cli.ok("mailing", "list")


@pytest.mark.parametrize(("args", "says"), [
    pytest.param(["--kind", "broadcast", "--template", "nope.txt"],
                 "nope.txt: cannot read the template", id="missing-template"),
    pytest.param(["--kind", "broadcast", "--template", "a.txt", "--template", "b.txt"],
                 "several are for --kind multivariate only", id="two-templates-broadcast"),
    pytest.param(["--kind", "broadcast", "--template", "a.txt", "--template", "bad.txt",
                  "--kind", "multivariate"], "bad.txt:1:", id="bad-second-template"),
    pytest.param(["--kind", "multivariate", "--template", "a.txt", "--wait", "2 weeks"],
                 "--wait", id="bad-duration"),
    pytest.param(["--kind", "broadcast", "--template", "a.txt", "--control", "120"],
                 "--control", id="bad-percent"),
    pytest.param(["--kind", "broadcast", "--template", "a.txt", "--database", "main",
                  "--segment", "x"], "not allowed with argument", id="two-audiences"),
])
def test_bad_create_options_exit_2_and_say_what(cli: Cli, args: list[str], says: str) -> None:
    base = ["mailing", "create", "--name", "m", "--resource", "news"]
    if "--segment" not in args:
        base += ["--database", "main"]
    try:
        code, _, err = cli(*base, *args)
    except SystemExit as exit_:  # argparse's own refusal
        code, err = int(exit_.code or 0), cli.capsys.readouterr().err
    assert code == 2, err
    assert says in err
    assert cli.json("mailing", "list")["mailings"] == []


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("5s", 5), ("90m", 5400), ("2h", 7200), ("1d", 86400), ("1.5h", 5400),
])
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


def test_unknown_mailings_exit_2(cli: Cli) -> None:
    for command in ("show", "start", "pause", "resume", "cancel"):
        code, _, err = cli("mailing", command, "99")
        assert code == 2, (command, err)
        assert "99" in err


# -- regular mailings, pause, resume, cancel ------------------------------------------------


def test_a_regular_mailing_keeps_a_run_per_launch_until_cancelled(cli: Cli) -> None:
    mailing_id = cli.create("--kind", "regular", "--schedule", "0 10 * * MON#1",
                            "--timezone", "Europe/Moscow", "--control", "10")
    view = cli.json("mailing", "show", str(mailing_id))
    assert view["state"] == "scheduled" and view["next_launch_at"].endswith("10:00:00+03:00")
    assert view["options"]["control"] == 10
    for _ in range(2):  # start: a launch now, the schedule goes on
        (log,) = cli.json("mailing", "start", str(mailing_id))
        assert log["status"] == "finished"
    view = cli.json("mailing", "show", str(mailing_id))
    assert [r["status"] for r in view["launches"]] == ["finished", "finished"]
    assert view["state"] == "scheduled"
    for run in view["launches"]:  # the control group: skipped, counted, the same each time
        assert run["control"] + run["sent"] == PEOPLE
    assert view["launches"][0]["control"] == view["launches"][1]["control"]

    said = cli.ok("mailing", "pause", str(mailing_id))
    assert "no more launches" in said
    view = cli.json("mailing", "show", str(mailing_id))
    assert (view["state"], view["next_launch"]) == ("draft", None)
    assert "scheduled again" in cli.ok("mailing", "resume", str(mailing_id))
    assert cli.json("mailing", "show", str(mailing_id))["state"] == "scheduled"

    assert "cancelled" in cli.ok("mailing", "cancel", str(mailing_id))
    view = cli.json("mailing", "show", str(mailing_id))
    assert (view["state"], view["next_launch"]) == ("cancelled", None)
    code, _, err = cli("mailing", "start", str(mailing_id))
    assert code == 2 and "cancelled" in err


def _live_run_of_this_process(cli: Cli, mailing_id: int) -> int:
    async def go(store: Store) -> int:
        return (await store.start_run(mailing_id)).id  # marked running by this process

    run_id: int = cli.store(go)
    return run_id


def test_a_run_live_in_another_process_is_not_touched(cli: Cli) -> None:
    """On one machine the CLI cannot stop another process's run: it says whose, and
    where to stop it, and changes nothing."""
    mailing_id = cli.create("--kind", "broadcast")
    run_id = _live_run_of_this_process(cli, mailing_id)
    script = (f"import sys; from engine.cli import main; sys.exit(main(['--config',"
              f" {str(cli.ws / 'herald.toml')!r}, 'mailing', sys.argv[1], '{mailing_id}']))")
    for command in ("pause", "cancel", "resume"):
        proc = subprocess.run([sys.executable, "-c", script, command], capture_output=True,
                              text=True, check=False, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert f"run {run_id} is live in process" in proc.stderr
        assert f"POST /api/v1/mailings/{mailing_id}/{command}" in proc.stderr
    view = cli.json("mailing", "show", str(mailing_id))
    assert view["state"] == "draft"
    assert [r["status"] for r in view["launches"]] == ["running"]


def test_an_interrupted_run_is_resumed_to_its_end_or_cancelled(cli: Cli) -> None:
    async def interrupt(store: Store, mailing_id: int) -> int:
        run = await store.start_run(mailing_id)
        await store.set_run_status(run.id, "interrupted")
        return run.id

    first = cli.create("--kind", "broadcast")
    cli.store(lambda store: interrupt(store, first))
    (log,) = cli.json("mailing", "resume", str(first))
    assert (log["status"], log["sent"]) == ("finished", PEOPLE)

    second = cli.create("--kind", "broadcast")
    run_id = cli.store(lambda store: interrupt(store, second))
    assert f"run {run_id} cancelled" in cli.ok("mailing", "cancel", str(second))
    view = cli.json("mailing", "show", str(second))
    assert (view["state"], view["launches"][0]["status"]) == ("cancelled", "cancelled")
    code, _, err = cli("mailing", "cancel", str(second))
    assert code == 2 and "nothing to cancel" in err
    assert len(cli.sent()) == PEOPLE  # only the resumed one sent


def test_pause_of_a_mailing_that_is_not_running_exits_2(cli: Cli) -> None:
    mailing_id = cli.create("--kind", "broadcast")
    code, _, err = cli("mailing", "pause", str(mailing_id))
    assert code == 2 and f"mailing {mailing_id} is not running" in err


@pytest.mark.anyio
async def test_a_trigger_mailing_made_here_takes_calls_when_serve_starts(cli: Cli) -> None:
    code, out, err = await anyio.to_thread.run_sync(
        cli, "mailing", "create", "--name", "t", "--kind", "trigger", "--resource", "news",
        "--database", "main", "--template", "a.txt")
    assert code == 0, err
    assert "takes calls in `herald serve`" in err
    async with await Herald.open(cli.ws / "herald.toml") as herald, \
            MailingService.running(herald) as service:
        (answer,) = await service.trigger(int(out), [TriggerRequest(phone=PHONES[3])])
        assert answer.message_id is not None, answer
        await _until(lambda: len(cli.sent()) == 1, 10)
    assert cli.sent()[0]["text"] == "A for P3"


# -- tests and variants -------------------------------------------------------------------


def test_test_sends_every_variant_to_each_phone_and_is_listed_apart(cli: Cli) -> None:
    mailing_id = cli.create("--kind", "multivariate", "--template", "b.txt",
                            "--test-share", "100")
    out = cli.ok("mailing", "test", str(mailing_id), "--to", "+447700900001",
                 "--to", "+447700900002")
    lines = out.splitlines()
    assert len(lines) == 4, out  # one per message: 2 variants x 2 phones
    assert {("variant 1" in line, "variant 2" in line) for line in lines} == {
        (True, False), (False, True)}
    texts = sorted(m["text"] for m in cli.sent())
    assert texts == ["A for P0", "A for P0", "B for P0", "B for P0"]
    view = cli.json("mailing", "show", str(mailing_id))
    assert view["launches"] == [] and len(view["tests"]) == 2
    assert view["state"] == "draft"  # works before the mailing is ever started
    assert {t["variant"] for t in view["tests"]} == {1, 2}
    assert "tests (mailing test" in cli.ok("mailing", "show", str(mailing_id))


def test_a_plain_split_sends_each_profile_one_variant(cli: Cli) -> None:
    mailing_id = cli.create("--kind", "multivariate", "--template", "b.txt",
                            "--test-share", "100")
    logs = cli.json("mailing", "start", str(mailing_id))
    assert len(logs) == 2 and all(log["status"] == "finished" for log in logs)
    sent = cli.sent()
    assert sorted(m["to"] for m in sent) == PHONES  # each profile exactly once
    assert {m["text"][0] for m in sent} == {"A", "B"}
    view = cli.json("mailing", "show", str(mailing_id))
    assert [(r["phase"], r["variant"]) for r in view["launches"]] == [("test", 1), ("test", 2)]
    assert view["winner"] is None
    assert view["templates"] == ["A for {lead._fname}", "B for {lead._fname}"]
    text = cli.ok("mailing", "show", str(mailing_id))
    assert "variant 2  B for {lead._fname}" in text
    assert "100% (a plain split, no winner)" in text


def test_a_manual_winner_waits_for_pick(cli: Cli) -> None:
    mailing_id = cli.create("--kind", "multivariate", "--template", "b.txt",
                            "--test-share", "50", "--winner", "manual")
    code, _, err = cli("mailing", "start", str(mailing_id))
    assert code == 0, err
    assert f"herald mailing pick {mailing_id} --variant N" in err
    view = cli.json("mailing", "show", str(mailing_id))
    assert view["state"] == "waiting"
    tested = len(cli.sent())
    assert 0 < tested < PEOPLE
    code, _, err = cli("mailing", "pick", str(mailing_id), "--variant", "3")
    assert code == 2, err
    cli.ok("mailing", "pick", str(mailing_id), "--variant", "2")
    view = cli.json("mailing", "show", str(mailing_id))
    assert view["winner"] == 2
    sent = cli.sent()
    assert sorted(m["to"] for m in sent) == PHONES
    assert all(m["text"].startswith("B") for m in sent[tested:])


# -- on a cluster ---------------------------------------------------------------------------

async def _until(check: Any, limit: float) -> None:
    with anyio.fail_after(limit):
        while not check():  # noqa: ASYNC110 - polls what the worker shows
            await anyio.sleep(0.005)


CLUSTER = "\n[cluster]\nchunk_profiles = 1000\nlease_ttl = 30\nheartbeat = 5\n"


@pytest.mark.anyio
async def test_on_a_cluster_pause_and_cancel_reach_the_workers_at_once(
    open_herald: Any, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The run is the workers': ``mailing pause`` moves it in the store and the NOTIFY
    stops the worker's chunk within a second (its heartbeat is 5 s); ``cancel`` settles
    it for good."""
    gateway = FakeGateway(latency=0.2)
    cli_dir = tmp_path / "cli"
    cli_dir.mkdir()
    write_config(cli_dir, driver="file", database=pg_url, extra=CLUSTER)  # same store
    cli = Cli(cli_dir, capsys)
    async with await open_herald(gateway, database=pg_url, default_region="RU",
                                 extra=CLUSTER, shutdown_grace=1, batch_size=25) as herald:
        worker = Worker(herald, concurrency=1)
        async with MailingService.running(herald) as service, \
                anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await generate(herald.store, profiles=3000, database="main", messy=False)
            mailing = await service.create(MailingSpec(
                name="b", kind="broadcast", resource="news", template="Hi", database="main"))
            await service.start(mailing.id)
            await _until(lambda: bool(worker.statistics().chunks_held
                                      and worker.statistics().sent), 10)
            t0 = time.monotonic()
            code, out, err = await anyio.to_thread.run_sync(cli, "mailing", "pause",
                                                            str(mailing.id))
            assert code == 0, err
            assert "paused on the cluster" in out
            await _until(lambda: not worker.statistics().chunks_held, 4.5)
            elapsed = time.monotonic() - t0
            code, out, err = await anyio.to_thread.run_sync(cli, "mailing", "cancel",
                                                            str(mailing.id))
            assert code == 0, err
            worker.stop()
        assert elapsed < 1.5, f"the pause took {elapsed:.2f} s to stop the chunk"
        run = await herald.store.latest_run(mailing.id)
        assert run is not None and run.status == "cancelled"
        assert (await herald.store.get_mailing(mailing.id)).state == "cancelled"
        assert len(gateway.accepted) < 3000
