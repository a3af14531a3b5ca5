"""Segment conditions in PostgreSQL's dialect: a three-valued jsonb verdict over ``p``.

:func:`verdict_of` turns a dialect-free :class:`~engine.segments.Condition` into a boolean
SQL expression over profiles ``p``: true where the profile certainly matches, false where
it certainly does not, NULL where Python must decide (``Condition.residual``). SQL's NULL
logic is Kleene's, so ``and``/``or``/``not`` stay sound.

What Python sees of a profile is its fields as PostgreSQL prints them (``fields::text``),
decoded: a jsonb number with a fraction reads as a float, one without as an int (jsonb
prints ``1e3`` as ``1000``). SQL answers only what it reproduces exactly:

- truthiness of every JSON type;
- ``equal``, ``greater``... of a field with a literal, by the field's type: strings as
  text (in code-point order, ``COLLATE "C"``), numbers exactly as ``numeric`` (a float
  field only when it is clearly apart from the bound, or exactly a decimal that reads as
  it), numeric strings when plain ASCII decimals, and the cases certain by type (a list
  never equals a number);
- ``contains`` / ``in`` on strings (``strpos``), list items and object keys;
- ``lead._id``, ``lead.phone``, ``lead.email`` from the profile's columns.

The date helpers are judged in ``conditions_dates.py``. The rest is NULL: other
functions, two fields compared, list indexes (``lead.items.0``), floats rendered as text,
numbers beyond 1e300, text with digits other than ASCII ones. Numbers in fields are
assumed to decode (Herald writes them from Python values: no integer of thousands of
digits).

``q``, ``param``, ``by_type``, ``source`` and the fragments are shared with
``conditions_dates.py``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from engine.core.templates.nodes import BoolOp, Call, Compare, Const, Expr, Not, Var
from engine.core.templates.runtime import numeric, render_value
from engine.segments import dates
from engine.segments.condition import Condition, evaluate, reads_lead, unparse
from engine.segments.dates import Now, as_now

__all__ = ["Verdict", "verdict_of"]

#: ``lead.X`` read from the profile's columns rather than from its fields.
_COLUMNS: Final = {"phone": "p.phone", "email": "p.email", "_id": "p.id"}
_TYPES: Final = ("null", "true", "false", "integer", "real", "text", "array", "object")
_ORDER: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}
_MIRROR: Final = {">": "<", "<": ">", ">=": "<=", "<=": ">="}
#: Numbers past this are left to Python (their text, their float, their decoding).
_LARGEST: Final = "1e300"
#: A float gap below this (absolute) may be rounding, or underflow.
_TINY: Final = "1e-300"
#: A float gap below this (relative) may be rounding.
_RELATIVE: Final = "1e-9"
#: Numeric text SQL reads as numbers: plain ASCII decimals, a short exponent.
_PLAIN_NUMBER: Final = r"'^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$'"
_LONGEST_NUMBER: Final = 300
#: What the template runtime reads as a number, in ASCII (its ``\d`` is any digit).
_ASCII_NUMBER: Final = r"'^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$'"
#: An ASCII character no number holds.
_NOT_NUMBER_CHAR: Final = r"'[\x01-\x2a\x2c\x2f\x3a-\x44\x46-\x64\x66-\x7f]'"
_NON_ASCII: Final = r"'[^\x01-\x7f]'"
_INT_CHARS: Final = frozenset("0123456789-")
_FLOAT_CHARS: Final = frozenset("0123456789-.e+")


@dataclass(frozen=True, slots=True)
class Late:
    """A parameter computed from ``now`` when the verdict is bound."""

    compute: Callable[[datetime], Any]


@dataclass(frozen=True, slots=True)
class Fragment:
    """SQL text with its ``%s`` parameters in order; ``exact``: it is never NULL."""

    text: str
    params: tuple[Any, ...] = ()
    exact: bool = True


TRUE: Final = Fragment("true")
FALSE: Final = Fragment("false")
UNKNOWN: Final = Fragment("NULL::boolean", exact=False)


def _const(value: bool) -> Fragment:
    return TRUE if value else FALSE


def param(value: Any, cast: str) -> Fragment:
    return Fragment(f"%s::{cast}", (value,))


def _text(value: str) -> Fragment:
    return param(value, "text")


def _number(value: int | float) -> Fragment:
    return param(Decimal(value), "numeric")


def q(template: str, *parts: Fragment | str, exact: bool | None = None) -> Fragment:
    """Fill the ``{}`` of ``template`` with raw SQL or fragments, parameters in order."""
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


def _bindable(text: str) -> bool:
    """Whether PostgreSQL text can hold ``text`` (no NUL, no lone surrogate)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _sql_text(value: str) -> str:
    """``value`` as an SQL literal made of letters, digits and escapes only: nothing in it
    reads as a ``%s`` parameter or as a ``{}`` of :func:`q`."""
    escaped = "".join(
        c if c.isascii() and c.isalnum() else
        f"\\{ord(c):04X}" if ord(c) < 0x10000 else f"\\+{ord(c):06X}"
        for c in value
    )
    return f"U&'{escaped}'"


