"""The import itself: sources in, rows parsed, records written a chunk per transaction."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import anyio
import msgspec

from engine.core.fields import FieldSpec
from engine.core.phones import PhoneNormaliser
from engine.errors import InputError
from engine.importing.archives import MAX_RATIO, MAX_UNPACKED
from engine.importing.events import record_import
from engine.importing.rows import (
    MODES,
    Matching,
    Row,
    check_header,
    parse_matching,
    parse_row,
)
from engine.importing.sources import open_sources
from engine.store.base import ImportRecord, Store

__all__ = ["MAX_ERRORS", "ImportReport", "RowError", "import_csv", "import_file"]

#: Errors kept in the report (all are counted).
MAX_ERRORS = 1000


class RowError(msgspec.Struct, frozen=True):
    """A row left out: its file (``archive.zip:member.csv`` in an archive), line and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class ImportReport(msgspec.Struct):
    """What an import did. Every data row read is added, updated, skipped or rejected."""

    file: str
    added: int = 0
    updated: int = 0
    rejected: int = 0
    #: Rows that matched a profile in ``add`` mode.
    skipped: int = 0
    #: Data rows read (blank lines are not rows).
    rows: int = 0
    #: The first ``MAX_ERRORS`` rejected rows, in file order.
    errors: list[RowError] = msgspec.field(default_factory=list)

    def summary(self) -> str:
        text = f"added {self.added}, updated {self.updated}, rejected {self.rejected}"
        return f"{text}, skipped {self.skipped}" if self.skipped else text

    def reject(self, file: str, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(RowError(file, line, reason))


async def import_file(
    store: Store,
    path: str | Path,
    *,
    database: str,
    resource: str | None = None,
    matching: str = "phone",
    mode: str = "add+update",
    normaliser: PhoneNormaliser | None = None,
    encoding: str | None = None,
    chunk: int = 1000,
    max_unpacked: int = MAX_UNPACKED,
    max_ratio: int = MAX_RATIO,
    field_types: Mapping[str, FieldSpec] | None = None,
    channel: Literal["sms", "email"] = "sms",
) -> ImportReport:
    """Import the profiles in a CSV, TXT or XLSX file, or a ZIP or TAR.GZ of them.

    ``matching``: ``phone``, ``email``, ``id`` or ``field:NAME``, how a row finds its
    profile. ``mode``: ``add+update`` (add new profiles, update the ones rows match),
    ``add`` (rows that match are skipped) or ``update`` (rows that match nothing are
    rejected). ``resource``: subscribe each row's address for ``channel`` to it (the
    resource's channel: its phone for ``sms``; its email, normalised, for ``email``, a
    bad address rejecting its row). ``encoding`` (a Python codec
    name) overrides detection for text files. Each ``chunk`` of rows is one transaction.
    ``max_unpacked``: bytes an archive or workbook may unpack to. ``max_ratio``: how many
    times its compressed size an archive member or workbook part may unpack to
    (``[limits] import_compression_ratio``). ``field_types``: the
    database's custom field types (``Config.field_specs``); a value that is not of its
    field's type rejects its row.

    A row that cannot be imported is counted and reported with its file and line, and the
    others still land. A file that cannot be read as a whole (a bad header, an unsafe
    archive, an unknown encoding) raises InputError; an archive is checked, and each of
    its members' header, before anything is written. A finished import adds an
    ``import_file`` event to the record (``events.py``).
    """
    match = parse_matching(matching)
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if chunk < 1:
        raise InputError(f"chunk must be a positive number of rows, not {chunk}")
    path = Path(path)
    normalise = (normaliser or PhoneNormaliser()).normalise
    report = ImportReport(file=str(path))
    with open_sources(path, encoding=encoding, max_unpacked=max_unpacked,
                      max_ratio=max_ratio) as sources:
        if len(sources) > 1:
            for source in sources:
                with source.open() as rows:
                    _header(rows, source.name, match)
        database_id = await store.database_id(database, create=True)
        resource_id = await store.resource_id(resource) if resource else None
        for source in sources:
            with source.open() as rows:
                header = _header(rows, source.name, match)
                first_error = len(report.errors)
                batch: list[ImportRecord] = []
                lines: list[int] = []
                for line, cells in rows:
                    if isinstance(cells, str):
                        report.rows += 1
                        report.reject(source.name, line, cells)
                        continue
                    if not any(c and not c.isspace() for c in cells):
                        continue  # blank lines are not rows
                    report.rows += 1
                    try:
                        batch.append(parse_row(header, cells, match, normalise, field_types))
                    except ValueError as err:
                        report.reject(source.name, line, str(err))
                        continue
                    lines.append(line)
                    if len(batch) >= chunk:
                        await _flush(store, database_id, batch, lines, source.name, report,
                                     matching=str(match), mode=mode, resource_id=resource_id,
                                     channel=channel)
                if batch:
                    await _flush(store, database_id, batch, lines, source.name, report,
                                 matching=str(match), mode=mode, resource_id=resource_id,
                                 channel=channel)
                # the store's rejections come a chunk late: put them back in line order
                report.errors[first_error:] = sorted(
                    report.errors[first_error:], key=lambda e: e.line
                )
    # the action hooks hear of the finished import (its counts: ``events.import_data``)
    await record_import(store, "import_file", database_id, report, source=path.name)
    return report


#: The name the CLI has always called; the same function.
import_csv = import_file


def _header(rows: Iterator[Row], name: str, matching: Matching) -> list[str]:
    """The column names: the first row that is not blank."""
    for line, cells in rows:
        if isinstance(cells, str):
            raise InputError(f"{name}:{line}: the header is unreadable: {cells}")
        if any(c.strip() for c in cells):
            return check_header(cells, matching, f"{name}:{line}")
    raise InputError(f"{name}: empty file; the first row must name the columns")


async def _flush(
    store: Store,
    database_id: int,
    batch: list[ImportRecord],
    lines: list[int],
    name: str,
    report: ImportReport,
    *,
    matching: str,
    mode: str,
    resource_id: int | None,
    channel: Literal["sms", "email"] = "sms",
) -> None:
    result = await store.import_profiles(
        database_id, batch, matching=matching, resource_id=resource_id, mode=mode,
        channel=channel,
    )
    report.added += result.added
    report.updated += result.updated
    report.skipped += result.skipped
    for index, reason in result.rejected:
        report.reject(name, lines[index], reason)
    batch.clear()
    lines.clear()
    await anyio.lowlevel.checkpoint()  # a chunk at a time, other tasks get their turn
