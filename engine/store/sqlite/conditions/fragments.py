"""SQL fragments for segment verdicts: text with its ``?`` parameters, and profile values.

A verdict is three-valued: 1 (matches), 0 (does not), NULL (SQLite cannot answer faithfully;
Python decides). Fragments are assembled with :func:`q`, which keeps parameters in the order
their ``?`` appear, and track whether they can be NULL (``exact``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from engine.core.templates.nodes import Var

__all__ = [
    "COLUMNS",
    "FALSE",
    "TRUE",
    "UNKNOWN",
    "Fragment",
    "Late",
    "SqlValue",
    "by_type",
    "const",
    "guard",
    "if_int64",
    "param",
    "q",
    "sql_text",
    "sql_value",
]

#: ``lead.X`` paths read from a profile column rather than from its JSON fields.
COLUMNS: Final = {"phone": "p.phone", "email": "p.email", "_id": "p.id"}

_TYPES: Final = ("null", "true", "false", "integer", "real", "text", "array", "object")


@dataclass(frozen=True, slots=True)
class Late:
    """A parameter computed from ``now`` when the condition is bound."""

    compute: Callable[[datetime], Any]


@dataclass(frozen=True, slots=True)
class Fragment:
    """SQL text with its ``?`` parameters in order; ``exact``: it is never NULL."""

    text: str
    params: tuple[Any, ...] = ()
    exact: bool = True


TRUE: Final = Fragment("1")
FALSE: Final = Fragment("0")
UNKNOWN: Final = Fragment("NULL", exact=False)


def const(value: bool) -> Fragment:
    """The verdict of a value known when compiling."""
    return TRUE if value else FALSE


def param(value: Any) -> Fragment:
    """``?`` bound to ``value`` (or to what a :class:`Late` computes)."""
    return Fragment("?", (value,))


def q(template: str, *parts: Fragment | str, exact: bool | None = None) -> Fragment:
    """Fill the ``{}`` of ``template`` with raw SQL strings or fragments, params in order."""
    pieces = template.split("{}")
    assert len(pieces) == len(parts) + 1, template
    text = [pieces[0]]
    params: list[Any] = []
    all_exact = True
    for part, piece in zip(parts, pieces[1:], strict=True):
        if isinstance(part, Fragment):
            text.append(part.text)
            params += part.params
            all_exact = all_exact and part.exact
        else:
            text.append(part)
        text.append(piece)
    return Fragment("".join(text), tuple(params), all_exact if exact is None else exact)


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class SqlValue:
    """Where a value comes from, as SQL: its JSON type name, its value (``json_extract``
    semantics), the types it can have, and for JSON its raw text (to spot escapes)."""

    type: str
    value: str
    types: tuple[str, ...] = _TYPES
    raw: str | None = None
    array_length: str = ""
    each: str = ""
    #: Its integers always fit SQLite's (JSON integers beyond 64 bits read as reals).
    int64: bool = False


def sql_value(var: Var) -> SqlValue | None:
    """The SQL source of a ``lead.*`` path, or None when SQL cannot follow it."""
    segments = var.segments
    if var.root != "lead" or not segments:
        return None
    if len(segments) == 1 and segments[0] in COLUMNS:
        column = COLUMNS[str(segments[0])]
        if column == "p.id":
            return SqlValue("'integer'", column, ("integer",), int64=True)
        return SqlValue(f"iif({column} IS NULL, 'null', 'text')", column, ("null", "text"))
    if segments[0] in COLUMNS:
        return None  # a path into a column's value: Python answers
    if any(isinstance(s, int) or not _plain_key(s) for s in segments):
        return None
    path = sql_text("$" + "".join(f'."{s}"' for s in segments))
    return SqlValue(
        type=f"coalesce(json_type(p.fields, {path}), 'null')",
        value=f"json_extract(p.fields, {path})",
        raw=f"(p.fields -> {path})",
        array_length=f"json_array_length(p.fields, {path})",
        each=f"json_each(p.fields, {path})",
    )


def _plain_key(key: str) -> bool:
    """A key a JSON path can name: SQLite matches path labels against keys as stored, so
    a key stored with escapes (a backslash, a control character) would never match; and a
    quote cannot be written in a label, nor our ``{}`` placeholder in a path."""
    return key.isprintable() and not any(c in key for c in '"\\') and "{}" not in key


def by_type(src: SqlValue, branches: Mapping[str, Fragment]) -> Fragment:
    """``CASE`` over the type of ``src``: ``branches`` has a verdict for each of its types."""
    chosen = [(t, branches[t]) for t in src.types]
    counts: dict[Fragment, int] = {}
    for _, frag in chosen:
        counts[frag] = counts.get(frag, 0) + 1
    common = max(counts, key=lambda f: counts[f])
    if len(counts) == 1:
        return common
    parts: list[Fragment | str] = [src.type]
    template = "(CASE {}"
    for t, frag in chosen:
        if frag != common:
            template += f" WHEN '{t}' THEN {{}}"
            parts.append(frag)
    parts.append(common)
    return q(template + " ELSE {} END)", *parts)


def guard(src: SqlValue, frag: Fragment) -> Fragment:
    """``frag`` for a text value, NULL where its JSON holds an escape SQLite may mangle."""
    if src.raw is None or frag in (TRUE, FALSE, UNKNOWN):
        return frag
    return q("(CASE WHEN instr({}, '\\u') THEN NULL ELSE {} END)", src.raw, frag, exact=False)


def if_int64(src: SqlValue, frag: Fragment, otherwise: Fragment = UNKNOWN) -> Fragment:
    """``frag`` where ``src`` holds a 64-bit integer, ``otherwise`` where it overflowed."""
    if src.int64:
        return frag
    return q(f"(CASE WHEN typeof({src.value}) = 'integer' THEN {{}} ELSE {{}} END)",
             frag, otherwise)
