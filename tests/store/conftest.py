"""The store contract suite's fixtures: every test here runs on each store.

``store_url`` is an empty database per test: a SQLite file in ``tmp_path``, or a PostgreSQL
database made for the session, migrated once and emptied between tests (``pg_session_db``).
``store`` opens it (on the test's async backend) and closes it after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.store.base import Store
from engine.store.open import open_store
from tests.pg import skip_without_server, throwaway_database


@pytest.fixture(scope="session")
def pg_session_db() -> Iterator[str]:
    """One throwaway PostgreSQL database for the session's store tests."""
    skip_without_server()
    with throwaway_database("herald_store") as url:
        yield url


def _reset(url: str) -> None:
    """Empty every table of the session database but the schema's version, so each test
    starts on no data (migrating afresh per test cost ten times as much). Ids go on from
    where the last test left them."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename != 'herald_schema'")]
        if tables:
            conn.execute("SET LOCAL session_replication_role = replica")
            for table in tables:
                conn.execute(f'DELETE FROM "{table}"')
        conn.commit()


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if store_kind == "sqlite":
        return f"sqlite:///{tmp_path / 'herald.db'}"
    url: str = request.getfixturevalue("pg_session_db")
    _reset(url)
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.aclose()