# -- where a value comes from ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """A value of ``lead``, as SQL. ``kind``: ``json`` (a jsonb value, SQL NULL when
    missing), ``column`` (nullable text), ``id`` (the profile id), ``key`` (an object's
    key: text), ``null`` (always missing)."""

    kind: str
    sql: str = ""

    @property
    def types(self) -> tuple[str, ...]:
        return {
            "json": _TYPES, "column": ("null", "text"), "id": ("integer",),
            "key": ("text",), "null": ("null",),
        }[self.kind]

    @property
    def text(self) -> str:
        """A text value's SQL (its type being ``text``)."""
        return f"({self.sql} #>> ARRAY[]::text[])" if self.kind == "json" else self.sql

    @property
    def number(self) -> str:
        """A number's SQL, as ``numeric``."""
        return f"({self.sql})::numeric" if self.kind == "json" else self.sql

    @property
    def number_text(self) -> str:
        """An integer as Python renders it (jsonb prints a whole number without a dot)."""
        return f"({self.sql})::text"


def source(var: Var) -> Source | None:
    """The SQL of a ``lead.*`` path, or None when SQL cannot follow it."""
    segments = var.segments
    if var.root != "lead" or not segments:
        return None
    first = segments[0]
    if first in _COLUMNS:
        if len(segments) > 1:
            return Source("null")  # a path into a string or a number: always missing
        column = _COLUMNS[str(first)]
        return Source("id" if column == "p.id" else "column", column)
    if any(isinstance(s, int) or not _bindable(s) for s in segments):
        return None
    return Source("json", "(p.fields" + "".join(f" -> {_sql_text(str(s))}" for s in segments)
                  + ")")


def by_type(src: Source, branches: Mapping[str, Fragment]) -> Fragment:
    """The verdict for each type ``src`` may have, as a ``CASE`` over its type."""
    chosen = {t: branches[t] for t in src.types}
    if len(set(chosen.values())) == 1:
        return next(iter(chosen.values()))
    if src.kind == "column":
        return q(f"(CASE WHEN {src.sql} IS NULL THEN {{}} ELSE {{}} END)",
                 chosen["null"], chosen["text"])

    def pick(condition: str, yes: Fragment, no: Fragment) -> Fragment:
        if yes == no:
            return yes
        return q(f"(CASE WHEN {condition} THEN {{}} ELSE {{}} END)", yes, no)

    x = src.sql
    boolean = pick(f"{x} = 'true'::jsonb", chosen["true"], chosen["false"])
    number = pick(f"scale({x}::numeric) = 0", chosen["integer"], chosen["real"])
    if number not in (TRUE, FALSE, UNKNOWN):
        # beyond this, the decoding, rendering and rounding of numbers are Python's
        number = q(f"(CASE WHEN abs({x}::numeric) < {_LARGEST} THEN {{}} END)", number,
                   exact=False)
    by_kind = {"string": chosen["text"], "number": number, "boolean": boolean,
               "array": chosen["array"], "object": chosen["object"]}
    common = chosen["null"]
    parts: list[Fragment | str] = []
    template = f"(CASE jsonb_typeof({x})"
    for name, frag in by_kind.items():
        if frag != common:
            template += f" WHEN '{name}' THEN {{}}"
            parts.append(frag)
    return q(template + " ELSE {} END)", *parts, common)


