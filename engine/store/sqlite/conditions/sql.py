"""Translate a parsed condition into a three-valued SQL verdict over profiles ``p``.

The verdict is 1 where the profile certainly matches, 0 where it certainly does not, and
NULL where SQLite cannot reproduce the template language's answer faithfully; Python decides
those rows. SQL's NULL logic is Kleene's, so ``and``/``or``/``not`` stay sound: ``false and
unknown`` is 0, ``true or unknown`` is 1.

Each comparison of a field with a literal branches on the field's JSON type and answers, for
each type, what the template runtime would (``runtime.py``): a text field against a number
compares numerically when the text is a plain decimal, as text when it holds a character no
number can hold, and is left to Python otherwise (exponents, non-ASCII digits). A real is
decided only when it is clearly apart from the bound (SQLite's float parsing is not
guaranteed to round like Python's); text whose JSON holds a ``\\u`` escape is left to Python
(SQLite cuts strings at ``\\u0000``). Comparisons of two fields, functions other than the
date helpers (``sql_dates.py``) and list indexes (``lead.items.0``) are always left to Python.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from engine.core.templates.nodes import BoolOp, Call, Compare, Const, Expr, Not, Var
from engine.core.templates.runtime import numeric, render_value
from engine.segments import dates
from engine.segments.condition import reads_lead
from engine.store.sqlite.conditions.fragments import (
    FALSE,
    TRUE,
    UNKNOWN,
    Fragment,
    Late,
    SqlValue,
    by_type,
    const,
    guard,
    if_int64,
    param,
    q,
    sql_value,
)
from engine.store.sqlite.conditions.sql_dates import date_verdict

__all__ = ["translate"]

_EXACT_INT: Final = 2**53  # integers below this are exact as doubles, on both sides
_TOLERANCE: Final = "1e-9"  # relative gap beyond which a float comparison is certain
_MAX_NUMBER_TEXT: Final = 300  # longer numeric text is left to Python
_NUMERIC_CHARS: Final = frozenset("0123456789.eE+-")
#: Text holding an ASCII character no number can hold is certainly not numeric.
_NOT_NUMBER_GLOB: Final = "*[]" + "".join(
    ch for ch in map(chr, range(1, 128)) if ch not in _NUMERIC_CHARS | {"]", "^"}
) + "^]*"
_NON_ASCII_GLOB: Final = "*[^\x01-\x7f]*"
_ORDER: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}
_MIRROR: Final = {">": "<", "<": ">", ">=": "<=", "<=": ">="}


def _close(value: str, op: str, bound: float) -> Fragment:
    """A float ``value`` against ``bound``, decided only when they are clearly apart."""
    b = param(bound)
    gap = q(f"{_TOLERANCE} * (abs({{}}) + abs({{}}))", value, b)
    above = q("{} - {} > {}", value, b, gap)
    below = q("{} - {} > {}", b, value, gap)
    apart = q("abs({} - {}) > {}", value, b, gap)
    if op == "==":
        return q("(CASE WHEN {} THEN 0 END)", apart, exact=False)
    if op == "!=":
        return q("(CASE WHEN {} THEN 1 END)", apart, exact=False)
    if op in (">", ">="):
        return q("(CASE WHEN {} THEN 1 WHEN {} THEN 0 END)", above, below, exact=False)
    return q("(CASE WHEN {} THEN 1 WHEN {} THEN 0 END)", below, above, exact=False)


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _exact_number(value: int | float) -> int | float | None:
    """``value`` when SQLite compares it exactly, else None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if -_EXACT_INT < value < _EXACT_INT else None


def _sql_op(op: str) -> str:
    return "=" if op == "==" else op


def _number(src: SqlValue, op: str, bound: int | float, real: bool) -> Fragment:
    """A JSON integer (``real``: a real) against the number ``bound``."""
    exact, approximate = _exact_number(bound), _as_float(bound)
    close = _close(src.value, op, approximate) if math.isfinite(approximate) else UNKNOWN
    if real or exact is None:
        return close
    return if_int64(src, q(f"{src.value} {_sql_op(op)} {{}}", param(exact)), close)


