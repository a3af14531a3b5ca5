"""An email mailing killed with SIGKILL mid-run, then ``herald resume``: every recipient
ends in one recorded state, and the SMTP sink (written apart from the project) never gets
one address twice. SMTP is not idempotent, so a message in flight at the kill is recorded
``unknown``, never sent again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.store.base import ImportRecord
from engine.store.sqlite import SQLiteStore
from tests.fakes.smtp import Sink

N = 1200

CONFIG = """\
[engine]
database = "herald.db"
chunk_size = 200
batch_size = 20
shutdown_grace = 5
[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
connections = 2
[senders.news]
gateway = "mail"
from = "News <news@example.com>"
rate = 400
burst = 20
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "news" }}] }}]
[resources.letters]
virtual_sender = "v"
channel = "email"
"""


def herald(ws: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def workspace(ws: Path, port: int) -> None:
    (ws / "herald.toml").write_text(CONFIG.format(port=port), encoding="utf-8")
    (ws / "body.html").write_text("<p>Hi {lead._fname}</p>", encoding="utf-8")

    async def fill() -> None:
        store = SQLiteStore.open(ws / "herald.db")
        try:
            db = await store.database_id("main", create=True)
            await store.import_profiles(
                db, [ImportRecord(None, None, f"r{i}@example.org", {"_fname": f"R{i}"})
                     for i in range(N)],
                matching="email", resource_id=await store.resource_id("letters"),
                channel="email")
        finally:
            await store.aclose()

    anyio.run(fill)


def recipients(ws: Path) -> list[tuple[Any, ...]]:
    store = SQLiteStore.open(ws / "herald.db")
    try:
        return store.recipients(1)
    finally:
        store.conn.close()


@pytest.mark.slow
def test_sigkill_then_resume_sends_each_address_at_most_once(tmp_path: Path) -> None:
    with Sink() as sink:
        workspace(tmp_path, sink.port)
        proc = herald(tmp_path, "send", "--resource", "letters", "--database", "main",
                      "--template", "body.html", "--subject", "Hello {lead._fname}",
                      "--json")
        deadline = time.monotonic() + 60
        while len(sink.received) < N // 4:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        before = len(sink.received)
        assert before < N

        resumed = herald(tmp_path, "resume", "1", "--json")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        log = json.loads(out)
        got = Counter(r.rcpt_tos[0] for r in sink.received)

    assert max(got.values()) == 1, [a for a, n in got.items() if n > 1]
    rows = recipients(tmp_path)
    assert len(rows) == N and len({r[1] for r in rows}) == N  # each profile once
    states = Counter(r[3] for r in rows)
    assert set(states) <= {"sent", "unknown"}
    sent = {r[2] for r in rows if r[3] == "sent"}
    unknown = {r[2] for r in rows if r[3] == "unknown"}
    assert sent <= set(got)  # everything recorded sent reached the sink
    assert set(got) <= sent | unknown  # and nothing reached it unrecorded
    assert all(r[4] for r in rows if r[3] == "unknown")  # with the reason
    assert log["status"] == "finished"
