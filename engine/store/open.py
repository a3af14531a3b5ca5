"""``open_store(url)``: the store a URL names.

- a path, or ``sqlite:///PATH`` (``sqlite:////abs/path`` for an absolute one): the embedded
  SQLite store in that file, created and migrated as needed;
- ``postgresql://USER@HOST[:PORT]/DB`` (or ``postgres://``): the PostgreSQL store, its
  schema created and migrated as needed.

``[engine] database`` in the config holds the URL; the ``HERALD_DATABASE`` environment
variable overrides it for every command.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import InputError
from engine.store.base import Store

__all__ = ["ENV", "bad_url", "is_postgres", "open_store", "resolve_url", "sqlite_path"]

#: The environment variable that overrides ``[engine] database``.
ENV = "HERALD_DATABASE"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def bad_url(url: str) -> str | None:
    """What is wrong with ``url`` as a store's URL, or None."""
    if is_postgres(url):
        return None
    if url.startswith("sqlite://"):
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            return f"{url!r}: a SQLite URL is sqlite:///PATH (sqlite:////PATH if absolute)"
        return None
    if "://" in url:
        return f"{url!r}: expected a file path, sqlite:///PATH or a postgresql:// URL"
    if not url.strip():
        return "expected a file path, sqlite:///PATH or a postgresql:// URL"
    return None


def resolve_url(url: str, base: Path | None = None) -> str:
    """``url`` with a relative SQLite path made relative to ``base`` (the config's
    directory), as ``sqlite:///`` + the absolute path; PostgreSQL URLs as they are."""
    if is_postgres(url):
        return url
    if (why := bad_url(url)) is not None:
        raise InputError(f"database: {why}")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
    else:
        path = Path(url).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return "sqlite:///" + str(path)


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///`` URL from :func:`resolve_url`."""
    return Path(url[len("sqlite:///"):])


async def open_store(url: str, *, base: Path | None = None) -> Store:
    """Open (creating and migrating) the store ``url`` names."""
    url = resolve_url(url, base)
    if is_postgres(url):
        from engine.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    from engine.store.sqlite import SQLiteStore

    return SQLiteStore.open(sqlite_path(url))
