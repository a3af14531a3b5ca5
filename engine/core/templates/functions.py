"""Built-in template functions and how any template function is described to the compiler.

A template function is a plain callable taking rendered-data values (anything JSON-like,
``None`` for missing) and returning a value to render. Its arity is read with
:func:`inspect.signature` at compile time. At render time a function that raises renders as
``""`` (``None``): a broken function never stops a mailing.

Two optional attributes refine a function:

- ``herald_context`` (set by :func:`context_function`): dotted context paths whose values are
  passed ahead of the written arguments, e.g. ``{unsubscribe}`` receives
  ``resource.unsubscribe_url`` and ``resource.unsubscribe_link``.
- ``herald_check``: ``check(args) -> (index, message) | None``, called at compile time with the
  literal arguments (:data:`NOT_LITERAL` for the others) to reject bad literals early.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar

import msgspec

from engine.core.templates import jsonpath as _jsonpath
from engine.core.templates.lexer import KEYWORDS
from engine.core.templates.runtime import render_value
from engine.errors import PluginError

__all__ = [
    "BUILTIN_FUNCTIONS",
    "NOT_LITERAL",
    "FunctionSpec",
    "context_function",
    "function_spec",
]

F = TypeVar("F", bound=Callable[..., Any])

NOT_LITERAL: Final = object()
"""Stands for an argument that is not a literal in ``herald_check`` calls."""


def context_function(*paths: str) -> Callable[[F], F]:
    """Mark a template function as reading ``paths`` from the render context.

    The values at those dotted paths are passed first; the template writes only the rest::

        @context_function("lead._fname")
        def greeting(fname, word="Hello"): ...      # used as {greeting} or {greeting("Hi")}
    """

    def mark(function: F) -> F:
        function.herald_context = paths  # type: ignore[attr-defined]
        return function

    return mark


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """What the compiler knows about a template function."""

    name: str
    function: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: any number
    context: tuple[str, ...]
    check: Callable[[tuple[Any, ...]], tuple[int, str] | None] | None

    def arity_error(self, given: int) -> str | None:
        """The message for a call with ``given`` arguments, or None when that is fine."""
        if given >= self.min_args and (self.max_args is None or given <= self.max_args):
            return None
        lo, hi = self.min_args, self.max_args
        if hi is None:
            expected = f"at least {lo} argument{'s' if lo != 1 else ''}"
        elif hi == 0:
            expected = "no arguments"
        elif lo == hi:
            expected = f"{lo} argument{'s' if lo != 1 else ''}"
        elif hi == lo + 1:
            expected = f"{lo} or {hi} arguments"
        else:
            expected = f"{lo} to {hi} arguments"
        return f"{self.name}() takes {expected} ({given} given)"


def function_spec(name: str, function: Callable[..., Any]) -> FunctionSpec:
    """Describe ``function`` for the compiler; raise PluginError if it cannot be a template
    function."""
    if not callable(function):
        raise PluginError(f"template function {name!r} is not callable")
    if not (name.isidentifier() and name.isascii()) or name in KEYWORDS:
        raise PluginError(f"template function name {name!r} is a keyword or not a valid name")
    context = tuple(getattr(function, "herald_context", ()))
    check = getattr(function, "herald_check", None)
    lo, positional, variadic = 0, 0, True
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some C callables have no signature: accept any count
        signature = None
    if signature is not None:
        variadic = False
        for param in signature.parameters.values():
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                positional += 1
                if param.default is param.empty:
                    lo = positional
            elif param.kind is param.VAR_POSITIONAL:
                variadic = True
            elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
                raise PluginError(
                    f"template function {name!r} has a required keyword-only argument "
                    f"{param.name!r}; templates pass arguments by position"
                )
    if not variadic and positional < len(context):
        raise PluginError(
            f"template function {name!r} reads {len(context)} context values "
            f"but accepts only {positional} arguments"
        )
    lo = max(lo - len(context), 0)
    hi = None if variadic else positional - len(context)
    return FunctionSpec(name, function, lo, hi, context, check if callable(check) else None)


# --- built-ins -----------------------------------------------------------------------------


def default(value: Any, fallback: Any) -> Any:
    """``value``, or ``fallback`` when it is missing, null, ``""``, ``[]`` or ``{}``.

    ``0`` and ``false`` are real values and are kept.
    """
    if value is None or (isinstance(value, (str, list, dict, tuple)) and not value):
        return fallback
    return value


def upper(value: Any) -> str:
    """The rendered value in upper case."""
    return render_value(value).upper()


def raw(value: Any) -> Any:
    """The value as it is. In an email's HTML, where every output tag's text is escaped
    (``&``, ``<``, ``>``, quotes), ``{raw(x)}`` as a tag's outermost call prints ``x``
    unescaped: HTML that data carries on purpose. Elsewhere it changes nothing."""
    return value


def lower(value: Any) -> str:
    """The rendered value in lower case."""
    return render_value(value).lower()


def capitalize(value: Any) -> str:
    """The rendered value with its first character in upper case; the rest is kept as is
    (``mcDonald`` becomes ``McDonald``, not ``Mcdonald``)."""
    text = render_value(value)
    return text[:1].upper() + text[1:]


def truncate(value: Any, length: Any, end: Any = "") -> str:
    """At most ``length`` characters of the rendered value; when it is cut, ``end`` (e.g.
    ``"…"``) replaces its last characters so the result still fits in ``length``."""
    text = render_value(value)
    limit = max(int(length), 0)
    if len(text) <= limit:
        return text
    tail = render_value(end)[:limit]
    return text[: limit - len(tail)] + tail


def _as_datetime(value: Any) -> date | None:
    if isinstance(value, date):  # datetime is a date too
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return date.fromisoformat(text)
    return None


def date_(value: Any, pattern: Any = "%d.%m.%Y") -> str:
    """Format an ISO-8601 / RFC 3339 date or datetime (or a Unix timestamp, read as UTC)
    with a ``strftime`` format; the time zone written in the value is kept."""
    parsed = _as_datetime(value)
    if parsed is None:
        return ""
    return parsed.strftime(render_value(pattern))


def jsonpath(document: Any, path: Any, mode: Any = "item") -> Any:
    """Values of ``document`` selected by a JSONPath (see ``jsonpath.py`` for the subset).

    ``mode`` ``"item"`` returns the first match (or nothing), ``"array"`` all matches as a list.
    A string document is decoded as JSON first.
    """
    if isinstance(document, (str, bytes)):
        document = msgspec.json.decode(document)
    found = _jsonpath.find(document, _jsonpath.parse(render_value(path)))
    if mode == "array":
        return found
    return found[0] if found else None


def _check_jsonpath(args: tuple[Any, ...]) -> tuple[int, str] | None:
    path = args[1] if len(args) > 1 else NOT_LITERAL
    if isinstance(path, str):
        try:
            _jsonpath.parse(path)
        except ValueError as exc:
            return 1, f"bad JSONPath {path!r}: {exc}"
    mode = args[2] if len(args) > 2 else NOT_LITERAL
    if mode is not NOT_LITERAL and mode not in ("item", "array"):
        return 2, f'jsonpath() mode must be "item" or "array", not {render_value(mode)!r}'
    return None


def _check_truncate(args: tuple[Any, ...]) -> tuple[int, str] | None:
    length = args[1] if len(args) > 1 else NOT_LITERAL
    if length is not NOT_LITERAL and not (isinstance(length, int) and length >= 0):
        return 1, "truncate() length must be a whole number >= 0"
    return None


def length(value: Any) -> int:
    """Number of items of a list or object, characters of a string; 0 when missing."""
    if value is None:
        return 0
    if isinstance(value, (str, list, dict, tuple, set, frozenset, Mapping)):
        return len(value)
    return len(render_value(value))


@context_function("resource.unsubscribe_url", "resource.unsubscribe_link")
def unsubscribe(url: Any, link: Any) -> str:
    """The recipient's unsubscribe link: the per-recipient one the engine sets where the
    resource has a tracking domain (``resource.unsubscribe_link``), else the resource's
    static ``resource.unsubscribe_url``, else ``""``."""
    if isinstance(link, str) and link:
        return link
    return url if isinstance(url, str) else ""


@context_function("resource.unsubscribe_url", "resource.globalunsubscribe_link")
def globalunsubscribe(url: Any, link: Any) -> str:
    """The link that unsubscribes the recipient from every resource of the profile's
    database (``resource.globalunsubscribe_link``, set where there is a tracking domain).
    Without a tracking domain there is no such page: the resource's static
    ``unsubscribe_url``, as for ``unsubscribe``."""
    return unsubscribe(url, link)


jsonpath.herald_check = _check_jsonpath  # type: ignore[attr-defined]
truncate.herald_check = _check_truncate  # type: ignore[attr-defined]

BUILTIN_FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = MappingProxyType(
    {
        "capitalize": capitalize,
        "date": date_,
        "default": default,
        "globalunsubscribe": globalunsubscribe,
        "jsonpath": jsonpath,
        "len": length,
        "lower": lower,
        "raw": raw,
        "truncate": truncate,
        "unsubscribe": unsubscribe,
        "upper": upper,
    }
)
"""The functions every template can call, by name."""
