"""What the store contract tests share: a small world of profiles, runs on it, and the
messages and outcomes a pipeline would hand the store. Everything goes through the role
protocols of ``engine.store.base``: no SQL, no connection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from engine.core.policy import Policy
from engine.core.prepare import AudienceRow, Message, Skipped
from engine.core.states import Outcome
from engine.store.base import ImportRecord, JournalBatch, Store
from engine.store.models import AudienceSource, Mailing, Run

#: A fake "now" for the methods that take one: 2026-01-10 12:00 UTC.
T0 = 1_768_046_400.0
DAY = 86_400.0

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def phone(i: int) -> str:
    """A distinct E.164 phone for each ``i``."""
    return f"+4479{i:08d}"


def fields_of(raw: bytes | str | None) -> dict[str, Any]:
    """Profile fields as the store hands them over (JSON text), decoded."""
    return {} if raw is None else _decode(raw)


def audience(rows: Sequence[Sequence[Any]]) -> list[AudienceRow]:
    """Audience rows as ``AudienceRow``: the hot path may hand plain tuples of its four
    columns (the pipeline reads them by position), which is all the contract asks."""
    assert all(len(r) == 4 for r in rows), rows
    return [AudienceRow(*r) for r in rows]


class World(NamedTuple):
    """A profile database whose profiles are each subscribed to a resource."""

    database: str
    database_id: int
    resource_id: int
    #: Profile ids, in the order they were imported (ids ascend).
    ids: list[int]
    phones: list[str]

    def source(self) -> AudienceSource:
        return AudienceSource("list", self.database_id)


async def make_world(
    store: Store, n: int = 5, *, database: str = "main", resource: str = "news",
    first: int = 1, subscribe: bool = True,
) -> World:
    """``n`` profiles in ``database``, numbered from ``first``: phone ``phone(i)``, email
    ``p<i>@example.com``, fields ``{"n": i, "name": "P<i>"}``, subscribed to ``resource``."""
    database_id = await store.database_id(database, create=True)
    resource_id = await store.resource_id(resource)
    numbers = range(first, first + n)
    records = [
        ImportRecord(phone(i), phone(i), f"p{i}@example.com", {"n": i, "name": f"P{i}"})
        for i in numbers
    ]
    result = await store.import_profiles(
        database_id, records, matching="phone", resource_id=resource_id if subscribe else None)
    assert result.added == n
    phones = [phone(i) for i in numbers]
    found = await store.find_profiles(database_id, "phone", phones)
    return World(database, database_id, resource_id, [found[p] for p in phones], phones)


async def new_run(
    store: Store, world: World, *, name: str = "m", resource: str = "news",
    policy: Policy | None = None,
) -> tuple[Mailing, Run]:
    return await store.create_run(
        name=name, resource=resource, source=world.source(), template="hi {lead.name}",
        limit=None, policy=policy,
    )


def message(seq: int, profile_id: int, to: str, sender: str = "s") -> Message:
    return Message(seq, f"r-{seq}", profile_id, to, sender, f"text {seq}", 1)


def messages(world: World, seqs: Sequence[int], sender: str = "s") -> list[Message]:
    """The messages of seqs ``seqs`` (1-based), to the world's profiles in turn."""
    return [message(s, world.ids[s - 1], world.phones[s - 1], sender) for s in seqs]


def sent(msgs: Sequence[Message], prefix: str = "prov") -> list[Outcome]:
    """Every message taken by its gateway, with provider id ``<prefix>-<seq>``."""
    return [Outcome(m.seq, "sent", provider_id=f"{prefix}-{m.seq}") for m in msgs]


async def reserve(
    store: Store, run_id: int, batches: Sequence[tuple[int, str, Sequence[Message]]], *,
    skipped: Sequence[Skipped] = (), checkpoint: int = 0, next_seq: int | None = None,
    counts: dict[str, int] | None = None, audience_done: bool = False,
) -> None:
    await store.reserve(
        run_id, batches=batches, skipped=skipped, checkpoint=checkpoint, next_seq=next_seq,
        counts=counts or {}, audience_done=audience_done,
    )


async def states(store: Store, run_id: int) -> dict[int, str]:
    """Each recorded recipient's state, by seq."""
    return {r.seq: r.state for r in await store.recipient_rows(run_id)}


def shape(journal: Sequence[JournalBatch]) -> list[tuple[int, str, str, list[int]]]:
    """(batch, sender, state, seqs) of each journalled batch."""
    return [(b.batch, b.sender, b.state, [e.seq for e in b.entries]) for b in journal]


def wall_clock() -> float:
    """Now, for the receipts that ``record`` applies: it checks their expiry against the
    clock (it takes no ``now``), so a test that keeps receipts for it uses a real one."""
    return time.time()
