"""Segments over the Store: create, count, show, and read the ids of a static one.

A static segment is a list of profiles; a dynamic one stores its condition text and is
evaluated whenever it is read, so counting it or launching to it selects its members at
that moment. These functions speak only the store's protocols (``SegmentStore``, and
``ProfileStore`` to find a database): each store judges conditions in its own SQL, and
``SegmentStore.condition_plan`` says how much of a condition that is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import InputError
from engine.segments.condition import Condition, compile_condition
from engine.segments.dates import Now
from engine.store.base import ConditionPlan, Member, SegmentRow, SegmentStore, Store

__all__ = [
    "Member",
    "Segment",
    "SegmentInfo",
    "condition_of",
    "count_segment",
    "create_segment",
    "get_segment",
    "read_profile_ids",
    "show_segment",
]

Functions = Mapping[str, Callable[..., Any]] | None

#: A stored segment (``SegmentRow``), under the name this module always gave it.
Segment = SegmentRow


class SegmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``segment show`` reports. ``count`` is counted now; ``sample`` are the first
    members by profile id; ``python_only`` are the parts of the condition the store's SQL
    never decides, and ``decided_in_sql`` says whether its SQL decides every profile."""

    name: str
    kind: str
    database: str
    condition: str | None
    count: int
    sample: list[Member]
    decided_in_sql: bool
    python_only: list[str]


# -- creating ----------------------------------------------------------------------------------


async def create_segment(
    store: Store,
    name: str,
    database: str,
    where: str | None = None,
    profile_ids: Iterable[int] | None = None,
    functions: Functions = None,
) -> SegmentRow:
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
    database_id = await store.database_id(database)
    if where is not None:
        compile_condition(where, functions=functions)
        return await store.create_segment(name, database_id, condition=where)
    assert profile_ids is not None
    return await store.create_segment(name, database_id, profile_ids=list(profile_ids))


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


async def get_segment(store: SegmentStore, name: str) -> SegmentRow:
    """The segment named ``name``; NotFound if there is none."""
    return await store.get_segment(name)


def condition_of(segment: SegmentRow, functions: Functions = None) -> Condition | None:
    """A dynamic segment's condition compiled with ``functions`` (a workspace's template
    functions); None for a static segment."""
    if segment.condition is None:
        return None
    return compile_condition(segment.condition, functions=functions)


async def count_segment(
    store: SegmentStore, name: str, now: Now, *, functions: Functions = None
) -> int:
    """How many profiles the segment holds now (a dynamic one is evaluated afresh)."""
    segment = await store.get_segment(name)
    return await store.count_segment(segment, condition_of(segment, functions), now)


async def show_segment(
    store: SegmentStore, name: str, now: Now, *, sample: int = 10, functions: Functions = None
) -> SegmentInfo:
    """The segment, its count now and its first ``sample`` members."""
    segment = await store.get_segment(name)
    condition = condition_of(segment, functions)
    plan = ConditionPlan(True, ()) if condition is None else store.condition_plan(condition)
    return SegmentInfo(
        name=segment.name,
        kind=segment.kind,
        database=segment.database,
        condition=segment.condition,
        count=await store.count_segment(segment, condition, now),
        sample=await store.segment_sample(segment, condition, now, sample),
        decided_in_sql=plan.decided,
        python_only=list(plan.python_only),
    )
