"""The PostgreSQL store's side of a cluster: chunks of a run's audience, their leases and
fences, the workers' heartbeats, and the ``(run, phone)`` backstop of exact dedupe when
several workers reserve at once. SQLite refuses all of it, saying to use PostgreSQL.

Expiry is made with SQL (a lease's end moved into the past), never by sleeping.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from engine.core.policy import Policy
from engine.core.prepare import Message
from engine.errors import LeaseLost, StoreError
from engine.store.base import Lease, Store
from engine.store.models import AudienceSource
from engine.store.open import open_store
from engine.store.postgres import PostgresStore
from engine.store.postgres.schema import MIGRATIONS
from tests.pg import skip_without_server, throwaway_database
from tests.store.helpers import (
    World,
    make_world,
    message,
    new_run,
    sent,
    shape,
    wall_clock,
)

pytestmark = pytest.mark.anyio

TTL = 30.0
SEQS = 2**32


@pytest.fixture
def store_kind() -> str:
    """PostgreSQL only: this module's ``store`` is never SQLite's."""
    return "postgres"


@pytest.fixture
async def second(store_url: str) -> AsyncIterator[Store]:
    """Another process's store on the same database (its own pool)."""
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.aclose()


def sql(url: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the database behind the store (what a test cannot do through
    the protocol: move a lease's end into the past)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def expire(url: str, lease: Lease) -> None:
    sql(url, "UPDATE run_chunks SET lease_until = extract(epoch FROM now()) - 1"
             " WHERE run_id = %s AND chunk = %s", (lease.run_id, lease.chunk))


async def reserve(
    store: Store, run_id: int, lease: Lease | None,
    batches: Sequence[tuple[int, str, Sequence[Message]]], *, checkpoint: int = 0,
    next_seq: int | None = None, audience_done: bool = False,
) -> set[int]:
    n = sum(len(msgs) for _, _, msgs in batches)
    return await store.reserve(
        run_id, batches=batches, skipped=[], checkpoint=checkpoint, next_seq=next_seq,
        counts={"found": n, "reserved": n}, audience_done=audience_done, lease=lease,
    )


async def chunked(store: Store, n: int, size: int) -> tuple[World, int, int]:
    """A world of ``n`` profiles and a run on it cut into chunks of ``size``."""
    w = await make_world(store, n)
    _, run = await new_run(store, w)
    count = await store.create_chunks(run.id, w.source(), size=size)
    return w, run.id, count


async def test_chunks_cover_the_audience_exactly_once(store: Store) -> None:
    w, run_id, count = await chunked(store, 23, 5)
    assert count == 5
    rows = await store.chunks(run_id)
    assert [c.chunk for c in rows] == [0, 1, 2, 3, 4]
    assert rows[0].lo == 0 and rows[-1].hi is None  # the last is open-ended
    assert all(a.hi == b.lo for a, b in itertools.pairwise(rows))
    for pid in w.ids:
        assert sum(c.lo < pid and (c.hi is None or pid <= c.hi) for c in rows) == 1
    assert [sum(c.lo < pid and (c.hi is None or pid <= c.hi) for pid in w.ids)
            for c in rows] == [5, 5, 5, 5, 3]
    assert all(c.state == "pending" and c.worker is None and c.lease_left is None
               and c.fence == 0 and c.checkpoint == c.lo for c in rows)
    # a run with chunks keeps them
    assert await store.create_chunks(run_id, w.source(), size=2) == 5
    assert await store.chunks(run_id) == rows
    # each chunk gives seqs from its own range
    leases = [await store.claim_chunk("w", TTL, run_id=run_id) for _ in rows]
    assert [(lease.chunk, lease.next_seq) for lease in leases if lease] == [
        (k, k * SEQS + 1) for k in range(5)]


async def test_chunks_of_a_segment_and_of_edge_sizes(store: Store) -> None:
    w = await make_world(store, 10)
    # an exact multiple: no empty chunk in the middle, the last still open-ended
    _, run = await new_run(store, w)
    assert await store.create_chunks(run.id, w.source(), size=5) == 2
    assert [(c.lo, c.hi) for c in await store.chunks(run.id)] == [
        (0, w.ids[4]), (w.ids[4], None)]
    # a static segment: its members' ids are cut, not the database's
    seg = await store.create_segment("some", w.database_id, profile_ids=w.ids[1::3])
    source = AudienceSource("segment", w.database_id, seg.id)
    _, srun = await store.create_run(name="s", resource="news", source=source,
                                     template="hi", limit=None)
    members = w.ids[1::3]  # 3 profiles
    assert await store.create_chunks(srun.id, source, size=2) == 2
    assert [(c.lo, c.hi) for c in await store.chunks(srun.id)] == [
        (0, members[1]), (members[1], None)]
    # no profiles at all, or size 0: one open chunk
    empty = await make_world(store, 0, database="empty")
    _, erun = await new_run(store, empty, name="e")
    assert await store.create_chunks(erun.id, empty.source(), size=5) == 1
    _, zrun = await new_run(store, w, name="z")
    assert await store.create_chunks(zrun.id, w.source(), size=0) == 1


async def test_concurrent_claimers_get_distinct_chunks(store: Store, second: Store) -> None:
    _, run_id, count = await chunked(store, 100, 5)
    assert count == 20
    got: list[Lease | None] = []

    async def claim(s: Store, i: int) -> None:
        got.append(await s.claim_chunk(f"w{i}", TTL))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(claim, store if i % 2 else second, i)
    leases = [lease for lease in got if lease is not None]
    assert len(leases) == 20
    assert sorted(lease.chunk for lease in leases) == list(range(20))
    assert all(lease.fence == 1 and not lease.taken_over for lease in leases)
    assert await store.claim_chunk("late", TTL) is None
    rows = await store.chunks(run_id)
    assert {c.chunk: c.worker for c in rows} == {le.chunk: le.worker for le in leases}
    assert all(c.state == "leased" and c.lease_left is not None
               and 0 < c.lease_left <= TTL for c in rows)


async def test_only_running_runs_are_claimed(store: Store) -> None:
    _, run_id, _ = await chunked(store, 4, 2)
    await store.set_run_status(run_id, "interrupted")
    assert await store.claim_chunk("w", TTL) is None
    await store.set_run_status(run_id, "running")
    lease = await store.claim_chunk("w", TTL, run_id=run_id)
    assert lease is not None and lease.run_id == run_id
    assert await store.claim_chunk("w", TTL, run_id=run_id + 1000) is None


async def test_an_expired_lease_is_taken_over_and_its_old_owner_writes_nothing(
    store: Store, store_url: str,
) -> None:
    w, run_id, _ = await chunked(store, 4, 10)
    old = await store.claim_chunk("a", TTL)
    assert old is not None and old.fence == 1
    first = [message(1, w.ids[0], w.phones[0])]
    assert await reserve(store, run_id, old, [(1, "s", first)], checkpoint=w.ids[0],
                         next_seq=2) == set()
    await store.mark_sending(run_id, 1, lease=old)
    assert await store.renew_lease(old, TTL)
    # not expired yet: nobody takes it
    assert await store.claim_chunk("b", TTL) is None
    expire(store_url, old)
    new = await store.claim_chunk("b", TTL)
    assert new is not None
    assert (new.chunk, new.fence, new.worker, new.taken_over) == (old.chunk, 2, "b", True)
    assert (new.checkpoint, new.next_seq) == (w.ids[0], 2)

    _, run_before = await store.get_run(run_id)
    journal_before = shape(await store.journal(run_id))
    rows_before = await store.recipient_rows(run_id)
    chunks_before = [c._replace(lease_left=None) for c in await store.chunks(run_id)]
    second = [message(2, w.ids[1], w.phones[1])]
    with pytest.raises(LeaseLost, match="taken over"):
        await reserve(store, run_id, old, [(2, "s", second)], checkpoint=w.ids[1],
                      next_seq=3, audience_done=True)
    with pytest.raises(LeaseLost):
        await store.mark_sending(run_id, 2, lease=old)
    with pytest.raises(LeaseLost):
        await store.unmark_sending(run_id, 1, lease=old)
    with pytest.raises(LeaseLost):
        await store.move_batch(run_id, 1, "t", lease=old)
    with pytest.raises(LeaseLost):
        await store.record(run_id, 1, "s", first, sent(first), lease=old)
    with pytest.raises(LeaseLost):
        await store.release_chunk(old, done=True)
    assert not await store.renew_lease(old, TTL)
    # nothing of it was written
    assert (await store.get_run(run_id))[1] == run_before
    assert shape(await store.journal(run_id)) == journal_before == [(1, "s", "sending", [1])]
    assert await store.recipient_rows(run_id) == rows_before == []
    assert [c._replace(lease_left=None) for c in await store.chunks(run_id)] == chunks_before
    assert (await store.lookup(run_id, [], [w.phones[1]]))[1] == set()
    # the new owner settles the old owner's batch and goes on
    await store.move_batch(run_id, 1, "t", lease=new)
    await store.record(run_id, 1, "t", first, sent(first), lease=new)
    assert await store.journal(run_id) == []
    assert await reserve(store, run_id, new, [(2, "s", second)], next_seq=3) == set()
    assert await store.renew_lease(new, TTL)


async def test_a_lease_writes_its_chunks_position_not_the_runs(store: Store) -> None:
    w, run_id, _ = await chunked(store, 4, 2)
    lease = await store.claim_chunk("a", TTL)
    assert lease is not None and lease.chunk == 0
    msgs = [message(1, w.ids[0], w.phones[0])]
    await reserve(store, run_id, lease, [(1, "s", msgs)], checkpoint=w.ids[1], next_seq=2,
                  audience_done=True)
    _, run = await store.get_run(run_id)
    assert (run.checkpoint, run.next_seq, run.audience_done) == (0, 1, False)
    assert run.counts["reserved"] == 1 and run.counts["found"] == 1
    # a chunk given back keeps its position for whoever takes it next
    assert not await store.release_chunk(lease, done=False)
    row = (await store.chunks(run_id))[0]
    assert (row.state, row.worker, row.checkpoint) == ("pending", None, w.ids[1])
    again = await store.claim_chunk("b", TTL)
    assert again is not None
    assert (again.chunk, again.fence, again.taken_over) == (0, 2, False)
    assert (again.checkpoint, again.next_seq, again.audience_done) == (w.ids[1], 2, True)


async def test_releasing_the_last_chunk_done_says_so(store: Store) -> None:
    _, run_id, count = await chunked(store, 6, 2)
    assert count == 3
    a, b, c = [await store.claim_chunk("w", TTL) for _ in range(3)]
    assert a and b and c
    assert not await store.release_chunk(a, done=True)
    assert not await store.release_chunk(b, done=False)
    assert not (await store.get_run(run_id))[1].audience_done
    b = await store.claim_chunk("w", TTL)
    assert b is not None and b.chunk == 1
    # the two last at once: exactly one of them made every chunk done
    results: list[bool] = []

    async def release(lease: Lease) -> None:
        results.append(await store.release_chunk(lease, done=True))

    async with anyio.create_task_group() as tg:
        tg.start_soon(release, b)
        tg.start_soon(release, c)
    assert sorted(results) == [False, True]
    assert [r.state for r in await store.chunks(run_id)] == ["done"] * 3
    assert (await store.get_run(run_id))[1].audience_done
    assert await store.claim_chunk("w", TTL) is None


async def test_a_phone_reserved_under_two_leases_is_accepted_once(
    store: Store, second: Store,
) -> None:
    w, run_id, _ = await chunked(store, 4, 2)
    one = await store.claim_chunk("a", TTL)
    two = await second.claim_chunk("b", TTL)
    assert one is not None and two is not None and one.chunk != two.chunk
    shared = w.phones[0]
    # chunk 1's profile has the same phone as chunk 0's (two profiles, one person)
    mine = [message(1, w.ids[0], shared), message(2, w.ids[1], w.phones[1])]
    theirs = [message(SEQS + 1, w.ids[2], shared), message(SEQS + 2, w.ids[3], w.phones[3])]
    refused: dict[str, set[int]] = {}

    async def go(name: str, s: Store, lease: Lease, batch: int,
                 msgs: list[Message]) -> None:
        refused[name] = await reserve(s, run_id, lease, [(batch, "s", msgs)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, "one", store, one, 1, mine)
        tg.start_soon(go, "two", second, two, SEQS + 1, theirs)
    assert sorted(refused.values(), key=len) == [set(), {1} if refused["one"] else {SEQS + 1}]
    loser = 1 if refused["one"] else SEQS + 1
    _, run = await store.get_run(run_id)
    assert run.counts == {"found": 4, "reserved": 3, "duplicate": 1}
    assert [(r.seq, r.state, r.reason) for r in await store.recipient_rows(run_id)] == [
        (loser, "skipped", "duplicate")]
    journalled = [e.seq for b in await store.journal(run_id) for e in b.entries]
    assert sorted(journalled) == sorted({1, 2, SEQS + 1, SEQS + 2} - {loser})
    # the refused message is not in the policy history
    per_phone = Policy(max_messages=5, period_days=1, scope="contact")
    counted = await store.policy_counts(per_phone, w.resource_id, [shared], wall_clock())
    assert counted == {shared: 1}
    # a later reserve of the phone is refused too, and so is a second message to a
    # phone in one reserve; a batch left empty is not journalled
    again = [message(3, w.ids[0], shared)]
    twice = [message(4, w.ids[1], "+447900000077"), message(5, w.ids[1], "+447900000077")]
    assert await reserve(store, run_id, one, [(2, "s", again), (3, "s", twice)]) == {3, 5}
    assert 2 not in {b.batch for b in await store.journal(run_id)}
    assert [e.seq for b in await store.journal(run_id) if b.batch == 3 for e in b.entries] == [4]
    _, run = await store.get_run(run_id)
    assert run.counts == {"found": 7, "reserved": 4, "duplicate": 3}


async def test_workers_heartbeat_and_the_silent_are_dropped(
    store: Store, store_url: str,
) -> None:
    await store.worker_heartbeat("w1", host="h1", pid=11, chunks=0, ttl=TTL)
    await store.worker_heartbeat("w2", host="h2", pid=22, chunks=1, ttl=TTL)
    await store.worker_heartbeat("w1", host="h1", pid=11, chunks=3, ttl=TTL)
    rows = await store.workers()
    assert [(r.worker, r.host, r.pid, r.chunks) for r in rows] == [
        ("w1", "h1", 11, 3), ("w2", "h2", 22, 1)]
    assert all(r.started_at <= r.heartbeat_at for r in rows)
    sql(store_url, "UPDATE cluster_workers SET heartbeat_at = heartbeat_at - 100"
                   " WHERE worker = 'w1'")
    await store.worker_heartbeat("w2", host="h2", pid=22, chunks=1, ttl=TTL)
    assert [r.worker for r in await store.workers()] == ["w2"]


async def test_a_database_of_the_first_schema_migrates() -> None:
    skip_without_server()
    with throwaway_database("herald_pgcluster") as url:
        sql(url, MIGRATIONS[0])
        sql(url, "CREATE TABLE herald_schema (version int)")
        sql(url, "INSERT INTO herald_schema VALUES (1)")
        s = await PostgresStore.open(url)
        try:
            assert sql(url, "SELECT version FROM herald_schema") == [(len(MIGRATIONS),)]
            assert await s.chunks(1) == [] and await s.workers() == []
        finally:
            await s.aclose()


async def test_sqlite_refuses_a_cluster(tmp_path: Path) -> None:
    s = await open_store(f"sqlite:///{tmp_path / 'herald.db'}")
    try:
        with pytest.raises(StoreError, match="PostgreSQL"):
            await s.claim_chunk("w", TTL)
        w = await make_world(s, 1)
        _, run = await new_run(s, w)
        with pytest.raises(StoreError, match="PostgreSQL"):
            await s.create_chunks(run.id, w.source(), size=10)
        lease = Lease(run.id, 0, 0, None, 1, "w", 0, 1, False, False)
        with pytest.raises(StoreError, match="PostgreSQL"):
            await reserve(s, run.id, lease, [])
    finally:
        await s.aclose()
