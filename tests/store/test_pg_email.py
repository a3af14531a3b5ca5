"""The PostgreSQL store's side of the email channel: an email run's chunks on a cluster
(the ``(run, address)`` backstop of exact dedupe when several workers reserve at once,
and the policy history per address), a trigger run's reserve, a database of the schema
before email migrating with its mailings read as SMS ones, and a channel the store does
not have refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import psycopg
import pytest

from engine.core.policy import Policy
from engine.core.prepare import Message
from engine.errors import InputError
from engine.store.base import ImportRecord, Lease, Store
from engine.store.models import AudienceSource
from engine.store.open import open_store
from engine.store.postgres import PostgresStore
from engine.store.postgres.schema import MIGRATIONS
from tests.pg import skip_without_server, throwaway_database
from tests.store.helpers import phone, wall_clock

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
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def email(i: int) -> str:
    return f"user{i}@example.com"


def mail(seq: int, profile_id: int, address: str) -> Message:
    return Message(seq, f"r-{seq}", profile_id, address, "s", "<p>hi</p>", 1)


async def email_world(store: Store, n: int) -> tuple[int, int, list[int]]:
    """``n`` profiles subscribed by email to ``letters``: (database, resource, ids)."""
    database_id = await store.database_id("main", create=True)
    resource_id = await store.resource_id("letters")
    records = [ImportRecord(phone(i), phone(i), email(i), {}) for i in range(1, n + 1)]
    await store.import_profiles(database_id, records, matching="phone",
                                resource_id=resource_id, channel="email")
    found = await store.find_profiles(database_id, "phone", [phone(i) for i in range(1, n + 1)])
    return database_id, resource_id, [found[phone(i)] for i in range(1, n + 1)]


async def reserve(
    store: Store, run_id: int, lease: Lease,
    batches: Sequence[tuple[int, str, Sequence[Message]]],
) -> set[int]:
    n = sum(len(msgs) for _, _, msgs in batches)
    return await store.reserve(
        run_id, batches=batches, skipped=[], checkpoint=0, next_seq=None,
        counts={"found": n, "reserved": n}, audience_done=False, lease=lease,
    )


async def test_an_address_reserved_under_two_leases_is_accepted_once(
    store: Store, second: Store, store_url: str,
) -> None:
    database_id, resource_id, ids = await email_world(store, 4)
    source = AudienceSource("list", database_id, channel="email")
    _, run = await store.create_run(name="m", resource="letters", source=source,
                                    template="<p>hi</p>", limit=None)
    assert await store.create_chunks(run.id, source, size=2) == 2
    one = await store.claim_chunk("a", TTL)
    two = await second.claim_chunk("b", TTL)
    assert one is not None and two is not None and one.chunk != two.chunk
    # chunk 1's profile has chunk 0's address (two profiles, one person)
    shared = email(1)
    mine = [mail(1, ids[0], shared), mail(2, ids[1], email(2))]
    theirs = [mail(SEQS + 1, ids[2], shared), mail(SEQS + 2, ids[3], email(4))]
    refused: dict[str, set[int]] = {}

    async def go(name: str, s: Store, lease: Lease, batch: int,
                 msgs: list[Message]) -> None:
        refused[name] = await reserve(s, run.id, lease, [(batch, "s", msgs)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, "one", store, one, 1, mine)
        tg.start_soon(go, "two", second, two, SEQS + 1, theirs)
    loser = 1 if refused["one"] else SEQS + 1
    assert sorted(refused.values(), key=len) == [set(), {loser}]
    assert [(r.seq, r.phone, r.state, r.reason) for r in await store.recipient_rows(run.id)] == [
        (loser, shared, "skipped", "duplicate")]
    # the addresses are kept as text, in the run's own table; no phone was written
    assert sorted(sql(store_url, "SELECT address FROM run_addresses WHERE run_id = %s",
                      (run.id,))) == [(email(1),), (email(2),), (email(4),)]
    assert sql(store_url, "SELECT count(*) FROM run_phones") == [(0,)]
    # the refused message is not in the policy history, which counts per address
    contact = Policy(max_messages=5, period_days=1, scope="contact")
    assert await store.policy_counts(contact, resource_id, [shared, email(3), phone(1)],
                                     wall_clock()) == {shared: 1}
    # a later reserve of the address is refused too, and so is a second message to one
    # address in one reserve
    again = [mail(3, ids[0], shared)]
    twice = [mail(4, ids[1], "new@example.com"), mail(5, ids[1], "new@example.com")]
    assert await reserve(store, run.id, one, [(2, "s", again), (3, "s", twice)]) == {3, 5}
    _, seen = await second.lookup(run.id, [], [shared, "new@example.com", email(3)])
    assert seen == {shared, "new@example.com"}


async def test_a_trigger_runs_email_reserve_counts_per_address(
    store: Store, store_url: str,
) -> None:
    database_id, resource_id, ids = await email_world(store, 1)
    source = AudienceSource("list", database_id, channel="email")
    _, run = await store.create_run(name="t", resource="letters", source=source,
                                    template="<p>hi</p>", limit=None)
    await store.create_trigger_chunk(run.id)  # type: ignore[attr-defined]
    lease = await store.claim_chunk("w", TTL, run_id=run.id)
    assert lease is not None
    # two calls to one address are two messages: none is refused
    calls = [mail(1, ids[0], email(1)), mail(2, ids[0], email(1))]
    await store.reserve_triggers(  # type: ignore[attr-defined]
        run.id, batches=[(1, "s", calls)], skipped=[], checkpoint=1,
        counts={"reserved": 2}, lease=lease)
    contact = Policy(max_messages=5, period_days=1, scope="contact")
    assert await store.policy_counts(contact, resource_id, [email(1)], wall_clock()) == {
        email(1): 2}
    assert [e.seq for b in await store.journal(run.id) for e in b.entries] == [1, 2]


async def test_policies_count_phones_and_addresses_apart(store: Store) -> None:
    """Keys of both channels at once: phones from the SMS history, addresses from the
    email one; something that is neither counts nothing, and never raises."""
    contact = Policy(max_messages=5, period_days=1, scope="contact")
    assert await store.policy_counts(
        contact, 1, ["+447900000001", "a@example.com", "+", "+12ab", "odd"], wall_clock()
    ) == {}


async def test_a_database_of_the_schema_before_email_migrates() -> None:
    skip_without_server()
    with throwaway_database("herald_pgemail") as url:
        s = await PostgresStore.open(url)
        try:
            db = await s.database_id("main", create=True)
        finally:
            await s.aclose()
        # back to the schema before email, with a mailing of that time
        sql(url, "ALTER TABLE mailings DROP COLUMN channel")
        for table in ("run_addresses", "history_address", "opens", "first_opens", "bounces"):
            sql(url, f"DROP TABLE {table}")
        for column in ("opens", "unique_opens", "hard_bounced", "soft_bounced", "complaints"):
            sql(url, f"ALTER TABLE report_counts DROP COLUMN {column}")
        sql(url, "DROP INDEX events_sent_email")
        sql(url, "UPDATE herald_schema SET version = %s", (len(MIGRATIONS) - 1,))
        sql(url, "INSERT INTO mailings (name, kind, resource, source_kind, database_id,"
                 " template, created_at) VALUES ('old', 'broadcast', 'news', 'list', %s,"
                 " 'hi', 0)", (db,))
        s = await PostgresStore.open(url)
        try:
            assert sql(url, "SELECT version FROM herald_schema") == [(len(MIGRATIONS),)]
            (old,) = await s.list_mailings()
            assert old.source == AudienceSource("list", db, None, "sms")
        finally:
            await s.aclose()


async def test_a_channel_the_store_does_not_have_is_refused(store: Store) -> None:
    db = await store.database_id("main", create=True)
    fax = AudienceSource("list", db, channel="fax")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="sms or email"):
        await store.create_mailing(name="f", kind="broadcast", resource="news", source=fax,
                                   template="hi", limit=None)
    with pytest.raises(InputError, match="sms or email"):
        await store.audience_chunk(fax, 1, 0, 10)
    with pytest.raises(InputError, match="sms or email"):
        await store.import_profiles(db, [], matching="phone", resource_id=None,
                                    channel="fax")  # type: ignore[arg-type]
