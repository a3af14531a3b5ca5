"""``herald import profiles``: CSV files into a profile database.

The header row names the fields: ``phone``, ``email`` and ``id`` are special (matching keys;
``phone`` also subscribes the profile to ``--resource``), the standard fields carry a leading
underscore (``_fname``, ``_city``, ...), anything else is a custom field. Rows are read as a
stream and written in transactions of ``chunk`` rows, so memory stays flat. A bad row is
reported with its line number and reason and the good rows still land.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from engine.core.phones import PhoneNormaliser
from engine.errors import InputError
from engine.store.base import ImportRecord, Store

__all__ = ["ImportReport", "RowError", "import_csv"]

MATCHING = ("phone", "email", "id")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: Errors kept in the report (all are counted).
MAX_ERRORS = 1000


class RowError(msgspec.Struct, frozen=True):
    line: int
    reason: str


class ImportReport(msgspec.Struct):
    file: str
    added: int = 0
    updated: int = 0
    rejected: int = 0
    errors: list[RowError] = msgspec.field(default_factory=list)

    def summary(self) -> str:
        return f"added {self.added}, updated {self.updated}, rejected {self.rejected}"


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from err
    with handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError as err:
            raise InputError(
                f"{path}:{reader.line_num + 1}: not UTF-8 text ({err.reason})"
            ) from err
        except csv.Error as err:
            raise InputError(f"{path}:{reader.line_num}: {err}") from err


def _parse_row(
    header: list[str],
    values: list[str],
    matching: str,
    normalise: Callable[[str], str | None],
) -> ImportRecord:
    if len(values) != len(header):
        raise ValueError(f"expected {len(header)} columns, got {len(values)}")
    fields: dict[str, Any] = {}
    phone = email = None
    pid: int | None = None
    for name, raw in zip(header, values, strict=True):
        value = raw.strip()
        if not value:
            continue
        if name == "phone":
            phone = normalise(value)
            if phone is None:
                raise ValueError(f"invalid phone {value!r}")
            fields["phones"] = [phone]
        elif name == "email":
            if not _EMAIL.match(value):
                raise ValueError(f"invalid email {value!r}")
            email = value.lower()
            fields["email"] = email
        elif name == "id":
            if not value.isdigit() or int(value) <= 0 or int(value) >= 2**63:
                raise ValueError(f"id must be a positive integer, not {value!r}")
            pid = int(value)
        else:
            fields[name] = value
    key: str | int | None = {"phone": phone, "email": email, "id": pid}[matching]
    if key is None:
        raise ValueError(f"no {matching} to match on")
    return ImportRecord(key, phone, email, fields)


async def import_csv(
    store: Store,
    path: str | Path,
    *,
    database: str,
    resource: str | None = None,
    matching: str = "phone",
    normaliser: PhoneNormaliser | None = None,
    chunk: int = 1000,
) -> ImportReport:
    """Import ``path`` into ``database``; bad rows are counted and reported, not fatal."""
    if matching not in MATCHING:
        raise InputError(f"--matching must be one of {', '.join(MATCHING)}, not {matching!r}")
    path = Path(path)
    normalise = (normaliser or PhoneNormaliser()).normalise
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise InputError(f"{path}: empty file; the first row must name the columns")
    header = [h.strip() for h in first[1]]
    seen: set[str] = set()
    for col, name in enumerate(header, start=1):
        if not name:
            raise InputError(f"{path}:{first[0]}: column {col} of the header has no name")
        if name in seen:
            raise InputError(f"{path}:{first[0]}: column {name!r} appears twice in the header")
        seen.add(name)
    if matching not in seen:
        raise InputError(
            f"{path}:{first[0]}: --matching {matching} needs a {matching!r} column in the header"
        )
    database_id = await store.database_id(database, create=True)
    resource_id = await store.resource_id(resource) if resource else None
    report = ImportReport(file=str(path))
    batch: list[ImportRecord] = []

    async def flush() -> None:
        result = await store.import_profiles(
            database_id, batch, matching=matching, resource_id=resource_id
        )
        report.added += result.added
        report.updated += result.updated
        batch.clear()

    for line, values in rows:
        if not any(v.strip() for v in values):
            continue  # blank lines are not rows
        try:
            batch.append(_parse_row(header, values, matching, normalise))
        except ValueError as err:
            report.rejected += 1
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(RowError(line, str(err)))
            continue
        if len(batch) >= chunk:
            await flush()
    if batch:
        await flush()
    return report
