"""What compiled templates call at render time: value rendering, lookups, comparisons.

Every helper here accepts any Python value and never raises; the generated code relies on that.
Data is expected to be JSON-like (what ``msgspec.json.decode`` produces), but tuples, sets,
other mappings and arbitrary objects are tolerated: they render through ``str()`` or as ``""``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

__all__ = [
    "call",
    "contains",
    "equal",
    "escape_html",
    "get",
    "greater",
    "greater_equal",
    "index",
    "iter_items",
    "iter_values",
    "less",
    "less_equal",
    "numeric",
    "path",
    "render_value",
    "to_context",
]

_encode_json = msgspec.json.Encoder().encode
_escape = html.escape
# Integral floats below this render without ".0"; above it repr() switches to exponent form.
_INTEGRAL_FLOAT_LIMIT = 1e16
_NUMERIC_RE = re.compile(r"[+-]?(?:\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def escape_html(text: str) -> str:
    """``text`` safe as HTML text or a quoted attribute's value: ``& < > " '`` as
    references (``html.escape``), with no copy when there is none of them."""
    if "&" in text or "<" in text or ">" in text or '"' in text or "'" in text:
        return _escape(text)
    return text


def render_value(value: Any) -> str:
    """Render a value as template output.

    Strings as-is; ``None`` as ``""``; ``True``/``False`` as ``true``/``false``; integers (and
    integral floats below 1e16) without ``.0``; other floats in shortest round-trip form;
    lists and dicts as compact JSON.
    """
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if cls is bool:
        return "true" if value else "false"
    try:
        if cls is int:
            return str(value)
        if cls is float:
            if value.is_integer() and -_INTEGRAL_FLOAT_LIMIT < value < _INTEGRAL_FLOAT_LIMIT:
                return str(int(value))
            return repr(value)
        if isinstance(value, (list, dict, tuple)):
            return _to_json(value)
        if isinstance(value, Mapping):
            return _to_json(dict(value))
        if isinstance(value, str):
            return str.__str__(value)
        return str(value)
    except Exception:  # int too long for str(), a __str__ that fails, ...
        return ""


def _to_json(value: Any) -> str:
    try:
        return _encode_json(value).decode()
    except Exception:  # unsupported key or element type: be lenient
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=render_value)


def to_context(ctx: Any) -> Mapping[str, Any]:
    """The render context as a mapping; anything that is not a mapping counts as empty."""
    return ctx if isinstance(ctx, Mapping) else {}


def get(obj: Any, key: str) -> Any:
    """``obj[key]`` for any mapping, else ``None`` (the slow path of a dotted lookup)."""
    if obj.__class__ is dict:
        return obj.get(key)
    if isinstance(obj, Mapping):
        try:
            return obj.get(key)
        except Exception:  # a mapping with an unhashable-key or failing __getitem__
            return None
    return None


def index(obj: Any, position: int) -> Any:
    """Item ``position`` of a list (negative counts from the end), or key ``"0"`` of a dict."""
    if isinstance(obj, (list, tuple)):
        if -len(obj) <= position < len(obj):
            return obj[position]
        return None
    if isinstance(obj, Mapping):
        found = get(obj, str(position))
        if found is None:
            try:
                found = obj.get(position)
            except Exception:
                return None
        return found
    return None


def path(obj: Any, segments: tuple[str | int, ...]) -> Any:
    """Follow ``segments`` (keys and list positions) from ``obj``; ``None`` when missing."""
    for segment in segments:
        obj = index(obj, segment) if isinstance(segment, int) else get(obj, segment)
        if obj is None:
            return None
    return obj


def iter_values(value: Any) -> list[Any]:
    """What ``{for x in value}`` walks: list items, or mapping keys; anything else is empty."""
    if value.__class__ is list:
        return value
    try:
        if isinstance(value, (list, tuple, set, frozenset)):
            return list(value)
        if isinstance(value, Mapping):
            return list(value.keys())
    except Exception:
        pass
    return []


def iter_items(value: Any) -> list[tuple[Any, Any]]:
    """What ``{for k, v in value}`` walks: mapping items, or (index, item) pairs of a list."""
    try:
        if isinstance(value, Mapping):
            return list(value.items())
        if isinstance(value, (list, tuple)):
            return list(enumerate(value))
    except Exception:
        pass
    return []


def call(function: Callable[..., Any], *args: Any) -> Any:
    """Call a template function; a failing function yields ``None`` (renders as ``""``)."""
    try:
        return function(*args)
    except Exception:
        return None


def numeric(value: Any) -> int | float | None:
    """The number a value stands for in a comparison: numbers and numeric strings, else None.

    Booleans are not numbers here: ``true`` compares as the string ``"true"``.
    """
    cls = value.__class__
    if cls is int or cls is float:
        return value  # type: ignore[no-any-return]
    if cls is str and _NUMERIC_RE.fullmatch(value):
        try:
            if "." in value or "e" in value or "E" in value:
                return float(value)
            return int(value)
        except ValueError:  # more digits than int() accepts
            return None
    return None


def equal(left: Any, right: Any) -> bool:
    """``left equal right``: numeric when both are numbers or numeric strings, else as text."""
    a, b = numeric(left), numeric(right)
    if a is not None and b is not None:
        return a == b
    return render_value(left) == render_value(right)


def _order(left: Any, right: Any) -> tuple[Any, Any]:
    a, b = numeric(left), numeric(right)
    if a is not None and b is not None:
        return a, b
    return render_value(left), render_value(right)


def greater(left: Any, right: Any) -> bool:
    """``left greater right`` (numeric or text order, see :func:`equal`)."""
    a, b = _order(left, right)
    return bool(a > b)


def less(left: Any, right: Any) -> bool:
    """``left less right`` (numeric or text order, see :func:`equal`)."""
    a, b = _order(left, right)
    return bool(a < b)


def greater_equal(left: Any, right: Any) -> bool:
    """``left >= right`` (numeric or text order, see :func:`equal`)."""
    a, b = _order(left, right)
    return bool(a >= b)


def less_equal(left: Any, right: Any) -> bool:
    """``left <= right`` (numeric or text order, see :func:`equal`)."""
    a, b = _order(left, right)
    return bool(a <= b)


def contains(container: Any, item: Any) -> bool:
    """``container contains item``: list membership (by :func:`equal`), a mapping's keys,
    or else substring of the rendered text."""
    try:
        if isinstance(container, (list, tuple, set, frozenset)):
            return any(equal(element, item) for element in container)
        if isinstance(container, Mapping):
            return any(equal(key, item) for key in container)
    except Exception:
        return False
    return render_value(item) in render_value(container)
