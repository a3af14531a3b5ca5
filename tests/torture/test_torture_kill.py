"""kill -9 at 20 seeded random moments of a send and its resumes: nobody lost, nobody twice.

A real ``herald send`` through the ``http`` driver to the in-process ``Sink`` is killed
with SIGKILL at random moments (most while batches are at the gateway, some while a
``herald resume`` is still starting up and settling the journal), ``herald resume`` being
run after each kill, until one finishes. The sink outlives every process, so its ledger
says what really reached the gateway; the store must agree with it. The same with SIGTERM,
after which nothing may be unknown at all.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.torture.accounting import account
from tests.torture.sink import Sink
from tests.torture.workspace import herald, make_workspace

pytestmark = pytest.mark.slow

KILLS = 20
BATCH = 25
CONCURRENCY = 2
#: Messages that can be at the gateway at once: what one kill can leave unknown.
WINDOW = BATCH * CONCURRENCY
RATE = 400  # segments per second: a run lasts several seconds
BURST = 25


def wait_for_requests(sink: Sink, proc: subprocess.Popen[str], since: int) -> None:
    """Until the sink has a request from ``proc`` (or ``proc`` ended)."""
    deadline = time.monotonic() + 30
    while sink.ledger.requests <= since and proc.poll() is None:
        assert time.monotonic() < deadline, "herald never sent anything"
        time.sleep(0.005)


def the_run(ws: Path) -> int:
    if os.environ.get("HERALD_DATABASE"):  # the PostgreSQL leg
        from engine.testing import in_workspace

        async def newest(store: Any) -> int:
            [(_, run)] = await store.list_runs(1)
            return int(run.id)

        return in_workspace(ws / "herald.toml", newest)
    conn = sqlite3.connect(f"file:{ws / 'herald.db'}?mode=ro", uri=True, timeout=30)
    try:
        (run_id,) = conn.execute("SELECT id FROM runs").fetchone()
    finally:
        conn.close()
    return int(run_id)


def kill_until_finished(
    ws: Path, sink: Sink, backend: str, seed: int, *, kills_max: int = KILLS,
    sig: signal.Signals = signal.SIGKILL,
) -> tuple[int, int]:
    """Send, then kill (``sig``) and resume until a run finishes: (run id, kills)."""
    # herald's exit after the signal: -9, or 1 for a run stopped gracefully (SIGTERM)
    killed = -signal.SIGKILL if sig == signal.SIGKILL else 1
    rng = random.Random(seed)
    kills = 0
    run_id: int | None = None
    proc = herald(ws, backend, "send", "--resource", "news", "--database", "customers",
                  "--template", "t.txt", "--json")
    while True:
        # (SIGTERM only once sending: before its handlers are set, it just kills)
        if run_id is not None and sig == signal.SIGKILL and rng.random() < 0.25:
            # while starting up: settling the journal, re-sending the reserved batches
            time.sleep(rng.uniform(0.05, 0.5))
        else:
            wait_for_requests(sink, proc, sink.ledger.requests)
            time.sleep(rng.uniform(0.0, 0.4))
        if kills < kills_max and proc.poll() is None:
            proc.send_signal(sig)
            kills += 1
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, killed), f"herald exited {proc.returncode}: {err}"
        if run_id is None:
            run_id = the_run(ws)
        if proc.returncode == 0:
            return run_id, kills
        proc = herald(ws, backend, "resume", str(run_id), "--json")


def run_json(ws: Path, backend: str, *args: str) -> Any:
    proc = herald(ws, backend, *args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_twenty_kills_lose_nobody_and_send_nobody_twice(
    tmp_path: Path, open_sink: Any, backend: str, idempotent: bool
) -> None:
    twenty_kills(tmp_path, open_sink, backend, idempotent)


@pytest.mark.parametrize(("backend", "idempotent"), [("asyncio", True), ("trio", False)],
                         ids=["asyncio-idempotent", "trio-not-idempotent"])
def test_twenty_kills_on_postgresql(
    tmp_path: Path, open_sink: Any, backend: str, idempotent: bool, pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the same, with the workspace's data in PostgreSQL (every herald process inherits it)
    monkeypatch.setenv("HERALD_DATABASE", pg_url)
    twenty_kills(tmp_path, open_sink, backend, idempotent)


def twenty_kills(tmp_path: Path, open_sink: Any, backend: str, idempotent: bool) -> None:
    sink = open_sink(idempotent=idempotent, log_path=tmp_path / "accepted.tsv")
    plan = make_workspace(tmp_path, sink.url, idempotent=idempotent, profiles=3000,
                          batch=BATCH, concurrency=CONCURRENCY, rate=RATE, burst=BURST)
    seed = 1000 + 2 * idempotent + (backend == "trio")
    run_id, kills = kill_until_finished(tmp_path, sink, backend, seed)
    assert kills >= KILLS // 2, f"the run finished after {kills} kills: make it longer"

    ledger = sink.ledger
    result = account(
        tmp_path / "herald.db", run_id, seen=ledger.seen, accepted=ledger.accepted,
        gateway_idempotent=idempotent, recipients=plan.unique, phones=ledger.phones,
        unknown_reasons={"interrupted"}, unseen_may_be={"interrupted"},
    )
    log = run_json(tmp_path, backend, "log", str(run_id), "--json")
    assert log["recipients"] == plan.unique
    assert log["duplicate_phones"] == plan.duplicates
    assert log["suppressed"] == plan.suppressed and log["invalid_phones"] == plan.invalid
    assert log["sent"] == result.states["sent"] and log["unknown"] == result.states["unknown"]
    if idempotent:
        # in-flight batches were re-sent under the same ids: each recipient got one SMS
        assert result.states["sent"] == plan.unique == len(ledger.accepted)
        assert set(ledger.accepted.values()) == {1}
        assert ledger.duplicates <= WINDOW * kills
    else:
        # never re-sent; what was at the gateway at a kill is unknown, at most a window each
        assert result.states["sent"] + result.states["unknown"] == plan.unique
        # (some of them the gateway never saw: killed between the journal's 'sending' and
        # the request's last byte, which resume cannot tell from after it)
        assert result.states["unknown"] <= WINDOW * kills
        assert len(ledger.accepted) <= plan.unique


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_never_makes_unknown_what_the_gateway_never_saw(
    tmp_path: Path, open_sink: Any, backend: str
) -> None:
    # SIGTERM lets what is at the gateway finish, and leaves the rest reserved: nothing is
    # ambiguous, so nothing may end unknown, and resume sends the rest exactly once
    sink = open_sink(idempotent=False)
    plan = make_workspace(tmp_path, sink.url, idempotent=False, profiles=1500,
                          batch=BATCH, concurrency=CONCURRENCY, rate=RATE, burst=BURST)
    run_id, kills = kill_until_finished(tmp_path, sink, backend, 2000 + (backend == "trio"),
                                        kills_max=5, sig=signal.SIGTERM)
    assert kills >= 3, f"the run finished after {kills} signals: make it longer"
    result = account(
        tmp_path / "herald.db", run_id, seen=sink.ledger.seen, accepted=sink.ledger.accepted,
        gateway_idempotent=False, recipients=plan.unique, phones=sink.ledger.phones,
    )
    assert result.states["unknown"] == 0, dict(result.unknown_reasons)
    assert result.states["sent"] == plan.unique == len(sink.ledger.accepted)
