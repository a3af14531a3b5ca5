"""The mailing service on a cluster: it queues broadcasts as chunks for the workers and
steers them through the run's status; ``herald cluster status`` shows the cluster."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.cli import main
from engine.demo import generate
from engine.errors import StoreError
from engine.runner import Herald
from engine.service import MailingService, MailingSpec
from engine.store.base import Store
from engine.testing import FakeGateway, in_workspace, write_config

#: Small chunks and short leases: a test sees several chunks and waits little.
CLUSTER = "\n[cluster]\nchunk_profiles = 100\nlease_ttl = 1\n"


async def _herald(open_herald: Callable[..., Any], url: str, gateway: FakeGateway) -> Herald:
    herald: Herald = await open_herald(gateway, database=url, default_region="RU",
                                       extra=CLUSTER, shutdown_grace=0)
    return herald


async def _started(service: MailingService, profiles: int) -> tuple[int, int]:
    """A broadcast to ``profiles`` profiles, started: (mailing id, run id)."""
    await generate(service.herald.store, profiles=profiles, database="main", messy=False)
    m = await service.create(MailingSpec(name="b", kind="broadcast", resource="news",
                                         template="Hi", database="main"))
    started = await service.start(m.id)
    assert started.run_id is not None
    return m.id, started.run_id


@pytest.mark.anyio
async def test_start_queues_chunks_and_runs_nothing(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    gateway = FakeGateway()
    async with await _herald(open_herald, pg_url, gateway) as herald:
        async with MailingService.running(herald) as service:
            mailing_id, run_id = await _started(service, 450)
            status = await service.status(mailing_id)
            assert status.status == "running"
            assert service.statistics().running == 0  # no pipeline in this process
            chunks = await herald.store.chunks(run_id)
            assert len(chunks) >= 2 and {c.state for c in chunks} == {"pending"}
            assert chunks[-1].hi is None  # open-ended: profiles added meanwhile are read
            _, run = await herald.store.get_run(run_id)
            assert run.status == "running"
            with pytest.raises(StoreError, match="resume or cancel"):
                await service.start(mailing_id)
    assert not gateway.accepted


@pytest.mark.anyio
async def test_pause_and_resume_move_the_status(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    async with await _herald(open_herald, pg_url, FakeGateway()) as herald:
        async with MailingService.running(herald) as service:
            mailing_id, run_id = await _started(service, 150)
            chunks = len(await herald.store.chunks(run_id))
            assert (await service.pause(mailing_id)).status == "paused"
            assert (await herald.store.get_run(run_id))[1].status == "interrupted"
            with pytest.raises(StoreError, match="not running"):
                await service.pause(mailing_id)
            assert (await service.resume(mailing_id)).status == "running"
            assert (await herald.store.get_run(run_id))[1].status == "running"
            assert len(await herald.store.chunks(run_id)) == chunks  # kept, not cut again
            with pytest.raises(StoreError, match="already running"):
                await service.resume(mailing_id)


@pytest.mark.anyio
async def test_any_instance_answers_for_any_mailing(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    """Two service instances (two API processes): one starts, the other pauses, resumes
    and reports the same run."""
    async with await _herald(open_herald, pg_url, FakeGateway()) as one, \
            await _herald(open_herald, pg_url, FakeGateway()) as two:
        async with MailingService.running(one) as a, MailingService.running(two) as b:
            mailing_id, run_id = await _started(a, 150)
            assert (await b.status(mailing_id)).status == "running"
            assert (await b.pause(mailing_id)).status == "paused"
            assert (await a.status(mailing_id)).status == "paused"
            resumed = await b.resume(mailing_id)
            assert (resumed.status, resumed.run_id) == ("running", run_id)
            assert [s.status for s in await a.list()] == ["running"]


async def _reserve_some(store: Store, run_id: int, worker: str) -> tuple[set[int], set[int]]:
    """As a worker that stops mid-chunk: two batches journalled under its lease, the second
    handed to its gateway. (seqs merely reserved, seqs that may have been sent)."""
    from engine.core.prepare import Message

    mailing, _ = await store.get_run(run_id)
    lease = await store.claim_chunk(worker, 30, run_id=run_id)
    assert lease is not None
    rows = [r for r in await store.audience_chunk(
        mailing.source, await store.resource_id("news"), lease.lo, 10) if r.phone]
    msgs = [Message(lease.next_seq + i, f"m{i}", r.profile_id, r.phone or "", "s1", "Hi", 1)
            for i, r in enumerate(rows[:6])]
    await store.reserve(run_id, batches=[(1, "s1", msgs[:3]), (2, "s1", msgs[3:])],
                        skipped=[], checkpoint=msgs[-1].profile_id,
                        next_seq=msgs[-1].seq + 1, counts={"reserved": len(msgs)},
                        audience_done=False, lease=lease)
    await store.mark_sending(run_id, 2, lease=lease)
    await store.release_chunk(lease, done=False)
    return {m.seq for m in msgs[:3]}, {m.seq for m in msgs[3:]}


@pytest.mark.anyio
async def test_cancel_without_workers_accounts_for_everyone(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    async with await _herald(open_herald, pg_url, FakeGateway()) as herald:
        store = herald.store
        async with MailingService.running(herald) as service:
            mailing_id, run_id = await _started(service, 150)
            reserved, sending = await _reserve_some(store, run_id, "gone")
            cancelled = await service.cancel(mailing_id)
            assert cancelled.status == "cancelled"
            with pytest.raises(StoreError):
                await service.resume(mailing_id)
        assert (await store.get_run(run_id))[1].status == "cancelled"
        assert await store.journal(run_id) == []
        rows = {r.seq: r for r in await store.recipient_rows(run_id)}
        assert set(rows) == reserved | sending
        assert {(rows[s].state, rows[s].reason) for s in reserved} == {("skipped", "cancelled")}
        assert {rows[s].state for s in sending} == {"unknown"}


@pytest.mark.anyio
async def test_cancel_waits_for_a_live_worker_to_let_go(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    """A live worker still holds a chunk: cancel waits until its lease ends (here it
    expires after lease_ttl, as a worker that stopped renewing it)."""
    async with await _herald(open_herald, pg_url, FakeGateway()) as herald:
        store = herald.store
        async with MailingService.running(herald) as service:
            mailing_id, run_id = await _started(service, 150)
            await store.worker_heartbeat("w1", host="h", pid=1, chunks=1, ttl=60)
            assert await store.claim_chunk("w1", 0.5, run_id=run_id) is not None
            assert (await service.cancel(mailing_id)).status == "cancelled"
            assert all(c.state != "leased" or (c.lease_left or 0) <= 0
                       for c in await store.chunks(run_id))


@pytest.mark.anyio
async def test_cancel_refuses_while_a_worker_holds_on(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    """A worker that neither lets go nor loses its lease (here: leased for a minute):
    cancel gives up after lease_ttl, a heartbeat and shutdown_grace; the run stays
    paused, nothing settled under the worker's feet."""
    async with await _herald(open_herald, pg_url, FakeGateway()) as herald:
        store = herald.store
        async with MailingService.running(herald) as service:
            mailing_id, run_id = await _started(service, 150)
            await store.worker_heartbeat("w1", host="h", pid=1, chunks=1, ttl=60)
            assert await store.claim_chunk("w1", 60, run_id=run_id) is not None
            with pytest.raises(StoreError, match="w1 still hold"):
                await service.cancel(mailing_id)
            assert (await store.get_run(run_id))[1].status == "interrupted"
            assert (await service.status(mailing_id)).status == "paused"