# -- numbers -----------------------------------------------------------------------------


def _exact(value: int | float) -> bool:
    """Whether the float nearest ``value`` is ``value``."""
    try:
        return float(value) == value
    except OverflowError:
        return False


def _numbers(d: str, is_int: str | None, op: str, bound: int | float) -> Fragment:
    """The number ``d`` (SQL numeric, within 1e300) against ``bound``, as Python compares
    them: an int exactly, a float (``is_int`` false; None: always an int) once rounded."""
    if isinstance(bound, float) and math.isnan(bound):
        return FALSE
    if isinstance(bound, float) and math.isinf(bound):
        return _const(op != "==" and _ORDER[op](0, bound))
    b = _number(bound)
    whole = FALSE if op == "==" and isinstance(bound, float) and not bound.is_integer() \
        else q(f"{d} {'=' if op == '==' else op} {{}}", b)
    if is_int is None:
        return whole
    # a float: the nearest double to d. Decided where d reads exactly as the bound, or
    # where it is so far from it that no rounding can cross it.
    gap = q(f"greatest({_RELATIVE} * (abs({d}) + abs({{}})), {_TINY})", b)
    above = q(f"{d} - {{}} > {{}}", b, gap)
    below = q(f"{{}} - {d} > {{}}", b, gap)
    same: Fragment | None = None
    if _exact(bound):
        decimals = {Decimal(bound), Decimal(repr(float(bound)))}
        same = q(f"{d} IN (" + ", ".join("{}" for _ in decimals) + ")",
                 *[param(v, "numeric") for v in sorted(decimals)])
    if op == "==":
        cases: list[tuple[Fragment, Fragment]] = [(q("abs({} - {}) > {}", d, b, gap), FALSE)]
        if same is not None:
            cases.insert(0, (same, TRUE))
    else:
        cases = [(above, _const(op in (">", ">="))), (below, _const(op in ("<", "<=")))]
        if same is not None:
            cases.insert(0, (same, _const(op in (">=", "<="))))
    template, parts = "(CASE", []
    for when, then in cases:
        template += " WHEN {} THEN {}"
        parts += [when, then]
    real = q(template + " END)", *parts, exact=False)
    return q(f"(CASE WHEN {is_int} THEN {{}} ELSE {{}} END)", whole, real)


def _numeric_text(x: str, op: str, bound: int | float, otherwise: Fragment) -> Fragment:
    """Text ``x`` against the number ``bound``: numerically when ``x`` is a plain decimal,
    ``otherwise`` (the text comparison) when it cannot be a number, else unknown."""
    number = _numbers(f"{x}::numeric", f"{x} !~ '[.eE]'", op, bound)
    # CASE, not AND: only text known to be numeric may be cast (AND has no order)
    return q(
        f"(CASE WHEN {x} ~ {_PLAIN_NUMBER} AND length({x}) <= {_LONGEST_NUMBER}"
        f" THEN (CASE WHEN abs({x}::numeric) < {_LARGEST} THEN {{}} END)"
        f" WHEN {x} ~ {_NOT_NUMBER_CHAR}"
        f" OR ({x} !~ {_NON_ASCII} AND {x} !~ {_ASCII_NUMBER}) THEN {{}} END)",
        number, otherwise, exact=False,
    )


# -- comparisons of a field with a literal -------------------------------------------------


def _text_order(op: str, left: str, right: str) -> Fragment:
    if op == "==":
        return _const(left == right)
    return _const(_ORDER[op](left, right))


def _sql_op(op: str) -> str:
    return "=" if op == "==" else op


