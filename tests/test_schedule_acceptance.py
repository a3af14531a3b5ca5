"""A scheduled broadcast against the real processes: two ``herald serve`` on one
PostgreSQL store, a mailing ``at`` two seconds ahead; it starts within a second of its
time, in one of them, once."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from engine.runner import Herald
from engine.store.base import ImportRecord
from engine.testing import create_token
from tests.servers import free_port, wait_healthy

CONFIG = """\
[engine]
database = "{database}"
[gateways.gw]
driver = "file"
path = "sent.jsonl"
[senders.s1]
gateway = "gw"
caller_id = "ACME"
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1" }}] }}]
[resources.news]
virtual_sender = "v"
"""

PROFILES = 40


@contextlib.contextmanager
def serving(config: Path, n: int) -> Iterator[list[str]]:
    """``n`` ``herald serve`` processes of ``config``, each on its own port."""
    procs: list[subprocess.Popen[bytes]] = []
    bases = []
    try:
        for _ in range(n):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            wait_healthy(base, proc)
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_serves_launch_a_broadcast_at_its_time_once(
    tmp_path: Path, pg_url: str
) -> None:
    config = tmp_path / "herald.toml"
    config.write_text(CONFIG.format(database=pg_url), encoding="utf-8")
    async with await Herald.open(config) as herald:
        db = await herald.store.database_id("main", create=True)
        rid = await herald.store.resource_id("news")
        await herald.store.import_profiles(
            db, [ImportRecord(None, f"+4479110{i:05d}", None, {}) for i in range(PROFILES)],
            matching="phone", resource_id=rid)
    token = create_token(config, "sender")
    with serving(config, 2) as bases:
        due = int(time.time()) + 3  # two seconds ahead, and a whole second
        at = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=bases[0], headers=auth, timeout=10,
                                     trust_env=False) as client:
            r = await client.post("/api/v1/mailings", json={
                "name": "at", "kind": "broadcast", "resource": "news", "database": "main",
                "template": "Hi", "at": at, "timezone": "UTC"})
            assert r.status_code in (200, 201), r.text
            mailing = r.json()["id"]
            deadline = time.monotonic() + 20
            while True:
                view = (await client.get(f"/api/v1/mailings/{mailing}")).json()
                if view["launches"] and view["launches"][-1]["status"] == "finished":
                    break
                assert time.monotonic() < deadline, view
                time.sleep(0.1)  # noqa: ASYNC251 - the servers are other processes
    async with await Herald.open(config) as herald:
        runs = await herald.store.mailing_runs(mailing)
        final = await herald.store.get_mailing(mailing)
    assert len(runs) == 1, runs  # one launch, by one of the two
    (run,) = runs
    assert run.spec.due == due
    assert 0 <= run.started_at - due <= 1.0, run.started_at - due
    assert final.state == "done" and final.next_launch is None
    sent = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert len(sent) == PROFILES and len({m["to"] for m in sent}) == PROFILES
