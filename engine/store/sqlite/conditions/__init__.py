"""Segment conditions in SQLite's dialect: a three-valued verdict over profiles ``p``.

:func:`verdict_of` turns a dialect-free :class:`~engine.segments.Condition` into SQL that
is 1 where the profile certainly matches, 0 where it certainly does not, and NULL where
SQLite cannot reproduce the template language's answer faithfully: Python decides those
rows with :meth:`~engine.segments.Condition.residual`. ``sql.py`` says what SQL decides;
``sql_dates.py`` does the date helpers; ``fragments.py`` assembles SQL with its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.core.templates.nodes import Expr
from engine.segments.condition import Condition, evaluate, unparse
from engine.segments.dates import Now, as_now
from engine.store.sqlite.conditions import sql
from engine.store.sqlite.conditions.fragments import Late

__all__ = ["Verdict", "verdict_of"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A condition's SQL over profiles ``p``: ``text`` is 1, 0 or NULL (Python decides);
    :meth:`bind` gives its ``?`` parameters. ``decided``: the text is never NULL.
    ``python_only``: the parts SQL never answers (function calls, comparisons of two
    fields, ...), as written."""

    text: str
    params: tuple[Any, ...]
    decided: bool
    python_only: tuple[str, ...]

    def bind(self, now: Now) -> tuple[Any, ...]:
        """The parameters of :attr:`text` for this ``now``."""
        at = as_now(now)
        return tuple(p.compute(at) if isinstance(p, Late) else p for p in self.params)


def _fold(part: Expr, now: datetime) -> bool:
    """A part that reads no field: answered once per bind, by the template rules."""
    return evaluate(part, {}, now)


def verdict_of(condition: Condition) -> Verdict:
    """The SQL verdict of ``condition`` (CPU work: callers cache it)."""
    verdict, python_only = sql.translate(condition.expr, _fold)
    return Verdict(
        text=verdict.text,
        params=verdict.params,
        decided=verdict.exact,
        python_only=tuple(unparse(part) for part in python_only),
    )
