"""The PostgreSQL store's foundation: opening and migrating a database, and imports that
do what SQLite's do on the same records (compared side by side, through the protocols).

Tests that need a database of their own (a new one, or ids from 1) take ``pg_url``; the
others the session's ``store``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from engine.errors import InputError, StoreError
from engine.store.base import ImportRecord, Store
from engine.store.models import AudienceSource
from engine.store.open import open_store
from engine.store.postgres import PostgresStore
from engine.store.postgres.schema import MIGRATIONS
from tests.store.helpers import fields_of, phone

pytestmark = pytest.mark.anyio

#: On the PostgreSQL leg of the ``store`` fixture only (and named so: ``-k postgres``).
on_postgres = pytest.mark.parametrize("store_kind", ["postgres"])


def _version(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version FROM herald_schema").fetchall()


@on_postgres
async def test_a_new_database_is_migrated_once(store_kind: str, pg_url: str) -> None:
    first = await PostgresStore.open(pg_url)
    try:
        assert _version(pg_url) == [(len(MIGRATIONS),)]
        again = await PostgresStore.open(pg_url)
        try:
            assert again.url == pg_url
            assert await again.database_id("main", create=True) == await first.database_id(
                "main")
        finally:
            await again.aclose()
    finally:
        await first.aclose()
    assert _version(pg_url) == [(len(MIGRATIONS),)]


@on_postgres
async def test_a_newer_schema_is_refused(store_kind: str, pg_url: str) -> None:
    await (await PostgresStore.open(pg_url)).aclose()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE herald_schema SET version = 99")
    with pytest.raises(StoreError, match=r"schema version 99 is newer than this Herald"):
        await PostgresStore.open(pg_url)


@on_postgres
async def test_processes_opening_a_new_database_at_once_migrate_it_once(
    store_kind: str, pg_url: str
) -> None:
    stores: list[PostgresStore] = []

    async def one() -> None:
        stores.append(await PostgresStore.open(pg_url))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    for s in stores:
        await s.aclose()
    assert _version(pg_url) == [(len(MIGRATIONS),)]


@on_postgres
async def test_the_url_has_no_password(store_url: str) -> None:
    url = store_url.replace("postgresql://postgres@", "postgresql://postgres:secret@")
    s = await PostgresStore.open(url)
    try:
        assert "secret" not in s.url and s.url.endswith(store_url.rsplit("/", 1)[1])
    finally:
        await s.aclose()


def _rec(key: Any, ph: str | None = None, email: str | None = None, **fields: Any) -> ImportRecord:
    return ImportRecord(key, ph, email, fields)


async def _scenario(s: Store) -> list[Any]:
    """Imports of every matching and mode, and what they leave behind."""
    seen: list[Any] = []
    main = await s.database_id("main", create=True)
    other = await s.database_id("other", create=True)
    rid = await s.resource_id("news")
    imports: list[tuple[int, list[ImportRecord], str, str, int | None]] = [
        (main, [_rec(phone(1), phone(1), "a@x.io", n=1, tags=["a"]),
                _rec(phone(2), phone(2), None, n=2),
                _rec(phone(1), None, "a2@x.io", n=11, city="Paris"),
                _rec(None, None, "nokey@x.io", n=0),
                _rec(phone(3), phone(3), "c@x.io", code="X1", vip=True)],
         "phone", "add+update", rid),
        (main, [_rec("a2@x.io", None, None, n=12), _rec("zz@x.io", phone(9), "zz@x.io")],
         "email", "add", rid),
        (main, [_rec("c@x.io", phone(4), None, n=3), _rec("nobody@x.io", phone(5))],
         "email", "update", rid),
        (other, [_rec(phone(1), phone(1), None, n=100)], "phone", "add+update", None),
        (main, [_rec(50, phone(6), None, n=50), _rec(51, None, None), _rec(50, None, None, m=1),
                _rec(1, None, None, n=13), _rec(None, phone(7)), _rec(0, phone(7))],
         "id", "add+update", rid),
        (main, [_rec(6, phone(8))], "id", "add+update", rid),
        (main, [_rec(phone(10), phone(10), None, n=10)], "phone", "add+update", rid),
        (main, [_rec("X1", None, None, n=30), _rec("1", None, None, k=1),
                _rec("Y", phone(11), None, code="Y")], "field:code", "add+update", rid),
        (main, [_rec("1", None, None, flag=1)], "field:vip", "add+update", rid),
        (main, [_rec("10", None, None, hit=True)], "field:n", "update", rid),
        (main, [_rec(phone(1), phone(1)), _rec(phone(1), phone(12))], "phone", "add+update", rid),
    ]
    # the profile of ``other`` is id 6: importing id 6 into main is refused
    for database_id, records, matching, mode, resource in imports:
        try:
            seen.append(await s.import_profiles(
                database_id, records, matching=matching, resource_id=resource, mode=mode))
        except InputError as err:
            seen.append(str(err))
    for matching, mode in (("phone", "merge"), ("field:", "add"), ('field:"x', "add"),
                           ("name", "add")):
        with pytest.raises(InputError) as info:
            await s.import_profiles(main, [_rec(1)], matching=matching, resource_id=None,
                                    mode=mode)
        seen.append(str(info.value))
    for db in (main, other):
        rows = await s.audience_chunk(AudienceSource("list", db), rid, 0, 100)
        seen.append([(r[0], fields_of(r[1]), r[2]) for r in rows])
    ids = [r[0] for r in await s.audience_chunk(AudienceSource("list", main), rid, 0, 100)]
    seen.append(await s.find_profiles(main, "email", ["a2@x.io", "c@x.io", "none@x.io"]))
    seen.append(await s.find_profiles(main, "phone", [phone(1), phone(4), phone(12)]))
    seen.append(sorted(await s.profile_ids_in(main, [*ids, 999, ids[0]])))
    seen.append(await s.set_subscription_status(rid, [ids[0], ids[0], ids[1], 999],
                                                "unsubscribed"))
    rows = await s.audience_rows(AudienceSource("list", main), rid, ids[:3])
    seen.append(sorted((r[0], r[2]) for r in rows))
    return seen


@on_postgres
async def test_imports_do_what_sqlites_do(store_kind: str, pg_url: str, tmp_path: Path) -> None:
    sqlite = await open_store(f"sqlite:///{tmp_path / 'ref.db'}")
    try:
        expected = await _scenario(sqlite)
    finally:
        await sqlite.aclose()
    pg = await open_store(pg_url)  # a new database: its ids start at 1 too
    try:
        assert await _scenario(pg) == expected
    finally:
        await pg.aclose()


@on_postgres
async def test_new_ids_follow_ids_given_and_ascend_in_batch_order(store: Store) -> None:
    main = await store.database_id("main", create=True)
    await store.import_profiles(main, [_rec(phone(0), phone(0))], matching="phone",
                                resource_id=None)
    top = (await store.find_profiles(main, "phone", [phone(0)]))[phone(0)] + 1000
    await store.import_profiles(main, [_rec(top, phone(1))], matching="id", resource_id=None)
    result = await store.import_profiles(
        main, [_rec(phone(i), phone(i)) for i in range(2, 6)], matching="phone",
        resource_id=None)
    assert result.added == 4
    found = await store.find_profiles(main, "phone", [phone(i) for i in range(2, 6)])
    assert [found[phone(i)] for i in range(2, 6)] == [top + 1, top + 2, top + 3, top + 4]


@on_postgres
async def test_imports_into_one_database_take_turns(store: Store) -> None:
    main = await store.database_id("main", create=True)
    records = [_rec(phone(i), phone(i), None, n=i) for i in range(200)]

    async def one() -> None:
        await store.import_profiles(main, records, matching="phone", resource_id=None)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    rows = await store.audience_chunk(
        AudienceSource("list", main), await store.resource_id("news"), 0, 1000)
    assert len(rows) == 200
