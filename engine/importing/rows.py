"""From a header and a row of cell strings to an ``ImportRecord``: no I/O.

The header names the fields: ``phone``, ``email`` and ``id`` are special (matching keys;
``phone`` also subscribes the profile to the resource), the standard fields carry a leading
underscore (``_fname``, ``_city``, ...), anything else is a custom field. Empty cells are not
fields: an update never erases a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from engine.core.fields import FieldSpec, convert_fields
from engine.errors import InputError
from engine.store.base import ImportRecord

__all__ = ["MODES", "Matching", "Row", "check_header", "parse_matching", "parse_row"]

#: What a reader yields: (line, or row number in a sheet; the cells) with the header first.
#: A str in place of the cells says why that record could not be read.
Row = tuple[int, list[str] | str]

#: ``add+update``: add new profiles, update matching ones; ``add``: only add (a row that
#: matches is skipped); ``update``: only update (a row that matches nothing is rejected).
MODES = ("add+update", "add", "update")
SPECIAL = ("phone", "email", "id")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Matching(NamedTuple):
    """How rows find their profile: by ``phone``, ``email``, ``id`` or a custom ``field``."""

    kind: str
    #: The header column holding the key.
    column: str

    def __str__(self) -> str:
        return f"field:{self.column}" if self.kind == "field" else self.kind


def parse_matching(text: str) -> Matching:
    """``phone``, ``email``, ``id`` or ``field:NAME`` (NAME: a custom field's column)."""
    if text in SPECIAL:
        return Matching(text, text)
    if text.startswith("field:"):
        name = text[6:].strip()
        if name in SPECIAL:
            raise InputError(f"--matching field:{name}: say --matching {name}")
        if not name or '"' in name or not name.isprintable():
            raise InputError(
                f"--matching {text!r}: NAME must be a column name without double quotes"
            )
        return Matching("field", name)
    raise InputError(f"--matching must be phone, email, id or field:NAME, not {text!r}")


def check_header(cells: Sequence[str], matching: Matching, where: str) -> list[str]:
    """The column names, or InputError naming ``where`` (``file:line``) and the fault."""
    header = [h.strip() for h in cells]
    if header and header[0].startswith("\ufeff"):  # a BOM the decoder did not eat
        header[0] = header[0][1:].strip()
    seen: set[str] = set()
    for col, name in enumerate(header, start=1):
        if not name:
            raise InputError(f"{where}: column {col} of the header has no name")
        if name in seen:
            raise InputError(f"{where}: column {name!r} appears twice in the header")
        seen.add(name)
    if matching.column not in seen:
        raise InputError(
            f"{where}: --matching {matching} needs a {matching.column!r} column in the header"
        )
    return header


def parse_row(
    header: Sequence[str],
    values: Sequence[str],
    matching: Matching,
    normalise: Callable[[str], str | None],
    field_types: Mapping[str, FieldSpec] | None = None,
) -> ImportRecord:
    """The record a data row stands for; ValueError says what is wrong with the row.
    ``field_types``: the database's custom field types; their values are converted."""
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
            if not (value.isascii() and value.isdigit() and len(value) < 20
                    and 0 < int(value) < 2**63):
                raise ValueError(f"id must be a positive integer, not {value!r}")
            pid = int(value)
        else:
            fields[name] = value
    if field_types:
        convert_fields(field_types, fields)
    key: str | int | None
    if matching.kind == "field":
        key = fields.get(matching.column)
    else:
        key = {"phone": phone, "email": email, "id": pid}[matching.kind]
    if key is None:
        raise ValueError(f"no {matching.column} to match on")
    return ImportRecord(key, phone, email, fields)