def _compare_value(src: Source, op: str, value: Any) -> Fragment:
    """``src OP value`` for ``==`` and ``> < >= <=`` (``runtime.equal``, ``greater``...):
    numerically when both are numbers (or numeric text), else as rendered text."""
    t, bound = render_value(value), numeric(value)
    sql_op = _sql_op(op)
    text_cmp = q(f'({src.text} {sql_op} {{}} COLLATE "C")', _text(t))

    def container(opening: str) -> Fragment:
        """A list or an object, rendered as JSON, against text ``t``."""
        return UNKNOWN if t.startswith(opening) else _text_order(op, opening, t)

    if bound is None:
        return by_type(src, {
            "null": _text_order(op, "", t),
            "true": _text_order(op, "true", t),
            "false": _text_order(op, "false", t),
            # an int renders as a number, which ``t`` is not
            "integer": FALSE if op == "==" else
            q(f'({src.number_text} {op} {{}} COLLATE "C")', _text(t)),
            "real": FALSE if op == "==" else UNKNOWN,
            "text": text_cmp,
            "array": container("["),
            "object": container("{"),
        })
    is_int = None if src.kind == "id" else f"scale({src.number}) = 0"
    return by_type(src, {
        "null": _text_order(op, "", t),
        "true": _text_order(op, "true", t),
        "false": _text_order(op, "false", t),
        "integer": _numbers(src.number, is_int, op, bound),
        "real": _numbers(src.number, is_int, op, bound),
        "text": _numeric_text(src.text, op, bound, text_cmp),
        "array": _text_order(op, "[", t),
        "object": _text_order(op, "{", t),
    })


def _any(rows: str, verdict: Fragment) -> Fragment:
    """True if ``verdict`` holds for some row of ``rows``, false if for none, else NULL."""
    return q(
        "(SELECT CASE WHEN bool_or(v) THEN true WHEN bool_or(v IS NULL) THEN NULL"
        f" ELSE false END FROM (SELECT {{}} AS v FROM {rows}) AS each_)",
        verdict,
    )


def _contains(src: Source, value: Any) -> Fragment:
    """``src contains value``: list items (by ``equal``), object keys, else substring."""
    t = render_value(value)
    branches = {
        "null": _const(t == ""),
        "true": _const(t in "true"),
        "false": _const(t in "false"),
        "integer": TRUE if t == "" else FALSE if set(t) - _INT_CHARS else
        q(f"(strpos({src.number_text}, {{}}) > 0)", _text(t)),
        # a float renders as digits, "-", ".", "e" and "+" only
        "real": TRUE if t == "" else FALSE if set(t) - _FLOAT_CHARS else UNKNOWN,
        "text": q(f"(strpos({src.text}, {{}}) > 0)", _text(t)),
        "array": UNKNOWN,
        "object": UNKNOWN,
    }
    if src.kind == "json":
        item = Source("json", "item_.v")
        if numeric(value) is None and t not in ("", "true", "false") and t[0] not in "[{":
            # only a string item can equal ``t``: jsonb containment says if one does
            branches["array"] = q(f"({src.sql} @> jsonb_build_array({{}}))", _text(t))
        else:
            branches["array"] = _any(f"jsonb_array_elements({src.sql}) AS item_(v)",
                                     _compare_value(item, "==", value))
        if numeric(value) is None:
            branches["object"] = q(f"jsonb_exists({src.sql}, {{}})", _text(t))
        else:
            branches["object"] = _any(f"jsonb_object_keys({src.sql}) AS key_(k)",
                                      _compare_value(Source("key", "key_.k"), "==", value))
    return by_type(src, branches)


def _inside(text: str, src: Source) -> Fragment:
    """``text contains src`` for a literal ``text``: the field rendered is a substring."""
    return by_type(src, {
        "null": TRUE,
        "true": _const("true" in text),
        "false": _const("false" in text),
        "integer": q(f"(strpos({{}}, {src.number_text}) > 0)", _text(text)),
        "real": UNKNOWN,
        "text": q(f"(strpos({{}}, {src.text}) > 0)", _text(text)),
        "array": UNKNOWN if "[" in text else FALSE,
        "object": UNKNOWN if "{" in text else FALSE,
    })


