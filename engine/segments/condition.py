"""Segment conditions: parsed with the template parser, and judged by the template
language's own rules.

``compile_condition('lead._city equal "Paris" and lead.age greater 18')`` gives a
:class:`Condition`: its text, its parsed expression and the template functions it was
compiled with. It holds no SQL: each store turns it into its own dialect and leaves what
it cannot decide faithfully to :meth:`Condition.residual` (``SegmentStore``). No clock is
read: ``now`` is an argument wherever dates matter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

import msgspec

from engine.core.templates import parse_expression
from engine.core.templates import runtime as rt
from engine.core.templates.lexer import Source
from engine.core.templates.nodes import BoolOp, Call, Compare, Const, Expr, Not, Var
from engine.segments.dates import DATE_FUNCTIONS, NOW, Now, as_now

__all__ = ["Condition", "compile_condition", "evaluate", "lead_view", "reads_lead", "unparse"]

_decode_fields = msgspec.json.Decoder(dict[str, Any]).decode
_NO_FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class Condition:
    """A compiled segment condition, in no store's dialect.

    ``functions`` are the template functions it was compiled with besides the built-ins
    and the date helpers (plugins'); ``key`` tells conditions apart for a store's cache of
    their SQL: the same text with the same functions compiles the same.
    """

    text: str
    expr: Expr
    functions: Mapping[str, Callable[..., Any]]

    @property
    def key(self) -> tuple[str, tuple[tuple[str, int], ...]]:
        # the functions are held by the condition, so their ids are not reused meanwhile
        return self.text, tuple(sorted((n, id(f)) for n, f in self.functions.items()))

    def residual(self, lead: Mapping[str, Any], now: Now) -> bool:
        """Whether a profile matches, in Python: ``lead`` as :func:`lead_view` builds it."""
        return evaluate(self.expr, lead, as_now(now))


def lead_view(
    profile_id: int, fields: bytes | str | None, phone: str | None, email: str | None
) -> dict[str, Any]:
    """What ``lead`` holds for a condition: the profile's fields, then ``_id``, ``phone``
    and ``email`` from its columns. Fields that do not decode count as empty."""
    try:
        lead = _decode_fields(fields) if fields else {}
    except msgspec.DecodeError:
        lead = {}
    lead["_id"] = profile_id
    lead["phone"] = phone
    lead["email"] = email
    return lead


def compile_condition(
    text: str, *, functions: Mapping[str, Callable[..., Any]] | None = None
) -> Condition:
    """Compile a condition; raise :class:`~engine.errors.TemplateError` (with ``line:col``)
    if it does not parse or reads anything but ``lead.*``.

    ``functions`` adds template functions (plugins') to the built-ins and the date helpers.
    """
    extra = MappingProxyType(dict(functions)) if functions else _NO_FUNCTIONS
    expr = parse_expression(text, functions={**DATE_FUNCTIONS, **extra})
    _check_paths(expr, Source(text))
    return Condition(text=text, expr=expr, functions=extra)


_OPS = {"==": "equal", "!=": "not equal", ">": "greater", "<": "less"}


def unparse(expr: Expr) -> str:
    """``expr`` written back in the condition syntax (what people see in ``segment show``)."""
    if isinstance(expr, Const):
        value = expr.value
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return rt.render_value(value)
    if isinstance(expr, Var):
        parts = [expr.root]
        for segment in expr.segments:
            if isinstance(segment, int) or segment.isidentifier():
                parts.append(f".{segment}")
            else:
                parts.append(f"[{unparse(Const(segment))}]")
        return "".join(parts)
    if isinstance(expr, Call):
        return f"{expr.name}({' '.join(unparse(a) for a in expr.args)})"
    if isinstance(expr, Not):
        return f"not {_grouped(expr.operand)}"
    if isinstance(expr, BoolOp):
        return f" {expr.op} ".join(_grouped(e) for e in expr.operands)
    op = _OPS.get(expr.op, expr.op)
    return f"{_grouped(expr.left)} {op} {_grouped(expr.right)}"


def _grouped(expr: Expr) -> str:
    text = unparse(expr)
    return f"({text})" if isinstance(expr, (BoolOp, Compare)) else text


def _check_paths(expr: Expr, src: Source) -> None:
    if isinstance(expr, Var):
        if expr.root == "lead" and expr.segments:
            return
        if expr.root == "lead":
            message = "write a field of the profile: lead.NAME"
        elif expr.root == "subscription":
            message = ("subscription.* cannot be used in a segment condition (yet): a segment"
                       " selects profiles; use lead.* fields")
        else:
            message = (f"a segment condition reads profile fields (lead.NAME),"
                       f" not {expr.path!r}")
        raise src.error(message, expr.pos)
    if isinstance(expr, Not):
        _check_paths(expr.operand, src)
    elif isinstance(expr, BoolOp):
        for operand in expr.operands:
            _check_paths(operand, src)
    elif isinstance(expr, Compare):
        _check_paths(expr.left, src)
        _check_paths(expr.right, src)
    elif isinstance(expr, Call):
        for arg in expr.args:
            _check_paths(arg, src)


# -- the template language's rules, in Python -------------------------------------------------


def evaluate(expr: Expr, lead: Mapping[str, Any], now: datetime) -> bool:
    """Whether ``expr`` holds for ``lead`` at ``now``, exactly as ``{if expr}`` decides
    when rendering with ``lead`` (and ``now`` for the date helpers)."""
    return _truth(expr, lead, now)


def _truth(expr: Expr, lead: Mapping[str, Any], now: datetime) -> bool:
    if isinstance(expr, Not):
        return not _truth(expr.operand, lead, now)
    if isinstance(expr, BoolOp):
        if expr.op == "and":
            return all(_truth(e, lead, now) for e in expr.operands)
        return any(_truth(e, lead, now) for e in expr.operands)
    if isinstance(expr, Compare):
        return _compare(expr, lead, now)
    return bool(_value(expr, lead, now))


def _value(expr: Expr, lead: Mapping[str, Any], now: datetime) -> Any:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Var):
        return _lookup(expr, lead, now)
    if isinstance(expr, Call):
        args = [_lookup(v, lead, now) for v in expr.context]
        args += [_value(a, lead, now) for a in expr.args]
        return rt.call(expr.function, *args)
    return _truth(expr, lead, now)


def _lookup(var: Var, lead: Mapping[str, Any], now: datetime) -> Any:
    if var.root == "lead":
        return rt.path(lead, var.segments)
    if var.root == NOW and not var.segments:
        return now
    return None


def _compare(expr: Compare, lead: Mapping[str, Any], now: datetime) -> bool:
    left, right = _value(expr.left, lead, now), _value(expr.right, lead, now)
    op = expr.op
    if op == "==":
        return rt.equal(left, right)
    if op == "!=":
        return not rt.equal(left, right)
    if op == ">":
        return rt.greater(left, right)
    if op == "<":
        return rt.less(left, right)
    if op == ">=":
        return rt.greater_equal(left, right)
    if op == "<=":
        return rt.less_equal(left, right)
    if op == "contains":
        return rt.contains(left, right)
    if op == "not contains":
        return not rt.contains(left, right)
    if op == "in":
        return rt.contains(right, left)
    return not rt.contains(right, left)



def reads_lead(expr: Expr) -> bool:
    """Whether ``expr`` reads a profile (``lead.*``, or a date helper's field): a part
    that does not is the same for every row, so a store binds its value, not SQL."""
    if isinstance(expr, Var):
        return True
    if isinstance(expr, Not):
        return reads_lead(expr.operand)
    if isinstance(expr, BoolOp):
        return any(reads_lead(e) for e in expr.operands)
    if isinstance(expr, Compare):
        return reads_lead(expr.left) or reads_lead(expr.right)
    if isinstance(expr, Call):
        return any(reads_lead(a) for a in expr.args) or any(
            v.root != NOW for v in expr.context)
    return False