def _number_text(x: str, op: str, bound: int | float, text: str) -> Fragment:
    """Text ``x`` against the number ``bound`` (rendered ``text``): numerically when ``x``
    is a plain decimal, as text when it cannot be a number, else unknown. The common cases
    (unsigned whole numbers, words) are tested first: each test re-reads ``x``."""
    sql_op = _sql_op(op)
    exact, approximate = _exact_number(bound), _as_float(bound)
    digits = f"(CASE WHEN substr({x}, 1, 1) IN ('+', '-') THEN substr({x}, 2) ELSE {x} END)"
    whole = "{} GLOB '[0-9]*' AND {} NOT GLOB '*[^0-9]*' AND length({}) <= 15"
    parts: list[Fragment | str] = []
    template = "(CASE"
    if exact is not None:
        template += f" WHEN {whole} THEN CAST({x} AS INTEGER) {sql_op} {{}}"
        parts += [x, x, x, param(exact)]
    template += f" WHEN {x} GLOB {{}} OR ({x} NOT GLOB '*[0-9]*' AND {x} NOT GLOB {{}})"
    template += f" THEN {x} {sql_op} {{}}"
    parts += [param(_NOT_NUMBER_GLOB), param(_NON_ASCII_GLOB), param(text)]
    if exact is not None:
        template += f" WHEN {whole} THEN CAST({x} AS INTEGER) {sql_op} {{}}"
        parts += [digits, digits, digits, param(exact)]
    if math.isfinite(approximate):
        template += (f" WHEN {digits} NOT GLOB '*[^0-9.]*' AND {digits} GLOB '*[0-9]*'"
                     f" AND {digits} NOT GLOB '*.*.*' AND length({x}) <= {_MAX_NUMBER_TEXT}"
                     " THEN {}")
        parts.append(_close(f"CAST({x} AS REAL)", op, approximate))
    return q(template + " END)", *parts, exact=False)


def _kleene_any(each: str, verdict: Fragment) -> Fragment:
    """True if ``verdict`` holds for some row of ``each`` (alias ``e``), false if for none,
    else unknown."""
    return q(
        "(SELECT CASE WHEN max(v IS 1) THEN 1 WHEN max(v IS NULL) THEN NULL ELSE 0 END"
        f" FROM (SELECT {{}} AS v FROM {each} AS e))",
        verdict,
    )


def _order_const(op: str, left: str, right: str) -> Fragment:
    if op == "==":
        return const(left == right)
    if op == "!=":
        return const(left != right)
    return const(_ORDER[op](left, right))


def _element(container: SqlValue) -> SqlValue:
    """An item of ``container`` (a JSON array) inside ``json_each(...) AS e``."""
    return SqlValue("e.type", "e.value", raw=container.raw,
                   array_length="json_array_length(e.value)")


def _key(container: SqlValue) -> SqlValue:
    """A key of ``container`` (a JSON object) inside ``json_each(...) AS e``."""
    return SqlValue("'text'", "e.key", ("text",), raw=container.raw)


# -- comparisons of a field with a literal -----------------------------------------------------


def _equal(src: SqlValue, value: Any) -> Fragment:
    """``src equal value`` (``runtime.equal``)."""
    x, text, number = src.value, render_value(value), numeric(value)
    if number is None:
        return by_type(src, {
            "null": const(text == ""),
            "true": const(text == "true"),
            "false": const(text == "false"),
            "integer": FALSE,  # renders as a number; ``text`` is not one
            "real": UNKNOWN if text in ("inf", "-inf", "nan") else FALSE,
            "text": guard(src, q(f"{x} = {{}}", param(text))),
            "array": UNKNOWN if text.startswith("[") else FALSE,
            "object": UNKNOWN if text.startswith("{") else FALSE,
        })
    return by_type(src, {
        "null": FALSE, "true": FALSE, "false": FALSE, "array": FALSE, "object": FALSE,
        "integer": _number(src, "==", number, real=False),
        "real": _number(src, "==", number, real=True),
        "text": guard(src, _number_text(x, "==", number, text)),
    })


def _ordered(src: SqlValue, op: str, value: Any) -> Fragment:
    """``src OP value`` for ``> < >= <=`` (``runtime.greater`` and friends)."""
    x, text, number = src.value, render_value(value), numeric(value)
    if number is None:
        return by_type(src, {
            "null": _order_const(op, "", text),
            "true": _order_const(op, "true", text),
            "false": _order_const(op, "false", text),
            "integer": if_int64(src, q(f"CAST({x} AS TEXT) {op} {{}}", param(text))),
            "real": UNKNOWN,
            "text": guard(src, q(f"{x} {op} {{}}", param(text))),
            "array": UNKNOWN if text.startswith("[") else _order_const(op, "[", text),
            "object": UNKNOWN if text.startswith("{") else _order_const(op, "{", text),
        })
    return by_type(src, {
        "null": _order_const(op, "", text),
        "true": _order_const(op, "true", text),
        "false": _order_const(op, "false", text),
        "integer": _number(src, op, number, real=False),
        "real": _number(src, op, number, real=True),
        "text": guard(src, _number_text(x, op, number, text)),
        "array": _order_const(op, "[", text),
        "object": _order_const(op, "{", text),
    })


