"""The tracking domain on PostgreSQL, where several processes share the store: first calls
made at once agree, and two workers' leased records count into one report."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from engine.core.states import Outcome
from engine.store.base import LinkRow, ReportFilter, Store
from engine.store.open import open_store
from tests.store.helpers import make_world, message, new_run

pytestmark = pytest.mark.anyio


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


async def test_processes_asking_at_once_get_one_secret_and_one_set_of_links(
    store: Store, second: Store,
) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    secrets: list[bytes] = []
    links: dict[int, list[list[LinkRow]]] = {0: [], 2**32: []}

    async def ask(s: Store, urls: list[str], slots: int, seq_base: int) -> None:
        secrets.append(await s.tracking_secret())
        links[seq_base].append(await s.ensure_links(run.id, urls, slots, seq_base=seq_base))

    async with anyio.create_task_group() as tg:
        for i in range(3):
            for seq_base in links:  # the run's first chunk and its second, at once
                tg.start_soon(ask, store, ["https://a.example"], 1, seq_base)
                tg.start_soon(ask, second, [f"https://other{i}.example", "https://b.example"],
                              0, seq_base)
    assert len(set(secrets)) == 1
    for seq_base, asked in links.items():
        assert all(rows == asked[0] for rows in asked)
        assert len(asked[0]) in (2, 3)  # whoever came first made them
        assert {r.seq_base for r in asked[0]} == {seq_base}
    assert not {r.id for r in links[0][0]} & {r.id for r in links[2**32][0]}


async def test_workers_leased_records_count_into_one_report(
    store: Store, second: Store,
) -> None:
    w = await make_world(store, 4)
    _, run = await new_run(store, w)
    assert await store.create_chunks(run.id, w.source(), size=2) == 2
    leases = [await s.claim_chunk(f"w{i}", 30.0, run_id=run.id)
              for i, s in enumerate((store, second))]

    async def work(s: Store, i: int) -> None:
        lease = leases[i]
        assert lease is not None
        seq = lease.chunk * 2**32 + 1
        m = message(seq, w.ids[2 * i], w.phones[2 * i], "s")
        await s.reserve(run.id, batches=[(seq, "s", [m])], skipped=[], checkpoint=0,
                        next_seq=None, counts={}, audience_done=False, lease=lease)
        await s.record(run.id, seq, "s", [m], [Outcome(seq, "sent", provider_id=f"p{i}")],
                       lease=lease)

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, store, 0)
        tg.start_soon(work, second, 1)
    (row,) = await store.report_channel(ReportFilter(), "sender")
    assert (row.key, row.recipients, row.sent) == ("s", 2, 2)
    assert [e.kind for e in await second.events(run_id=run.id)] == ["send_sms"] * 2