@pytest.mark.anyio
async def test_a_worker_finishes_what_the_service_started(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    from engine.cluster.worker import Worker

    gateway = FakeGateway()
    async with await _herald(open_herald, pg_url, gateway) as herald:
        async with MailingService.running(herald) as service:
            plan = await generate(herald.store, profiles=450, database="main", messy=False)
            m = await service.create(MailingSpec(name="b", kind="broadcast", resource="news",
                                                 template="Hi", database="main"))
            await service.start(m.id)
            run_id = (await service.status(m.id)).run_id
            with anyio.fail_after(60):  # it ends when every chunk of the run is done
                await Worker(herald, concurrency=2, run_id=run_id).run()
            status = await service.status(m.id)  # the worker marked it finished
            assert status.status == "finished"
            log = await service.log(m.id)
    assert status.sent == plan.unique == log.sent == len(gateway.accepted)
    assert set(gateway.submitted.values()) == {1}


# -- herald cluster status -------------------------------------------------------------


def test_cluster_status_lists_workers_and_runs(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, driver="file", database=pg_url, extra=CLUSTER)

    async def setup(store: Store) -> int:
        await generate(store, profiles=250, database="main", messy=False)
        from engine.audience import resolve_audience
        from engine.config import load_config
        from engine.plugins import load_plugins

        cfg = load_config(config, drivers=load_plugins().drivers)
        source = await resolve_audience(store, cfg, "news", database="main")
        mailing = await store.create_mailing(name="spring", kind="broadcast", resource="news",
                                             source=source, template="Hi", limit=None)
        run = await store.start_run(mailing.id)
        await store.create_chunks(run.id, source, size=100)
        await store.worker_heartbeat("w-1", host="box", pid=4242, chunks=1, ttl=60)
        assert await store.claim_chunk("w-1", 60, run_id=run.id) is not None
        return run.id

    run_id = in_workspace(config, setup)
    assert main(["--config", str(config), "cluster", "status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    [worker] = out["workers"]
    assert (worker["worker"], worker["host"], worker["pid"], worker["chunks"]) == (
        "w-1", "box", 4242, 1)
    assert 0 <= worker["heartbeat_age"] < 60
    [run] = out["runs"]
    assert run["run_id"] == run_id and run["mailing"] == "spring"
    assert run["chunks_leased"] == 1 and run["chunks_done"] == 0
    assert run["chunks_pending"] + 1 == len(in_workspace(config, lambda s: s.chunks(run_id)))
    assert main(["--config", str(config), "cluster", "status"]) == 0
    text = capsys.readouterr().out
    assert "w-1" in text and "spring" in text


def test_cluster_status_on_sqlite_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, driver="file")
    assert main(["--config", str(config), "cluster", "status", "--json"]) == 2
    assert "a cluster needs PostgreSQL" in capsys.readouterr().err
