"""`herald`'s exit codes: 0 success, 1 the work failed, 2 bad usage or input; stderr says
what was wrong."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from engine.store.models import AudienceSource
from engine.store.sqlite import SQLiteStore
from engine.testing import write_config

PLUGIN_DIR = Path(__file__).parent / "fixtures" / "ledger_plugin"


def herald(ws: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--config", config or str(ws / "herald.toml"),
         *args],
        cwd=ws, capture_output=True, text=True, check=False, timeout=60,
    )


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace with two subscribed profiles in database ``main`` and a template."""
    write_config(tmp_path, driver="file")
    (tmp_path / "people.csv").write_text(
        "phone,_fname\n+447911123456,Ann\n+447911123457,Bob\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("Hi {lead._fname}\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_text("Hi {lead._fname\n", encoding="utf-8")
    (tmp_path / "no-phone.csv").write_text("email\na@b.co\n", encoding="utf-8")
    (tmp_path / "typo.toml").write_text(
        (tmp_path / "herald.toml").read_text().replace("[engine]", "[engine]\nchunk_sise = 5"),
        encoding="utf-8",
    )
    proc = herald(tmp_path, "import", "profiles", "people.csv", "--database", "main",
                  "--resource", "news")
    assert proc.returncode == 0, proc.stderr
    return tmp_path


SEND = ("send", "--resource", "news", "--template", "t.txt")

BAD_INPUT = [
    pytest.param([*SEND, "--database", "nope"], "no profile database named 'nope'",
                 id="unknown-database"),
    pytest.param([*SEND, "--segment", "nope"], "no segment named 'nope'", id="unknown-segment"),
    pytest.param(["send", "--resource", "nope", "--database", "main", "--template", "t.txt"],
                 "no resource 'nope'", id="unknown-resource"),
    pytest.param(["log", "99"], "no run 99", id="unknown-run-log"),
    pytest.param(["resume", "99"], "no run 99", id="unknown-run-resume"),
    pytest.param(["segment", "count", "nope"], "no segment named 'nope'", id="segment-count"),
    pytest.param(["suppression", "attach", "nope", "--database", "main"],
                 "no suppression list named 'nope'", id="unknown-suppression-list"),
    pytest.param(["import", "profiles", "people.csv", "--database", "main", "--resource", "x"],
                 "no resource 'x'", id="import-unknown-resource"),
    pytest.param(["import", "profiles", "nope.csv", "--database", "main"],
                 "nope.csv: cannot read", id="missing-import-file"),
    pytest.param(["import", "profiles", "no-phone.csv", "--database", "main"],
                 "no-phone.csv:1: --matching phone needs a 'phone' column", id="bad-import-file"),
    pytest.param([*SEND[:-1], "nope.txt", "--database", "main"],
                 "nope.txt: cannot read the template", id="missing-template"),
    pytest.param([*SEND[:-1], "bad.txt", "--database", "main"], "bad.txt:1:", id="bad-template"),
    pytest.param(["template", "check", "bad.txt"], "bad.txt:1:", id="template-check"),
    pytest.param(["check-config", "typo.toml"], "typo.toml: engine.chunk_sise",
                 id="bad-config"),
    pytest.param([*SEND, "--database", "main", "--limit", "-1"], "--limit", id="bad-option"),
    pytest.param(["runs", "--no-such-flag"], "--no-such-flag", id="unknown-flag"),
]


@pytest.mark.parametrize(("args", "says"), BAD_INPUT)
def test_bad_usage_or_input_exits_2_and_says_what(ws: Path, args: list[str], says: str) -> None:
    proc = herald(ws, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert says in proc.stderr
    assert not (ws / "sent.jsonl").exists()


@pytest.mark.parametrize(("config", "says"), [
    ("missing.toml", "missing.toml"),
    ("typo.toml", "typo.toml: engine.chunk_sise"),
])
def test_a_missing_or_bad_config_exits_2_whatever_the_command(
    ws: Path, config: str, says: str
) -> None:
    for args in (["runs"], [*SEND, "--database", "main"]):
        proc = herald(ws, *args, config=str(ws / config))
        assert proc.returncode == 2, (args, proc.stderr)
        assert says in proc.stderr


def test_success_exits_0_and_a_finished_run_cannot_be_resumed(ws: Path) -> None:
    assert herald(ws, "check-config").returncode == 0
    proc = herald(ws, *SEND, "--database", "main", "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    assert herald(ws, "log", str(run_id)).returncode == 0
    proc = herald(ws, "resume", str(run_id))
    assert proc.returncode == 2
    assert f"run {run_id} is finished; nothing to resume" in proc.stderr


def test_resume_of_a_trigger_run_exits_2_and_points_at_serve(ws: Path) -> None:
    async def trigger_run() -> int:
        store = SQLiteStore.open(ws / "herald.db")
        try:
            db = await store.database_id("main")
            mailing = await store.create_mailing(
                name="welcome", kind="trigger", resource="news",
                source=AudienceSource("list", db), template="Hi", limit=None,
            )
            run = await store.start_run(mailing.id)
            await store.set_run_status(run.id, "interrupted")
            return run.id
        finally:
            store.conn.close()

    run_id = anyio.run(trigger_run)
    proc = herald(ws, "resume", str(run_id))
    assert proc.returncode == 2
    assert f"run {run_id} belongs to trigger mailing" in proc.stderr
    assert "`herald serve`" in proc.stderr
    (run,) = json.loads(herald(ws, "runs", "--json").stdout)["runs"]
    assert run["status"] == "interrupted"  # not claimed, nothing started


SLOW = """\
[engine]
database = "herald.db"
batch_size = 5
shutdown_grace = 1
[gateways.gw]
driver = "ledger"
path = "ledger.jsonl"
latency = 0.2
[senders.s1]
gateway = "gw"
caller_id = "ACME"
concurrency = 1
[virtual_senders.v]
rules = [{ senders = [{ sender = "s1", percent = 100 }] }]
[resources.news]
virtual_sender = "v"
"""


def test_a_run_that_does_not_finish_exits_1(tmp_path: Path) -> None:
    (tmp_path / "herald.toml").write_text(SLOW, encoding="utf-8")
    (tmp_path / "t.txt").write_text("Hi", encoding="utf-8")
    (tmp_path / "people.csv").write_text(
        "phone\n" + "".join(f"+44791100{i:04d}\n" for i in range(200)), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "engine.cli", "--config", str(tmp_path / "herald.toml")]
    subprocess.run([*base, "import", "profiles", "people.csv", "--database", "main",
                    "--resource", "news"], cwd=tmp_path, env=env, check=True, timeout=60,
                   capture_output=True)
    proc = subprocess.Popen(
        [*base, "send", "--resource", "news", "--database", "main", "--template", "t.txt"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ledger = tmp_path / "ledger.jsonl"
    deadline = time.monotonic() + 60
    while not ledger.exists() or not ledger.read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "(interrupted)" in out
    assert "interrupted: finish it with  herald resume 1" in err


def test_help_documents_the_exit_codes() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True,
                          text=True, check=True, timeout=60)
    epilog = proc.stdout[proc.stdout.index("exit codes:"):]
    assert "  0  success" in epilog
    assert "  1  the work failed" in epilog
    assert "  2  bad usage or input" in epilog
