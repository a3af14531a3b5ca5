"""Throwaway PostgreSQL databases for tests, on the server at 127.0.0.1:5432.

``HERALD_TEST_PG`` names the server (default ``postgresql://postgres@127.0.0.1:5432``).
Without a reachable server the tests that need one skip, saying why; ``.ci/run`` sets
``HERALD_REQUIRE_SERVICES=1``, which turns those skips into failures.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

SERVER = os.environ.get("HERALD_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def unreachable() -> str | None:
    """Why no PostgreSQL server can be used, or None."""
    try:
        import psycopg
    except ImportError as err:  # pragma: no cover - psycopg is a dependency
        return f"psycopg is not installed ({err})"
    try:
        with psycopg.connect(f"{SERVER}/postgres", connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return f"no PostgreSQL server at {SERVER} ({str(err).strip()})"
    return None


def skip_without_server() -> None:
    why = unreachable()
    if why is None:
        return
    if os.environ.get("HERALD_REQUIRE_SERVICES"):
        pytest.fail(f"HERALD_REQUIRE_SERVICES is set, but {why}")
    pytest.skip(why)


@contextmanager
def throwaway_database(prefix: str = "herald_test") -> Iterator[str]:
    """A new, empty database; its URL. Dropped afterwards, connections and all."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
