"""XLSX workbooks: the first worksheet, streamed by openpyxl in read-only mode.

Cells become the text a person would type: whole numbers without ``.0`` (a phone typed as
a number stays a phone), other numbers to Excel's 15 significant digits, dates and times in
ISO 8601 (a date without a time of day as ``2024-03-01``), booleans as ``TRUE``/``FALSE``.
Formulas give the value Excel last computed (none if the file was never opened in Excel).
Rows are numbered as Excel shows them. Trailing empty cells are dropped and short rows
padded to the header, since a sheet does not record cells nobody typed in.

openpyxl keeps a workbook's shared strings in memory (text cells point into that table), so
an XLSX file costs memory in proportion to its distinct strings; rows are still streamed.
"""

from __future__ import annotations

import datetime as dt
import warnings
import zipfile
from collections.abc import Generator
from typing import IO, Any

from engine.errors import InputError
from engine.importing.archives import ratio_error
from engine.importing.rows import Row

__all__ = ["cell_text", "check_unpacked_size", "read_xlsx"]


def read_xlsx(
    file: IO[bytes], name: str, *, max_unpacked: int, max_ratio: int | None = None
) -> Generator[Row, None, None]:
    """The rows of the first worksheet of the workbook in ``file`` (seekable, left open).
    ``max_ratio``: how many times its compressed size a part of the workbook may unpack to."""
    from openpyxl import load_workbook  # type: ignore[import-untyped, unused-ignore]

    check_unpacked_size(file, name, max_unpacked, max_ratio)
    file.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no default style" and the like: not the user's
            book = load_workbook(file, read_only=True, data_only=True)
    except Exception as err:  # openpyxl's own, zipfile's, XML parsers': all mean "broken"
        raise InputError(f"{name}: not a readable xlsx workbook ({err})") from err
    try:
        if not book.worksheets:
            raise InputError(f"{name}: the workbook has no worksheet")
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # a stale <dimension> element would cut rows off
        rows = sheet.iter_rows(values_only=True)
        width: int | None = None
        number = 0
        while True:
            try:
                values = next(rows, None)
            except Exception as err:
                raise InputError(f"{name}:{number + 1}: unreadable row ({err})") from err
            if values is None:
                return
            number += 1
            cells = [cell_text(v) for v in values]
            while cells and not cells[-1]:
                cells.pop()
            if width is None:
                width = len(cells) or None  # the header: the first row with something in it
            elif len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            yield number, cells
    finally:
        book.close()


def cell_text(value: Any) -> str:
    """A cell's value as text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, ".15g")  # 79161234567.0 -> 79161234567, 0.1+0.2 -> 0.3
    if isinstance(value, dt.datetime):
        if value.tzinfo is None and value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def check_unpacked_size(
    file: IO[bytes], name: str, limit: int, max_ratio: int | None = None
) -> None:
    """InputError unless the zip in ``file`` unpacks to at most ``limit`` bytes, and each
    part to at most ``max_ratio`` times its compressed size."""
    try:
        with zipfile.ZipFile(file) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{name}: not a readable xlsx workbook ({err})") from err
    total = sum(info.file_size for info in infos)
    for info in infos:
        if max_ratio is not None and info.file_size > max_ratio * info.compress_size:
            raise ratio_error(name, info.filename, max_ratio)
    if total > limit:
        raise InputError(
            f"{name}: unpacks to {total} bytes, over the {limit} byte limit on unpacked"
            " data (a guard against zip bombs)"
        )