def _truthy(src: Source) -> Fragment:
    """The truthiness of ``src``: missing, null, false, 0, "", [] and {} are false."""
    return by_type(src, {
        "null": FALSE, "true": TRUE, "false": FALSE,
        "integer": Fragment(f"({src.number} <> 0)"),
        # a tiny decimal may read as 0.0
        "real": Fragment(f"(CASE WHEN {src.number} = 0 THEN false"
                         f" WHEN abs({src.number}) >= {_TINY} THEN true END)", exact=False),
        "text": Fragment(f"({src.text} <> '')"),
        "array": Fragment(f"(jsonb_array_length({src.sql}) > 0)"),
        "object": Fragment(f"({src.sql} <> jsonb_build_object())"),
    })


def _compare(expr: Compare) -> Fragment | None:
    op, left, right = expr.op, expr.left, expr.right
    if isinstance(left, Var) and isinstance(right, Const):
        var, value, var_left = left, right.value, True
    elif isinstance(left, Const) and isinstance(right, Var):
        var, value, var_left = right, left.value, False
    else:
        return None
    src = source(var)
    if src is None or not _bindable(render_value(value)):
        return None
    if op in ("==", "!="):
        found = _compare_value(src, "==", value)
        return found if op == "==" else q("(NOT {})", found)
    if op in _ORDER:
        return _compare_value(src, op if var_left else _MIRROR[op], value)
    negate = op.startswith("not ")
    field_is_container = var_left == op.endswith("contains")
    found = _contains(src, value) if field_is_container else _inside(render_value(value), src)
    return q("(NOT {})", found) if negate else found


# -- the whole expression ----------------------------------------------------------------



@dataclass
class _Translator:
    python_only: list[Expr] = field(default_factory=list)

    def verdict(self, expr: Expr) -> Fragment:
        if not reads_lead(expr):
            def fold(now: datetime, part: Expr = expr) -> bool:
                return evaluate(part, {}, now)

            return param(Late(fold), "boolean")
        if isinstance(expr, Not):
            return q("(NOT {})", self.verdict(expr.operand))
        if isinstance(expr, BoolOp):
            parts = [self.verdict(e) for e in expr.operands]
            joiner = f" {expr.op.upper()} "
            return q("(" + joiner.join("{}" for _ in parts) + ")", *parts)
        found: Fragment | None = None
        if isinstance(expr, Var):
            src = source(expr)
            found = _truthy(src) if src is not None else None
        elif isinstance(expr, Call):
            if expr.function in dates.DATE_FUNCTIONS.values():
                from engine.store.postgres.conditions_dates import date_verdict  # built on this

                found = date_verdict(expr)
        elif isinstance(expr, Compare):
            found = _compare(expr)
        if found is None:
            self.python_only.append(expr)
            return UNKNOWN
        return found


@dataclass(frozen=True, slots=True)
class Verdict:
    """A condition's SQL over profiles ``p``: ``text`` is true, false or NULL (Python
    decides); :meth:`bind` gives its ``%s`` parameters. ``decided``: never NULL.
    ``python_only``: the parts SQL never answers, as written."""

    text: str
    params: tuple[Any, ...]
    decided: bool
    python_only: tuple[str, ...]

    def bind(self, now: Now) -> tuple[Any, ...]:
        """The parameters of :attr:`text` for this ``now``."""
        at = as_now(now)
        return tuple(p.compute(at) if isinstance(p, Late) else p for p in self.params)


def verdict_of(condition: Condition) -> Verdict:
    """The SQL verdict of ``condition`` (CPU work: callers cache it)."""
    translator = _Translator()
    found = translator.verdict(condition.expr)
    return Verdict(
        text=found.text,
        params=found.params,
        decided=found.exact,
        python_only=tuple(unparse(part) for part in translator.python_only),
    )
