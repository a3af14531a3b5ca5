"""A report written out: an aligned text table for a person, JSON, CSV or an xlsx
workbook for a program or a spreadsheet.

JSON is the list of row objects. CSV and xlsx have a header row of the column names, then
a line per row; an empty value (a rate with nothing to divide by) is an empty cell. In
xlsx numbers stay numbers (rates and shares as fractions, shown as percentages) and the
header is bold. ``render`` gives bytes for the file formats; ``table`` text.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Final, Literal, get_args

import msgspec

from engine.reports.tables import RATE_COLUMNS, Report

__all__ = ["FORMATS", "MEDIA_TYPES", "FileFormat", "Format", "render", "table"]

Format = Literal["table", "json", "csv", "xlsx"]
FORMATS: Final[tuple[str, ...]] = get_args(Format)
#: The formats ``render`` writes (a file, a download).
FileFormat = Literal["json", "csv", "xlsx"]

MEDIA_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

_json = msgspec.json.Encoder()


def render(report: Report, fmt: FileFormat) -> bytes:
    """The report as a file of format ``fmt``."""
    if fmt == "json":
        return msgspec.json.format(_json.encode(report.rows)) + b"\n"
    if fmt == "csv":
        return _csv(report)
    return _xlsx(report)


def _csv(report: Report) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(["" if row[c] is None else row[c] for c in report.columns])
    return buf.getvalue().encode("utf-8")


def _xlsx(report: Report) -> bytes:
    from openpyxl import Workbook  # type: ignore[import-untyped, unused-ignore]
    from openpyxl.styles import Font  # type: ignore[import-untyped, unused-ignore]

    book = Workbook()
    sheet: Any = book.active
    sheet.title = report.name
    sheet.append(list(report.columns))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    rates = [i for i, c in enumerate(report.columns, 1) if c in RATE_COLUMNS]
    for row in report.rows:
        sheet.append([row[c] for c in report.columns])
        for i in rates:
            sheet.cell(row=sheet.max_row, column=i).number_format = "0.00%"
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column in RATE_COLUMNS:
        return f"{value:.2%}"
    if isinstance(value, int) and not column.endswith("_id"):
        return f"{value:,}"
    return str(value)


def table(report: Report) -> str:
    """The report as aligned columns (numbers to the right), a line per row."""
    heads = [c.upper() for c in report.columns]
    cells = [[_cell(c, row[c]) for c in report.columns] for row in report.rows]
    widths = [max([len(h), *(len(line[i]) for line in cells)]) for i, h in enumerate(heads)]
    right = [bool(report.rows) and all(
        isinstance(row[c], int | float) or row[c] is None for row in report.rows)
        for c in report.columns]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right,
                                                                  strict=True)]
        return "  ".join(parts).rstrip()

    lines = [line(heads), *(line(c) for c in cells)]
    if not report.rows:
        lines.append("(nothing in this range)")
    return "\n".join(lines) + "\n"
