"""What the operator console lists, on every store: the profile databases with their
counts, a database's profiles a page at a time, and every segment."""

from __future__ import annotations

import pytest

from engine.store.base import DatabaseRow, ProfileRow, Store
from tests.store.helpers import make_world, phone

pytestmark = pytest.mark.anyio


async def test_databases_are_listed_by_name_with_their_profile_counts(store: Store) -> None:
    assert await store.database_rows() == []
    main = await make_world(store, 3)
    other = await make_world(store, 2, database="archive", first=10)
    empty = await store.database_id("zero", create=True)
    assert await store.database_rows() == [
        DatabaseRow(other.database_id, "archive", 2),
        DatabaseRow(main.database_id, "main", 3),
        DatabaseRow(empty, "zero", 0),
    ]


async def test_a_databases_profiles_come_a_page_at_a_time_in_id_order(store: Store) -> None:
    w = await make_world(store, 5)
    await make_world(store, 2, database="other", first=20)  # never among main's
    first = await store.profile_page(w.database_id, 0, 2)
    assert first == [
        ProfileRow(w.ids[0], phone(1), "p1@example.com", {"n": 1, "name": "P1"}),
        ProfileRow(w.ids[1], phone(2), "p2@example.com", {"n": 2, "name": "P2"}),
    ]
    rest = await store.profile_page(w.database_id, first[-1].id, 10)
    assert [p.id for p in rest] == w.ids[2:]
    assert await store.profile_page(w.database_id, w.ids[-1], 10) == []


async def test_segments_are_listed_by_name_with_their_database_and_kind(store: Store) -> None:
    w = await make_world(store, 3)
    assert await store.segment_rows() == []
    static = await store.create_segment("vip", w.database_id, profile_ids=w.ids[:1])
    dynamic = await store.create_segment("big", w.database_id, condition="lead.n greater 1")
    rows = await store.segment_rows()
    assert rows == [dynamic, static]
    assert [(r.name, r.database, r.kind) for r in rows] == [
        ("big", "main", "dynamic"), ("vip", "main", "static")]
