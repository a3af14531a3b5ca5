"""Interrupted runs: kill -9 mid-way, SIGTERM, stop(); resume loses nobody, sends nobody twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.demo import AudiencePlan, generate
from engine.store.sqlite import SQLiteStore
from engine.testing import FakeGateway

PLUGIN_DIR = Path(__file__).parent / "fixtures" / "ledger_plugin"

CONFIG = """\
[engine]
database = "herald.db"
default_region = "RU"
chunk_size = 200
batch_size = 25
shutdown_grace = 5
[gateways.gw]
driver = "ledger"
path = "ledger.jsonl"
latency = {latency}
idempotent = {idempotent}
[senders.s1]
gateway = "gw"
caller_id = "ACME"
concurrency = 2
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1", percent = 100 }}] }}]
[resources.news]
virtual_sender = "v"
"""


def herald(ws: Path, *args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def workspace(tmp_path: Path, *, idempotent: bool, latency: float = 0.03) -> AudiencePlan:
    (tmp_path / "herald.toml").write_text(
        CONFIG.format(latency=latency, idempotent=str(idempotent).lower()), encoding="utf-8"
    )
    (tmp_path / "t.txt").write_text("Hi {lead._fname}", encoding="utf-8")
    async def fill() -> AudiencePlan:
        store = SQLiteStore.open(tmp_path / "herald.db")
        try:
            return await generate(store, profiles=4000, database="customers")
        finally:
            await store.aclose()

    return anyio.run(fill)


def ledger(ws: Path) -> list[dict[str, str]]:
    path = ws / "ledger.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def kill_mid_way(ws: Path, sig: int = signal.SIGKILL) -> tuple[int, str]:
    proc = herald(
        ws, "send", "--resource", "news", "--database", "customers", "--template", "t.txt", "--json"
    )
    deadline = time.monotonic() + 60
    while len(ledger(ws)) < 600:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.01)
    proc.send_signal(sig)
    out, _err = proc.communicate(timeout=60)
    return proc.returncode, out


def run_json(ws: Path, *args: str) -> Any:
    proc = herald(ws, *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def recipients(ws: Path) -> list[tuple[Any, ...]]:
    store = SQLiteStore.open(ws / "herald.db")
    try:
        return store.recipients(1)
    finally:
        store.conn.close()


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_sigkill_then_resume_sends_each_recipient_once(tmp_path: Path, idempotent: bool) -> None:
    plan = workspace(tmp_path, idempotent=idempotent)
    code, _ = kill_mid_way(tmp_path)
    assert code == -signal.SIGKILL
    before = len(ledger(tmp_path))
    assert before < plan.unique, "the kill came too late to test anything"

    (run,) = run_json(tmp_path, "runs", "--json")["runs"]
    assert run["status"] == "interrupted"  # its process is gone
    log = run_json(tmp_path, "resume", str(run["run_id"]), "--json")
    assert log["status"] == "finished"
    assert log["duplicate_phones"] == plan.duplicates
    assert log["suppressed"] == plan.suppressed
    assert log["invalid_phones"] == plan.invalid
    assert log["subscribers_received"] == plan.profiles
    assert log["recipients"] == plan.unique

    submissions = ledger(tmp_path)
    ids_by_phone: dict[str, set[str]] = {}
    for line in submissions:
        ids_by_phone.setdefault(line["to"], set()).add(line["id"])
    # one message id per recipient, whatever happened
    assert all(len(ids) == 1 for ids in ids_by_phone.values())
    rows = recipients(tmp_path)
    states = Counter(r[3] for r in rows if r[3] != "skipped")
    if idempotent:
        # in-flight batches were re-sent under the same ids: every recipient reached
        assert len(ids_by_phone) == plan.unique
        assert states == {"sent": plan.unique}
        resent = Counter(line["id"] for line in submissions)
        assert sum(n - 1 for n in resent.values()) <= 2 * 25  # at most the batches in flight
    else:
        # never submitted twice; what may or may not have gone out is 'unknown'
        per_phone = Counter(line["to"] for line in submissions)
        assert set(per_phone.values()) == {1}
        unknown = {r[2] for r in rows if r[3] == "unknown"}
        sent = {r[2] for r in rows if r[3] == "sent"}
        assert len(unknown) <= 2 * 25
        assert sent | unknown == {r[2] for r in rows if r[3] != "skipped"}
        assert sent <= set(per_phone)
        assert states["sent"] + states["unknown"] == plan.unique
        assert log["unknown"] == len(unknown)


def test_sigterm_stops_gracefully_and_resume_finishes(tmp_path: Path) -> None:
    plan = workspace(tmp_path, idempotent=False)
    code, out = kill_mid_way(tmp_path, signal.SIGTERM)
    assert code == 1
    log = json.loads(out)
    assert log["status"] == "interrupted"
    assert log["unknown"] == 0  # batches at the gateway were allowed to finish
    log = run_json(tmp_path, "resume", str(log["run_id"]), "--json")
    assert log["status"] == "finished"
    assert log["recipients"] == log["sent"] == plan.unique
    per_phone = Counter(line["to"] for line in ledger(tmp_path))
    assert len(per_phone) == plan.unique and set(per_phone.values()) == {1}


@pytest.mark.anyio
async def test_stop_then_resume_in_process(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway(latency=0.002)
    herald = await open_herald(gateway, default_region="RU", chunk_size=100, batch_size=10)
    async with herald:
        plan = await generate(herald.store, profiles=2000, database="main")

        done = anyio.Event()

        async def stop_soon() -> None:
            while not done.is_set():
                pipeline = herald.pipeline
                if pipeline is not None and pipeline.statistics().sent >= 300:
                    pipeline.stop()
                    return
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            log = await herald.send(resource="news", database="main", template="x")
            done.set()
        assert log.status == "interrupted"
        assert 300 <= log.sent < plan.unique
        log = await herald.resume(log.run_id)
    assert log.status == "finished"
    assert log.recipients == log.sent == plan.unique == len(gateway.accepted)
    assert set(gateway.submitted.values()) == {1}
    assert log.duplicate_phones == plan.duplicates


@pytest.mark.anyio
async def test_a_finished_run_cannot_be_resumed(open_herald: Callable[..., Any]) -> None:
    async with await open_herald() as herald:
        await generate(herald.store, profiles=10, database="main")
        log = await herald.send(resource="news", database="main", template="x")
        with pytest.raises(Exception, match="finished; nothing to resume"):
            await herald.resume(log.run_id)


def test_sigterm_stops_a_mailing_start_gracefully_and_resume_finishes(tmp_path: Path) -> None:
    """``herald mailing start`` stops as ``herald send`` does: the batches at the gateway
    finish, the log says interrupted (exit 1), and ``mailing resume`` sends the rest."""
    plan = workspace(tmp_path, idempotent=False)
    created = herald(tmp_path, "mailing", "create", "--name", "m", "--kind", "broadcast",
                     "--resource", "news", "--database", "customers", "--template", "t.txt")
    out, err = created.communicate(timeout=60)
    assert created.returncode == 0, err
    mailing = out.strip()
    proc = herald(tmp_path, "mailing", "start", mailing, "--json")
    deadline = time.monotonic() + 60
    while len(ledger(tmp_path)) < 600:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    (log,) = json.loads(out)
    assert log["status"] == "interrupted" and log["unknown"] == 0
    resumed = herald(tmp_path, "mailing", "resume", mailing)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    per_phone = Counter(line["to"] for line in ledger(tmp_path))
    assert len(per_phone) == plan.unique and set(per_phone.values()) == {1}
