"""Workers sharing one run through PostgreSQL: ``herald worker`` ×3 plus ``herald send``.

The in-process tests (a fake gateway, both backends) check the parts one by one: two
workers and a cluster send on one run (exact dedupe across chunks: the store's
``(run, phone)`` backstop), a lease taken over (the old owner writes nothing more), a
pause (chunks given back pending, their journal settled by whoever claims them next).

The send cuts its run into chunks; every process leases chunks and sends them through the
``http`` driver to the idempotent torture sink. One worker is killed with SIGKILL while it
holds a chunk: after ``lease_ttl`` (2 s here) another process takes the chunk over, settles
its journal by the rule of ``herald resume`` (re-sent under the same ids: the sink is
idempotent) and finishes it. The send still ends with the whole log, exact across workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.cluster.worker import Worker, send_on_cluster
from engine.demo import AudiencePlan, generate
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.testing import FakeGateway, in_workspace, write_config
from tests.torture.accounting import account
from tests.torture.sink import Sink
from tests.torture.workspace import http_config

PROFILES = 3000
BATCH = 25
RATE = 150  # segments per second per process (no Redis: each its own): a run of seconds


def cluster_workspace(
    ws: Path, url: str, pg_url: str, *, chunk_profiles: int = 300
) -> AudiencePlan:
    config = http_config(url, idempotent=True, batch=BATCH, concurrency=2, rate=RATE,
                         burst=BATCH)
    config = config.replace('database = "herald.db"', f'database = "{pg_url}"')
    config += f"[cluster]\nlease_ttl = 2\nchunk_profiles = {chunk_profiles}\n"
    (ws / "herald.toml").write_text(config, encoding="utf-8")
    (ws / "t.txt").write_text("Hi {lead._fname}", encoding="utf-8")
    return in_workspace(ws / "herald.toml",
                        lambda store: generate(store, profiles=PROFILES, database="customers"))


CLUSTER = "[cluster]\nlease_ttl = 2\nchunk_profiles = 100\n"


async def open_cluster(tmp_path: Path, pg_url: str, gateway: FakeGateway,
                       extra: str = "") -> Herald:
    config = write_config(tmp_path, database=pg_url, extra=extra + CLUSTER,
                          shutdown_grace=1, default_region="RU", batch_size=25)
    return await Herald.open(config, plugins=load_plugins(gateway.plugin()))


@pytest.mark.anyio
async def test_send_and_a_worker_share_a_run_exactly(tmp_path: Path, pg_url: str) -> None:
    # slow enough that the run outlasts the worker's start and idle poll (0.3 s) many
    # times over, however loaded the machine: both must take chunks
    gateway = FakeGateway(latency=0.15)
    async with await open_cluster(tmp_path, pg_url, gateway) as herald:
        plan = await generate(herald.store, profiles=700, database="customers")
        other = Worker(herald, concurrency=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(other.run)
            log = await send_on_cluster(herald, resource="news", database="customers",
                                        template="Hi {lead._fname}")
            other.stop()
        chunks = await herald.store.chunks(log.run_id)
    assert len(chunks) == 7 and {c.state for c in chunks} == {"done"}
    assert len({c.worker for c in chunks}) == 2, "the worker did none of the chunks"
    assert log.status == "finished"
    assert log.recipients == plan.unique == len(gateway.accepted)
    assert log.duplicate_phones == plan.duplicates  # exact across chunks and workers
    assert set(gateway.submitted.values()) == {1}
    assert log.subscribers_received == plan.profiles


@pytest.mark.anyio
async def test_a_lease_taken_over_records_nothing_more(tmp_path: Path, pg_url: str) -> None:
    gateway = FakeGateway()
    async with await open_cluster(tmp_path, pg_url, gateway) as herald:
        await generate(herald.store, profiles=200, database="customers")
        store = herald.store
        mailing, run, _ = await herald.create_broadcast(
            resource="news", database="customers", template="Hi {lead._fname}")
        await store.create_chunks(run.id, mailing.source, size=100)
        old = await store.claim_chunk("ghost", 0.2, run_id=run.id)
        assert old is not None
        await anyio.sleep(0.3)
        new = await store.claim_chunk("new-owner", 30, run_id=run.id)
        assert new is not None and new.chunk == old.chunk and new.taken_over
        worker = Worker(herald, name="ghost")
        await worker._work(old)  # the dead owner wakes up: its first write is refused
        assert worker.statistics().chunks_lost == 1
        assert gateway.batches == 0
        assert not await store.recipient_rows(run.id) and not await store.journal(run.id)
        [row] = [c for c in await store.chunks(run.id) if c.chunk == old.chunk]
        assert (row.state, row.worker, row.fence) == ("leased", "new-owner", new.fence)


@pytest.mark.anyio
async def test_a_pause_gives_the_chunks_back_and_nobody_is_sent_twice(
    tmp_path: Path, pg_url: str
) -> None:
    gateway = FakeGateway(latency=0.02)
    async with await open_cluster(tmp_path, pg_url, gateway) as herald:
        plan = await generate(herald.store, profiles=300, database="customers")
        store = herald.store
        mailing, run, _ = await herald.create_broadcast(
            resource="news", database="customers", template="Hi {lead._fname}")
        await store.create_chunks(run.id, mailing.source, size=100)
        worker = Worker(herald, concurrency=2, run_id=run.id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            while gateway.batches < 2:  # noqa: ASYNC110 (the fake gateway has no event)
                await anyio.sleep(0.01)
            await store.set_run_status(run.id, "interrupted")  # a pause, as serve does
        # the heartbeat saw it, the chunks went back pending, and the worker ended
        states = {c.state for c in await store.chunks(run.id)}
        assert "leased" not in states and states != {"done"}
        await store.claim_run(run.id)  # resumed
        await Worker(herald, concurrency=2, run_id=run.id).run()
        log = await herald.log(run.id)
    assert log.status == "finished"
    assert log.recipients == plan.unique == len(gateway.accepted)
    assert set(gateway.submitted.values()) == {1}
    assert log.duplicate_phones == plan.duplicates


@pytest.mark.anyio
async def test_sender_limits_go_through_redis(tmp_path: Path, pg_url: str) -> None:
    from engine.cluster.limits import RedisSenderLimits
    from tests.redis_server import SERVER, skip_without_redis

    skip_without_redis()
    config = write_config(tmp_path, database=pg_url, default_region="RU", batch_size=25,
                          extra=CLUSTER + f'redis = "{SERVER}"\n')
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('caller_id = "ACME"\n',
                                   'caller_id = "ACME"\nrate = 2000\nburst = 50\n'),
                      encoding="utf-8")
    gateway = FakeGateway()
    herald = await Herald.open(config, plugins=load_plugins(gateway.plugin()))
    prefix = f"test-{os.urandom(4).hex()}"
    try:
        assert isinstance(herald.limits, RedisSenderLimits)
        herald.limits.prefix = prefix  # this test's keys only
        plan = await generate(herald.store, profiles=300, database="customers")
        log = await send_on_cluster(herald, resource="news", database="customers",
                                    template="Hi {lead._fname}")
        assert herald.limits.calls > 0  # every part was paced by Redis
    finally:
        import coredis

        async with coredis.Redis.from_url(SERVER) as client:
            await client.delete([f"herald:gcra:{prefix}:s1"])
        await herald.aclose()
    assert log.status == "finished" and log.recipients == plan.unique == len(gateway.accepted)


def herald(ws: Path, *args: str, backend: str = "asyncio") -> subprocess.Popen[str]:
    env = {**os.environ, "HERALD_BACKEND": backend}
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def leased_by(ws: Path) -> list[str]:
    """The workers holding a lease now."""

    async def go(store: Any) -> list[str]:
        runs = await store.list_runs(1)
        if not runs:
            return []
        return [c.worker for c in await store.chunks(runs[0][1].id)
                if c.state == "leased" and c.worker]

    return in_workspace(ws / "herald.toml", go)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_three_workers_and_send_one_killed(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # (the workers on both backends, the send on ``backend``)
    monkeypatch.setenv("HERALD_DATABASE", pg_url)
    with Sink(idempotent=True) as sink:
        plan = cluster_workspace(tmp_path, sink.url, pg_url)
        workers = [herald(tmp_path, "worker", backend=("asyncio", "trio", "asyncio")[i])
                   for i in range(3)]
        try:
            send = herald(tmp_path, "send", "--resource", "news", "--database", "customers",
                          "--template", "t.txt", "--json", backend=backend)
            # kill the first worker once it holds a chunk and sending is under way
            victim = workers[0]
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, "the victim never held a chunk"
                assert victim.poll() is None, victim.communicate()[1]
                if (sink.ledger.requests > 10
                        and any(f":{victim.pid}:" in w for w in leased_by(tmp_path))):
                    break
                time.sleep(0.05)
            victim.send_signal(signal.SIGKILL)
            # and stop the second gracefully while it holds one: it gives the chunk back
            # pending (its journal left for whoever claims it next)
            stopped = workers[1]
            while time.monotonic() < deadline and send.poll() is None:
                if any(f":{stopped.pid}:" in w for w in leased_by(tmp_path)):
                    stopped.send_signal(signal.SIGTERM)
                    break
                time.sleep(0.05)
            out, err = send.communicate(timeout=180)
            assert send.returncode == 0, err
            log = json.loads(out)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            codes = [w.wait(timeout=30) for w in workers]
        assert codes[0] == -signal.SIGKILL
        assert codes[1:] == [0, 0], [w.communicate()[1] for w in workers[1:]]

        async def chunks(store: Any) -> list[Any]:
            return list(await store.chunks(log["run_id"]))

        rows = in_workspace(tmp_path / "herald.toml", chunks)
        assert len(rows) == PROFILES // 300 and {c.state for c in rows} == {"done"}
        assert any(c.fence > 1 for c in rows), "no chunk was taken over"

        ledger = sink.ledger
        result = account(
            tmp_path / "herald.db", log["run_id"], seen=ledger.seen, accepted=ledger.accepted,
            gateway_idempotent=True, recipients=plan.unique, phones=ledger.phones,
            unknown_reasons={"interrupted"}, unseen_may_be={"interrupted"},
        )
        # the in-flight batches of the dead worker were re-sent under the same ids
        assert set(ledger.accepted.values()) == {1}
        assert result.states["sent"] == plan.unique == len(ledger.accepted)
        assert log["status"] == "finished"
        assert log["recipients"] == plan.unique
        assert log["duplicate_phones"] == plan.duplicates  # exact across workers
        assert log["suppressed"] == plan.suppressed
        assert log["invalid_phones"] == plan.invalid
