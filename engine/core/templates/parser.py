"""Parse template source into nodes, resolving names and checking calls as it goes.

Grammar of a tag (``{...}``), by precedence from loosest to tightest::

    tag        := "if" expr | "elif" expr | "else" | "end"
                | "for" NAME ["," NAME] "in" expr | expr
    expr       := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand [OP operand]       OP: equal == not equal != greater > less <
                                                 >= <= contains not contains in not in
    operand    := "(" expr ")" | STRING | NUMBER | "true" | "false"
                | NAME "(" operand* ")"      arguments separated by spaces or commas
                | NAME ("." NAME | "." INT | "[" INT "]" | "[" STRING "]")*
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from engine.core.templates.functions import NOT_LITERAL, FunctionSpec
from engine.core.templates.lexer import KEYWORDS, Source, Tag, Text, Token, _tokenize, scan
from engine.core.templates.limits import TemplateLimits
from engine.core.templates.nodes import (
    BoolOp,
    Call,
    Compare,
    CompareOp,
    Const,
    Expr,
    For,
    If,
    Node,
    Not,
    Output,
    Segment,
    TextNode,
    Var,
)
from engine.errors import PluginError, TemplateError

__all__ = ["LOOP_ATTRS", "MAX_BLOCK_DEPTH", "MAX_EXPR_DEPTH", "Parser"]

LOOP_ATTRS = ("index", "index0", "first", "last", "length")
MAX_BLOCK_DEPTH = 16
"""How deeply ``{if}`` and ``{for}`` blocks may nest. Fixed, not configurable: each ``{for}``
becomes a Python ``for`` two indents deeper, and CPython allows 20 nested loops and 100
indents."""
MAX_EXPR_DEPTH = 32
"""How deeply parentheses, ``not`` and nested calls may nest inside one tag."""

_WORD_OPS: dict[str, CompareOp] = {
    "equal": "==",
    "greater": ">",
    "less": "<",
    "contains": "contains",
    "in": "in",
}
_NEGATED_OPS: dict[str, CompareOp] = {
    "equal": "!=",
    "contains": "not contains",
    "in": "not in",
}
_SYMBOL_OPS: dict[str, CompareOp] = {
    "==": "==",
    "!=": "!=",
    ">": ">",
    "<": "<",
    ">=": ">=",
    "<=": "<=",
}


@dataclass(eq=False)
class _Frame:
    """An open ``{if}`` or ``{for}`` block."""

    kind: Literal["if", "for"]
    pos: int
    body: list[Node] = field(default_factory=list)
    # {if}
    branches: list[tuple[Expr, list[Node]]] = field(default_factory=list)
    in_else: bool = False
    # {for}
    loop_id: int = 0
    key: str | None = None
    value: str = ""
    iterable: Expr | None = None
    loop_attrs: set[str] = field(default_factory=set)


class Parser:
    """Parse one template. ``context_vars`` lists every context path read, in source order.
    ``limits`` bound paths and variables (``None``: unbounded)."""

    def __init__(
        self,
        source: Source,
        functions: Mapping[str, FunctionSpec],
        limits: TemplateLimits | None = None,
    ) -> None:
        self.source = source
        self.functions = functions
        self.limits = limits
        self.context_vars: list[Var] = []
        self._distinct: set[tuple[str, tuple[Segment, ...]]] = set()
        self._frames: list[_Frame] = []
        self._loops = 0
        self._tokens: list[Token] = []
        self._i = 0
        self._depth = 0

    def parse_expression(self) -> Expr:
        """The whole source as one standalone expression, written as inside ``{if ...}``
        but without braces (a segment condition, say); raise TemplateError if it is wrong."""
        self._i = self._depth = 0
        try:
            self._tokens = _tokenize(self.source, 0, len(self.source.text))
            if self._peek().kind == "end":
                raise self.source.error("expected an expression", self._peek().pos)
            expr = self._expression()
            if self._peek().kind != "end":
                raise self._unexpected(self._peek(), "expected 'and', 'or' or the end")
        except TemplateError as err:
            # The messages are worded for tags; here the text ends where '}' would be.
            message = (err.message.replace("before '}'", "at the end")
                       .replace("end of tag", "end of the expression"))
            if message.endswith(" in tag"):
                message = message[: -len(" in tag")]
            raise TemplateError(message, line=err.line, col=err.col,
                                source_line=err.source_line) from None
        return expr

    # --- blocks --------------------------------------------------------------------------

    def parse(self) -> tuple[Node, ...]:
        """The template's nodes; raise TemplateError for the first problem found."""
        root: list[Node] = []
        for chunk in scan(self.source):
            body = self._frames[-1].body if self._frames else root
            if isinstance(chunk, Text):
                body.append(TextNode(chunk.value))
            else:
                self._tag(chunk, root)
        if self._frames:
            frame = self._frames[-1]
            line, col, _ = self.source.location(frame.pos)
            raise self.source.error(
                f"missing {{end}}: the {{{frame.kind}}} opened at {line}:{col} is never closed",
                frame.pos,
            )
        return tuple(root)

    def _tag(self, tag: Tag, root: list[Node]) -> None:
        self._tokens, self._i, self._depth = tag.tokens, 1, 0
        word = tag.tokens[0].value
        if word == "if":
            condition = self._required_expression("if")
            self._expect_end()
            frame = self._open(_Frame("if", tag.pos))
            frame.branches.append((condition, frame.body))
        elif word == "elif":
            frame = self._current_if(tag, "elif")
            condition = self._required_expression("elif")
            self._expect_end()
            frame.body = []
            frame.branches.append((condition, frame.body))
        elif word == "else":
            self._expect_end()
            frame = self._current_if(tag, "else")
            frame.in_else = True
            frame.body = []
        elif word == "end":
            self._expect_end()
            self._close(tag, root)
        elif word == "for":
            self._for(tag)
        else:
            self._i = 0
            expr = self._expression()
            self._expect_end()
            (self._frames[-1].body if self._frames else root).append(Output(expr))

    def _open(self, frame: _Frame) -> _Frame:
        if len(self._frames) >= MAX_BLOCK_DEPTH:
            raise self.source.error(
                f"blocks nest too deeply (at most {MAX_BLOCK_DEPTH} levels of {{if}}/{{for}})",
                frame.pos,
            )
        self._frames.append(frame)
        return frame

    def _current_if(self, tag: Tag, word: str) -> _Frame:
        frame = self._frames[-1] if self._frames else None
        if frame is None or frame.kind != "if":
            hint = ""
            if frame is not None:
                line, col, _ = self.source.location(frame.pos)
                hint = f" (the innermost open block is the {{for}} at {line}:{col})"
            raise self.source.error(f"{{{word}}} without {{if}}{hint}", tag.pos)
        if frame.in_else:
            raise self.source.error(f"{{{word}}} after {{else}} in the same {{if}}", tag.pos)
        return frame

    def _close(self, tag: Tag, root: list[Node]) -> None:
        if not self._frames:
            raise self.source.error("{end} without {if} or {for}", tag.pos)
        frame = self._frames.pop()
        node: Node
        if frame.kind == "if":
            node = If(
                tuple((cond, tuple(body)) for cond, body in frame.branches),
                tuple(frame.body) if frame.in_else else (),
            )
        else:
            assert frame.iterable is not None
            node = For(
                frame.loop_id,
                frame.key,
                frame.value,
                frame.iterable,
                tuple(frame.body),
                frozenset(frame.loop_attrs),
            )
        (self._frames[-1].body if self._frames else root).append(node)

    def _for(self, tag: Tag) -> None:
        names = [self._loop_variable()]
        if self._at("punct", ","):
            self._i += 1
            names.append(self._loop_variable())
            if names[0].value == names[1].value:
                raise self.source.error("the two loop variables must differ", names[1].pos)
        if not self._at("name", "in"):
            raise self._unexpected(self._peek(), "expected 'in' after the loop variable")
        self._i += 1
        iterable = self._required_expression("in", "what to loop over")
        self._expect_end()
        key, value = (names[0], names[1]) if len(names) == 2 else (None, names[0])
        self._open(
            _Frame(
                "for",
                tag.pos,
                loop_id=self._loops,
                key=str(key.value) if key else None,
                value=str(value.value),
                iterable=iterable,
            )
        )
        self._loops += 1

    def _loop_variable(self) -> Token:
        token = self._next()
        if token.kind != "name" or token.value in KEYWORDS or token.value == "loop":
            what = "a keyword" if token.value in KEYWORDS else token.describe()
            if token.value == "loop":
                what = "'loop' (reserved for loop.index and friends)"
            raise self.source.error(f"expected a loop variable name, found {what}", token.pos)
        return token

    # --- expressions ---------------------------------------------------------------------

    def _peek(self, ahead: int = 0) -> Token:
        return self._tokens[min(self._i + ahead, len(self._tokens) - 1)]

    def _next(self) -> Token:
        token = self._peek()
        if token.kind != "end":
            self._i += 1
        return token

    def _at(self, kind: str, value: str, ahead: int = 0) -> bool:
        token = self._peek(ahead)
        return token.kind == kind and token.value == value

    def _unexpected(self, token: Token, hint: str = "") -> TemplateError:
        message = f"unexpected {token.describe()}"
        return self.source.error(f"{message}; {hint}" if hint else message, token.pos)

    def _expect_end(self) -> None:
        token = self._peek()
        if token.kind != "end":
            word = self._tokens[0].value
            if word in ("else", "end"):
                raise self._unexpected(token, f"{{{word}}} takes nothing")
            raise self._unexpected(token, "expected '}'")

    def _required_expression(self, after: str, what: str = "a condition") -> Expr:
        if self._peek().kind == "end":
            raise self.source.error(f"expected {what} after '{after}'", self._peek().pos)
        return self._expression()

    def _enter(self, token: Token) -> None:
        self._depth += 1
        if self._depth > MAX_EXPR_DEPTH:
            raise self.source.error(
                f"expression nests too deeply (at most {MAX_EXPR_DEPTH} levels)", token.pos
            )

    def _expression(self) -> Expr:
        operands = [self._and()]
        while self._at("name", "or"):
            self._i += 1
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def _and(self) -> Expr:
        operands = [self._not()]
        while self._at("name", "and"):
            self._i += 1
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def _not(self) -> Expr:
        if self._at("name", "not"):
            self._enter(self._next())
            operand = self._not()
            self._depth -= 1
            return Not(operand)
        return self._comparison()

    def _comparison(self) -> Expr:
        left = self._operand()
        token = self._peek()
        op: CompareOp | None = None
        if token.kind == "op":
            op = _SYMBOL_OPS[str(token.value)]
            self._i += 1
        elif token.kind == "name" and token.value in _WORD_OPS:
            op = _WORD_OPS[str(token.value)]
            self._i += 1
        elif token.kind == "name" and token.value == "not":
            following = self._peek(1)
            if following.kind == "name" and following.value in _NEGATED_OPS:
                op = _NEGATED_OPS[str(following.value)]
                self._i += 2
            else:
                raise self._unexpected(token, "here 'not' must precede equal, contains or in")
        if op is None:
            return left
        return Compare(op, left, self._operand())

    def _operand(self) -> Expr:
        token = self._next()
        if token.kind == "punct" and token.value == "(":
            self._enter(token)
            expr = self._expression()
            if not self._at("punct", ")"):
                raise self._unexpected(self._peek(), "expected ')'")
            self._i += 1
            self._depth -= 1
            return expr
        if token.kind in ("string", "int", "float"):
            return Const(token.value)
        if token.kind == "name":
            name = str(token.value)
            if name in ("true", "false"):
                return Const(name == "true")
            if name in KEYWORDS:
                raise self.source.error(f"expected a value, found keyword {name!r}", token.pos)
            if self._at("punct", "("):
                return self._call(token)
            return self._variable(token)
        if token.kind == "end":
            raise self.source.error("expected a value before '}'", token.pos)
        raise self.source.error(f"expected a value, found {token.describe()}", token.pos)

    def _segments(self) -> tuple[Segment, ...]:
        segments: list[Segment] = []
        while True:
            if self._at("punct", "."):
                token = self._peek(1)
                if token.kind not in ("segment", "int"):
                    raise self._unexpected(token, "expected a field name after '.'")
                segments.append(int(token.value) if token.kind == "int" else str(token.value))
                self._i += 2
            elif self._at("punct", "["):
                token = self._peek(1)
                if token.kind == "int" or token.kind == "string":
                    segments.append(token.value)  # type: ignore[arg-type]
                else:
                    raise self._unexpected(token, 'expected a number or a "key" inside [ ]')
                if not self._at("punct", "]", 2):
                    raise self._unexpected(self._peek(2), "expected ']'")
                self._i += 3
            else:
                return tuple(segments)

    def _variable(self, token: Token) -> Expr:
        name = str(token.value)
        segments = self._segments()
        if self.limits is not None and 1 + len(segments) > self.limits.template_path_depth:
            raise self.source.error(
                f"a path has {1 + len(segments)} parts; [limits] template_path_depth is"
                f" {self.limits.template_path_depth}", token.pos,
            )
        for frame in reversed(self._frames):
            if frame.kind == "for" and name in (frame.key, frame.value):
                role = "key" if name == frame.key else "value"
                return Var(name, segments, token.pos, "local", (frame.loop_id, role))
        loop = next((f for f in reversed(self._frames) if f.kind == "for"), None)
        if name == "loop" and loop is not None:
            if not segments or segments[0] not in LOOP_ATTRS:
                raise self.source.error(
                    f"loop has only {', '.join(LOOP_ATTRS)} (loop.index counts from 1)",
                    token.pos,
                )
            loop.loop_attrs.add(str(segments[0]))
            return Var(name, segments, token.pos, "loop", (loop.loop_id, ""))
        if not segments and name in self.functions:
            return self._finish_call(token, (), ())
        return self._read(Var(name, segments, token.pos))

    def _read(self, var: Var) -> Var:
        """Record ``var`` as a context path the template reads, within the bound."""
        key = (var.root, var.segments)
        if key not in self._distinct:
            self._distinct.add(key)
            if self.limits is not None and len(self._distinct) > self.limits.template_variables:
                raise self.source.error(
                    f"the template reads more than {self.limits.template_variables} distinct"
                    f" variables; [limits] template_variables is"
                    f" {self.limits.template_variables}", var.pos,
                )
        self.context_vars.append(var)
        return var

    def _call(self, token: Token) -> Expr:
        name = str(token.value)
        if name not in self.functions:
            close = difflib.get_close_matches(name, list(self.functions), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.source.error(f"unknown function {name!r}{hint}", token.pos)
        self._enter(self._next())  # the "("
        args: list[Expr] = []
        positions: list[int] = []
        while not self._at("punct", ")"):
            if self._peek().kind == "end":
                raise self.source.error(f"missing ')' to close {name}(", token.pos)
            positions.append(self._peek().pos)
            args.append(self._operand())
            if self._at("punct", ","):
                self._i += 1
        self._i += 1
        self._depth -= 1
        return self._finish_call(token, tuple(args), tuple(positions))

    def _finish_call(
        self, token: Token, args: tuple[Expr, ...], positions: tuple[int, ...]
    ) -> Expr:
        spec = self.functions[str(token.value)]
        problem = spec.arity_error(len(args))
        if problem:
            raise self.source.error(problem, token.pos)
        if spec.check is not None:
            literals = tuple(a.value if isinstance(a, Const) else NOT_LITERAL for a in args)
            try:
                found = spec.check(literals)
            except Exception as exc:
                raise PluginError(f"the argument check of {spec.name}() failed: {exc!r}") from exc
            if found is not None:
                index, message = found
                pos = positions[index] if 0 <= index < len(positions) else token.pos
                raise self.source.error(message, pos)
        context = tuple(self._context_var(path, token.pos) for path in spec.context)
        return Call(spec.name, spec.function, context, args, token.pos)

    def _context_var(self, path: str, pos: int) -> Var:
        root, *rest = path.split(".")
        segments = tuple(int(s) if s.isdigit() else s for s in rest)
        return self._read(Var(root, segments, pos))
