"""Suppression lists: phones, emails and domains that are never messaged.

``herald suppression import FILE [--list NAME]`` reads one value per line (or the first
column of a CSV line): an email (``someone@example.com``), a domain (``@example.com`` or
``example.com``) or a phone (normalised to E.164; a value that is none of these is reported
with its line). The list ``global`` applies to every mailing; other lists apply where they
are attached, to a database or to one mailing. SMS mailings skip suppressed phones, counted
as ``suppressed`` in the mailing log; emails and domains are kept for email channels.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import msgspec

from engine.core.phones import PhoneNormaliser
from engine.errors import InputError
from engine.store.base import Store

__all__ = ["SuppressionReport", "classify", "import_suppressions"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN = re.compile(r"^@?(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
#: Errors kept in the report (all are counted).
MAX_ERRORS = 1000


class SuppressionError(msgspec.Struct, frozen=True):
    line: int
    reason: str


class SuppressionReport(msgspec.Struct):
    file: str
    list_name: str
    added: dict[str, int] = msgspec.field(default_factory=dict)
    already: int = 0
    rejected: int = 0
    errors: list[SuppressionError] = msgspec.field(default_factory=list)

    def summary(self) -> str:
        added = ", ".join(f"{n} {kind}s" for kind, n in sorted(self.added.items())) or "nothing"
        return (f"list {self.list_name}: added {added}; {self.already} already there,"
                f" {self.rejected} rejected")


def classify(value: str, normaliser: PhoneNormaliser) -> tuple[str, str] | None:
    """(kind, normalised value) of one suppression entry, or None if it is none of them."""
    value = value.strip()
    lowered = value.lower()
    if _EMAIL.match(lowered):
        return "email", lowered
    if _DOMAIN.match(lowered) and not lowered.replace(".", "").isdigit():
        return "domain", lowered.lstrip("@")
    phone = normaliser.normalise(value)
    return ("phone", phone) if phone else None


def _values(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, value) of each entry: the first column, no blanks, comments or header."""
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from err
    with handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, start=1):
                raw = line.split(",", 1)[0].split(";", 1)[0].strip().strip('"')
                if not raw or raw.startswith("#"):
                    continue
                if line_no == 1 and raw.lower() in ("phone", "email", "domain", "value"):
                    continue  # a header
                yield line_no, raw
        except UnicodeDecodeError as err:
            raise InputError(f"{path}:{line_no + 1}: not UTF-8 text ({err.reason})") from err


async def import_suppressions(
    store: Store,
    path: str | Path,
    *,
    list_name: str = "global",
    is_global: bool | None = None,
    normaliser: PhoneNormaliser | None = None,
    chunk: int = 5000,
) -> SuppressionReport:
    """Add every value of ``path`` to ``list_name``; bad lines are reported, not fatal.

    A new list is global when its name is ``global`` or ``is_global`` says so.
    """
    path = Path(path)
    normaliser = normaliser or PhoneNormaliser()
    glob = list_name == "global" if is_global is None else is_global
    report = SuppressionReport(file=str(path), list_name=list_name)
    pending: dict[str, list[str]] = {}

    async def flush() -> None:
        for kind, values in pending.items():
            new = await store.add_suppressions(list_name, kind, values, is_global=glob)
            report.added[kind] = report.added.get(kind, 0) + new
            report.already += len(values) - new
        pending.clear()

    count = 0
    for line_no, raw in _values(path):
        found = classify(raw, normaliser)
        if found is None:
            report.rejected += 1
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(SuppressionError(
                    line_no, f"not a phone, an email or a domain: {raw!r}"))
            continue
        pending.setdefault(found[0], []).append(found[1])
        count += 1
        if count % chunk == 0:
            await flush()
    await flush()
    return report
