"""The parsed form of a template: text, output, if and for nodes over expression nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = [
    "BoolOp",
    "Call",
    "Compare",
    "Const",
    "Expr",
    "For",
    "If",
    "Node",
    "Not",
    "Output",
    "Segment",
    "TextNode",
    "Var",
    "dotted",
]

Segment: TypeAlias = str | int
CompareOp = Literal["==", "!=", ">", "<", ">=", "<=", "contains", "not contains", "in", "not in"]


def dotted(root: str, segments: tuple[Segment, ...]) -> str:
    """A path as people write it: ``json.items.0.name``."""
    return ".".join([root, *map(str, segments)])


@dataclass(frozen=True, slots=True)
class Const:
    """A literal: string, number, ``true`` or ``false``."""

    value: str | int | float | bool


@dataclass(frozen=True, slots=True)
class Var:
    """A variable path.

    ``scope`` says what the root names: a context root (``lead``, ``json``, ...), a loop
    variable (``binding`` is ``(loop id, "key" | "value")``) or ``loop`` itself.
    """

    root: str
    segments: tuple[Segment, ...]
    pos: int
    scope: Literal["context", "local", "loop"] = "context"
    binding: tuple[int, str] = (0, "")

    @property
    def path(self) -> str:
        return dotted(self.root, self.segments)


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; ``context`` are the paths passed ahead of the written arguments."""

    name: str
    function: Any
    context: tuple[Var, ...]
    args: tuple[Expr, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: Literal["and", "or"]
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    left: Expr
    right: Expr


Expr: TypeAlias = Const | Var | Call | Not | BoolOp | Compare


@dataclass(frozen=True, slots=True)
class TextNode:
    value: str


@dataclass(frozen=True, slots=True)
class Output:
    expr: Expr


@dataclass(frozen=True, slots=True)
class If:
    """``branches`` are the ``{if}`` and ``{elif}`` conditions with their bodies."""

    branches: tuple[tuple[Expr, tuple[Node, ...]], ...]
    otherwise: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class For:
    """A loop; ``loop_id`` names its variables in generated code, ``loop_attrs`` are the
    ``loop.*`` attributes its body reads, ``key`` is set for ``{for k, v in ...}``."""

    loop_id: int
    key: str | None
    value: str
    iterable: Expr
    body: tuple[Node, ...]
    loop_attrs: frozenset[str]


Node: TypeAlias = TextNode | Output | If | For
