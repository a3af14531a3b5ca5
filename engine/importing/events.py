"""A finished import's event in the event record, for the action hooks (issue 15).

``import_file`` is written by ``herald import profiles`` (``run.import_file``, once per
command), ``import_api`` by an API import route, once per call (``/api/v1/profiles/import``,
and the Altcraft-compatible ``/api/v1.1/profiles/import`` and ``import_batch``). The
event's ``data`` is a JSON object of the import's counts, in Altcraft's manner:

- ``db_id``: the profile database's numeric id (the event's ``list_id`` too);
- ``added``, ``updated``, ``skipped`` (matched a profile in ``add`` mode): profiles;
- ``errors``: rows or profiles rejected;
- ``total``: rows or profiles read: ``added + updated + skipped + errors``;
- ``file``: the file's name, without its directory (``import_file`` only);
- ``source``: where an ``import_api`` call came from, when the caller names it (such as
  ``"/api/v1.1/profiles/import"``).

For example ``{"db_id": 1, "added": 2, "updated": 1, "skipped": 0, "errors": 1,
"total": 4, "file": "leads.csv"}``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import PurePath
from typing import Literal, Protocol

import msgspec

from engine.store.base import Store

__all__ = ["ImportCounts", "ImportKind", "import_data", "record_import"]

ImportKind = Literal["import_file", "import_api"]
_json = msgspec.json.Encoder()


class ImportCounts(Protocol):
    """What an import did, as ``run.ImportReport`` and the API's answer count it."""

    @property
    def added(self) -> int: ...

    @property
    def updated(self) -> int: ...

    @property
    def skipped(self) -> int: ...

    @property
    def rejected(self) -> int: ...


def import_data(
    kind: ImportKind, database_id: int, counts: ImportCounts | Mapping[str, int],
    *, source: str | None = None,
) -> dict[str, int | str]:
    """The event's ``data`` (see the module's docstring). ``counts`` is a report with
    ``added``, ``updated``, ``skipped`` and ``rejected``, or a mapping with those keys
    (``errors`` for ``rejected`` too; a missing key counts 0)."""
    if isinstance(counts, Mapping):
        added, updated = counts.get("added", 0), counts.get("updated", 0)
        skipped = counts.get("skipped", 0)
        errors = counts.get("errors", counts.get("rejected", 0))
    else:
        added, updated = counts.added, counts.updated
        skipped, errors = counts.skipped, counts.rejected
    data: dict[str, int | str] = {
        "db_id": database_id, "added": added, "updated": updated, "skipped": skipped,
        "errors": errors, "total": added + updated + skipped + errors,
    }
    if source is not None:
        if kind == "import_file":
            data["file"] = PurePath(source).name
        else:
            data["source"] = source
    return data


async def record_import(
    store: Store, kind: ImportKind, database_id: int,
    report_or_counts: ImportCounts | Mapping[str, int], *, source: str | None = None,
) -> None:
    """Add a finished import's event to the record, at the current time: ``source`` is
    the file (``import_file``) or the route (``import_api``)."""
    data = import_data(kind, database_id, report_or_counts, source=source)
    await store.record_import_event(kind, time.time(), database_id, _json.encode(data))
