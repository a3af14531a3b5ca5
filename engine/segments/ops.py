"""Segments in the SQLite store: create, count, show, and read one in audience chunks.

A static segment is a list of profiles (``segment_members``). A dynamic one stores its
condition text and is evaluated whenever it is read: counting it, or reading it for a
launch, selects its members at that moment. Reads are keyset-paginated by profile id and
stream: rows SQL cannot decide are judged in Python a chunk at a time, never all at once.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from engine.core.prepare import AudienceRow
from engine.errors import InputError, NotFound
from engine.segments.condition import Condition, compile_condition, lead_view
from engine.segments.dates import Now
from engine.store.sqlite import _PICK_SUBSCRIPTION, SQLiteStore

__all__ = [
    "Member",
    "Segment",
    "SegmentInfo",
    "count_segment",
    "create_segment",
    "get_segment",
    "read_profile_ids",
    "segment_chunk",
    "show_segment",
]

Functions = Mapping[str, Callable[..., Any]] | None

_SCAN_CHUNK: Final = 2000  # rows per query when a scan needs Python
_ID_CHUNK: Final = 10_000  # ids per query when checking a static segment's members
_json = msgspec.json.Encoder()


class Segment(msgspec.Struct, frozen=True, kw_only=True):
    """A stored segment. ``condition`` is the text of a dynamic segment's condition."""

    id: int
    name: str
    database: str
    database_id: int
    kind: Literal["static", "dynamic"]
    condition: str | None
    created_at: float


class Member(msgspec.Struct, frozen=True):
    """A profile of a segment, as ``segment show`` samples it."""

    id: int
    phone: str | None
    email: str | None


class SegmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``segment show`` reports. ``count`` is counted now; ``sample`` are the first
    members by profile id; ``python_only`` are the parts of the condition SQL never
    decides, and ``decided_in_sql`` says whether SQL decides every profile."""

    name: str
    kind: str
    database: str
    condition: str | None
    count: int
    sample: list[Member]
    decided_in_sql: bool
    python_only: list[str]


# -- creating ----------------------------------------------------------------------------------


def create_segment(
    store: SQLiteStore,
    name: str,
    database: str,
    where: str | None = None,
    *,
    profile_ids: Iterable[int] | None = None,
    functions: Functions = None,
) -> Segment:
    """Create a dynamic segment from the condition ``where``, or a static one from
    ``profile_ids`` (each must be a profile of ``database``).

    Raises TemplateError for a condition that does not compile, NotFound for an unknown
    database, InputError for a taken name or profile ids not in the database.
    """
    if (where is None) == (profile_ids is None):
        raise InputError("give a segment either a condition or a list of profile ids")
    name = name.strip()
    if not name:
        raise InputError("a segment needs a name")
    database_id = store.database_id_sync(database)
    try:
        if where is not None:
            compile_condition(where, functions=functions)
            with store._tx() as c:
                c.execute(
                    "INSERT INTO segments (name, database_id, kind, condition, created_at)"
                    " VALUES (?, ?, 'dynamic', ?, ?)",
                    (name, database_id, where, time.time()),
                )
        else:
            assert profile_ids is not None
            ids = list(dict.fromkeys(profile_ids))
            _check_members(store, database, database_id, ids)
            store.create_static_segment(name, database_id, ids)
    except sqlite3.IntegrityError:
        raise InputError(f"a segment named {name!r} already exists") from None
    return get_segment(store, name)


def _check_members(store: SQLiteStore, database: str, database_id: int, ids: list[int]) -> None:
    """InputError naming (up to five) ``ids`` that are not profiles of the database."""
    for start in range(0, len(ids), _ID_CHUNK):
        missing = store.conn.execute(
            "SELECT j.value FROM json_each(?) j LEFT JOIN profiles p ON p.id = j.value"
            " AND p.database_id = ? WHERE p.id IS NULL LIMIT 5",
            (_json.encode(ids[start : start + _ID_CHUNK]), database_id),
        ).fetchall()
        if missing:
            shown = ", ".join(str(row[0]) for row in missing)
            raise InputError(f"no profile with id {shown} in database {database!r}")


def read_profile_ids(path: str | Path) -> list[int]:
    """The profile ids in a file: whole numbers separated by new lines, spaces or commas.

    Blank lines and lines starting with ``#`` are skipped, and so is a first line ``id``
    (a CSV header). InputError names the file, line and value of anything else.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as err:
        raise InputError(f"{path}: cannot read the ids ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason})") from err
    ids: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or (not ids and stripped == "id"):
            continue
        for token in stripped.replace(",", " ").split():
            if not (token.isascii() and token.isdigit() and len(token) < 20):
                raise InputError(f"{path}:{number}: not a profile id: {token!r}")
            ids.append(int(token))
    return ids


