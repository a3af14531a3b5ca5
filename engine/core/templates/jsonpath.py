"""A small, hand-written subset of JSONPath for the ``jsonpath()`` template function.

Supported::

    $               the document itself
    .name  ['name'] ["name"]   a member of an object
    [2]  [-1]       an item of an array (negative counts from the end)
    .*  [*]         every member value / every item
    ..name          ``name`` members at any depth (document order)
    ..*             every value below the current one

Not supported (rejected by :func:`parse`): filters ``[?(...)]``, slices ``[1:3]``, unions
``[0,1]``, script expressions. Results are in document order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, TypeAlias

__all__ = ["Step", "find", "parse"]

Step: TypeAlias = tuple[Literal["child", "index", "all", "descend"], str | int | None]

_NAME = re.compile(r"[\w-]+")
_BRACKET = re.compile(r"\[\s*(?:(\*)|(-?\d+)|'([^']*)'|\"([^\"]*)\")\s*\]")


@lru_cache(maxsize=256)
def parse(path: str) -> tuple[Step, ...]:
    """Parse a JSONPath expression; raise ValueError naming the problem."""
    if not path.startswith("$"):
        raise ValueError("a JSONPath starts with '$'")
    steps: list[Step] = []
    i, n = 1, len(path)
    while i < n:
        if path.startswith("..", i):
            i += 2
            if path.startswith("*", i):
                steps.append(("descend", None))
                i += 1
                continue
            m = _NAME.match(path, i)
            if not m:
                raise ValueError(f"expected a name after '..' at offset {i}")
            steps.append(("descend", m.group()))
            i = m.end()
        elif path[i] == ".":
            i += 1
            if path.startswith("*", i):
                steps.append(("all", None))
                i += 1
                continue
            m = _NAME.match(path, i)
            if not m:
                raise ValueError(f"expected a name after '.' at offset {i}")
            steps.append(("child", m.group()))
            i = m.end()
        elif path[i] == "[":
            m = _BRACKET.match(path, i)
            if not m:
                raise ValueError(
                    f"unsupported bracket at offset {i} (use [n], [*], ['name']; "
                    "filters, slices and unions are not supported)"
                )
            star, number, single, double = m.groups()
            if star:
                steps.append(("all", None))
            elif number is not None:
                steps.append(("index", int(number)))
            else:
                steps.append(("child", single if single is not None else double))
            i = m.end()
        else:
            raise ValueError(f"unexpected {path[i]!r} at offset {i}")
    return tuple(steps)


def _children(node: Any) -> list[Any]:
    if isinstance(node, Mapping):
        return list(node.values())
    if isinstance(node, (list, tuple)):
        return list(node)
    return []


def _descendants(node: Any) -> list[Any]:
    """Every value below ``node`` in document order (pre-order), each container once."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = list(reversed(_children(node)))
    while stack:
        current = stack.pop()
        found.append(current)
        if isinstance(current, (Mapping, list, tuple)) and id(current) not in seen:
            seen.add(id(current))
            stack.extend(reversed(_children(current)))
    return found


def find(document: Any, steps: tuple[Step, ...]) -> list[Any]:
    """All values the path selects in ``document``, in document order."""
    nodes = [document]
    for kind, arg in steps:
        selected: list[Any] = []
        for node in nodes:
            if kind == "child":
                if isinstance(node, Mapping) and arg in node:
                    selected.append(node[arg])
            elif kind == "index":
                if isinstance(node, (list, tuple)) and isinstance(arg, int):
                    if -len(node) <= arg < len(node):
                        selected.append(node[arg])
            elif kind == "all":
                selected.extend(_children(node))
            elif arg is None:  # ..*
                selected.extend(_descendants(node))
            else:  # ..name
                for candidate in [node, *_descendants(node)]:
                    if isinstance(candidate, Mapping) and arg in candidate:
                        selected.append(candidate[arg])
        nodes = selected
    return nodes