def _contains(src: SqlValue, value: Any) -> Fragment:
    """``src contains value``: list membership, object keys, else substring."""
    x, text = src.value, render_value(value)
    branches = {
        "null": const(text == ""),
        "true": const(text in "true"),
        "false": const(text in "false"),
        "integer": if_int64(src, q(f"instr(CAST({x} AS TEXT), {{}}) > 0", param(text))),
        "real": TRUE if text == "" else UNKNOWN,
        "text": guard(src, q(f"instr({x}, {{}}) > 0", param(text))),
        "array": UNKNOWN,
        "object": UNKNOWN,
    }
    if src.each:
        branches["array"] = _kleene_any(src.each, _equal(_element(src), value))
        branches["object"] = _kleene_any(src.each, _equal(_key(src), value))
    return by_type(src, branches)


def _inside(text: str, src: SqlValue) -> Fragment:
    """``text contains src`` for a literal ``text``: the field rendered is a substring."""
    x = src.value
    return by_type(src, {
        "null": TRUE,
        "true": const("true" in text),
        "false": const("false" in text),
        "integer": if_int64(src, q(f"instr({{}}, CAST({x} AS TEXT)) > 0", param(text))),
        "real": UNKNOWN,
        "text": guard(src, q(f"instr({{}}, {x}) > 0", param(text))),
        "array": UNKNOWN if "[" in text else FALSE,
        "object": UNKNOWN if "{" in text else FALSE,
    })


def _truthy(src: SqlValue) -> Fragment:
    """The truthiness of ``src``: missing, null, false, 0, "", [] and {} are false."""
    x = src.value
    return by_type(src, {
        "null": FALSE, "true": TRUE, "false": FALSE,
        "integer": Fragment(f"({x} != 0)"),
        "real": Fragment(f"({x} != 0)"),
        "text": guard(src, Fragment(f"({x} != '')")),
        "array": Fragment(f"({src.array_length} > 0)"),
        "object": Fragment(f"({x} != '{{}}')"),
    })


# -- the whole expression ----------------------------------------------------------------------


@dataclass
class _Translator:
    """Turns an expression into its verdict; ``evaluate`` folds row-independent parts."""

    evaluate: Callable[[Expr, datetime], bool]
    python_only: list[Expr] = field(default_factory=list)

    def verdict(self, expr: Expr) -> Fragment:
        if not reads_lead(expr):
            return param(Late(lambda now: int(self.evaluate(expr, now))))
        if isinstance(expr, Not):
            return q("(NOT {})", self.verdict(expr.operand))
        if isinstance(expr, BoolOp):
            parts = [self.verdict(e) for e in expr.operands]
            joiner = f" {expr.op.upper()} "
            return q("(" + joiner.join("{}" for _ in parts) + ")", *parts)
        found: Fragment | None = None
        if isinstance(expr, Var):
            src = sql_value(expr)
            found = _truthy(src) if src is not None else None
        elif isinstance(expr, Call):
            if expr.function in dates.DATE_FUNCTIONS.values():
                found = date_verdict(expr)
        elif isinstance(expr, Compare):
            found = _compare(expr)
        if found is None:
            self.python_only.append(expr)
            return UNKNOWN
        return found


def _compare(expr: Compare) -> Fragment | None:
    op, left, right = expr.op, expr.left, expr.right
    if isinstance(left, Var) and isinstance(right, Const):
        var, value, var_left = left, right.value, True
    elif isinstance(left, Const) and isinstance(right, Var):
        var, value, var_left = right, left.value, False
    else:
        return None
    src = sql_value(var)
    if src is None:
        return None
    if op in ("==", "!="):
        found = _equal(src, value)
        return found if op == "==" else q("(NOT {})", found)
    if op in _ORDER:
        return _ordered(src, op if var_left else _MIRROR[op], value)
    negate = op.startswith("not ")
    field_is_container = var_left == op.endswith("contains")
    found = _contains(src, value) if field_is_container else _inside(render_value(value), src)
    return q("(NOT {})", found) if negate else found



def translate(
    expr: Expr, evaluate: Callable[[Expr, datetime], bool]
) -> tuple[Fragment, list[Expr]]:
    """The verdict of ``expr`` and the parts of it only Python can answer.

    ``evaluate(expr, now)`` answers a part that reads no field (it is bound as a parameter).
    """
    translator = _Translator(evaluate)
    return translator.verdict(expr), translator.python_only