# -- reading -----------------------------------------------------------------------------------


def get_segment(store: SQLiteStore, name: str) -> Segment:
    """The segment named ``name``; NotFound if there is none."""
    row = store.conn.execute(
        "SELECT g.id, g.name, d.name, g.database_id, g.kind, g.condition, g.created_at"
        " FROM segments g JOIN databases d ON d.id = g.database_id WHERE g.name = ?",
        (name,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no segment named {name!r}")
    return _segment(row)


def _segment(row: Sequence[Any]) -> Segment:
    kind: Literal["static", "dynamic"] = "dynamic" if row[4] == "dynamic" else "static"
    return Segment(id=row[0], name=row[1], database=row[2], database_id=row[3], kind=kind,
                   condition=row[5], created_at=row[6])


def _segment_by_id(store: SQLiteStore, segment_id: int) -> Segment:
    row = store.conn.execute(
        "SELECT g.id, g.name, d.name, g.database_id, g.kind, g.condition, g.created_at"
        " FROM segments g JOIN databases d ON d.id = g.database_id WHERE g.id = ?",
        (segment_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no segment with id {segment_id}")
    return _segment(row)


@functools.lru_cache(maxsize=128)
def _cached(text: str) -> Condition:
    return compile_condition(text)


def _condition(segment: Segment, functions: Functions) -> Condition:
    assert segment.condition is not None
    if functions:
        return compile_condition(segment.condition, functions=functions)
    return _cached(segment.condition)


def count_segment(store: SQLiteStore, name: str, now: Now, *, functions: Functions = None) -> int:
    """How many profiles the segment holds now (a dynamic one is evaluated afresh)."""
    segment = get_segment(store, name)
    if segment.kind == "static":
        (n,) = store.conn.execute(
            "SELECT count(*) FROM segment_members WHERE segment_id = ?", (segment.id,)
        ).fetchone()
        return int(n)
    condition = _condition(segment, functions)
    params = condition.bind(now)
    (n,) = store.conn.execute(
        f"SELECT count(*) FROM profiles p WHERE p.database_id = ? AND ({condition.verdict}) = 1",
        (segment.database_id, *params),
    ).fetchone()
    count = int(n)
    if not condition.decided:
        for rows in _undecided(store, segment.database_id, condition, params):
            count += sum(condition.residual(lead_view(*row), now) for row in rows)
    return count


def _undecided(
    store: SQLiteStore, database_id: int, condition: Condition, params: tuple[Any, ...]
) -> Iterator[list[Any]]:
    """Pages of (id, fields, phone, email) of the profiles SQL leaves to Python."""
    after = 0
    while True:
        rows = store.conn.execute(
            "SELECT p.id, p.fields, p.phone, p.email FROM profiles p"
            f" WHERE p.database_id = ? AND p.id > ? AND ({condition.verdict}) IS NULL"
            " ORDER BY p.id LIMIT ?",
            (database_id, after, *params, _SCAN_CHUNK),
        ).fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield rows


def segment_chunk(
    store: SQLiteStore,
    segment_id: int,
    resource_id: int,
    after_id: int,
    limit: int,
    now: Now,
    *,
    functions: Functions = None,
) -> tuple[list[AudienceRow], int | None]:
    """The segment's next profiles after ``after_id``, as ``SQLiteStore.audience_chunk``
    reads them: (profile id, fields, subscription phone, subscription fields), the
    subscription being the profile's best active SMS one to ``resource_id``, or NULLs.

    Returns the rows and the last profile id scanned, None when nothing is left past
    ``after_id``. Up to ``limit`` profiles are scanned; those Python rejects are dropped,
    so the rows may be fewer than ``limit``, or none, while more remain: continue from the
    returned id.
    """
    segment = _segment_by_id(store, segment_id)
    if segment.kind == "static":
        rows = store.conn.execute(
            "SELECT p.id, p.fields, s.phone, s.fields FROM segment_members g"
            f" JOIN profiles p ON p.id = g.profile_id {_PICK_SUBSCRIPTION}"
            " WHERE g.segment_id = ? AND g.profile_id > ? ORDER BY g.profile_id LIMIT ?",
            (resource_id, segment.id, after_id, limit),
        ).fetchall()
        return rows, (rows[-1][0] if rows else None)
    condition = _condition(segment, functions)
    params = condition.bind(now)
    verdict = condition.verdict
    scanned = store.conn.execute(
        f"SELECT p.id, p.fields, s.phone, s.fields, ({verdict}) IS NULL, p.phone, p.email"
        f" FROM profiles p {_PICK_SUBSCRIPTION}"
        f" WHERE p.database_id = ? AND p.id > ? AND ({verdict}) IS NOT 0"
        " ORDER BY p.id LIMIT ?",
        (*params, resource_id, segment.database_id, after_id, *params, limit),
    ).fetchall()
    if not scanned:
        return [], None
    rows = [
        row[:4] for row in scanned
        if not row[4] or condition.residual(lead_view(row[0], row[1], row[5], row[6]), now)
    ]
    return rows, scanned[-1][0]


def show_segment(
    store: SQLiteStore, name: str, now: Now, *, sample: int = 10, functions: Functions = None
) -> SegmentInfo:
    """The segment, its count now and its first ``sample`` members."""
    segment = get_segment(store, name)
    members: list[Member] = []
    decided, python_only = True, []
    if segment.kind == "static":
        members = [
            Member(*row) for row in store.conn.execute(
                "SELECT p.id, p.phone, p.email FROM segment_members g JOIN profiles p"
                " ON p.id = g.profile_id WHERE g.segment_id = ? ORDER BY g.profile_id LIMIT ?",
                (segment.id, sample),
            )
        ]
    else:
        condition = _condition(segment, functions)
        decided, python_only = condition.decided, list(condition.python_only)
        params = condition.bind(now)
        after = 0
        while len(members) < sample:
            scanned = store.conn.execute(
                f"SELECT p.id, p.phone, p.email, ({condition.verdict}) IS NULL, p.fields"
                " FROM profiles p WHERE p.database_id = ? AND p.id > ?"
                f" AND ({condition.verdict}) IS NOT 0 ORDER BY p.id LIMIT ?",
                (*params, segment.database_id, after, *params, _SCAN_CHUNK),
            ).fetchall()
            if not scanned:
                break
            after = scanned[-1][0]
            members += [
                Member(row[0], row[1], row[2]) for row in scanned
                if not row[3] or condition.residual(lead_view(row[0], row[4], row[1], row[2]),
                                                    now)
            ]
    return SegmentInfo(
        name=segment.name,
        kind=segment.kind,
        database=segment.database,
        condition=segment.condition,
        count=count_segment(store, name, now, functions=functions),
        sample=members[:sample],
        decided_in_sql=decided,
        python_only=python_only,
    )
