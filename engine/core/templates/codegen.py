"""Turn parsed nodes into the source of one Python function, and compile it.

The generated ``render(ctx)``:

- reads every context path once, at the top, into locals (``v0 = ctx.get('lead')``), with one
  ``dict`` class check per parent object and a slow-path helper for anything else;
- builds the text with f-strings whose fields are only generated local names, so no template
  text or name is ever spliced into code: literal text lives in closure constants (``c0``),
  dict keys are written with ``repr()``;
- evaluates ``{if}`` into a local per block and ``{for}`` into a joined list;
- has no builtins: every helper it calls is passed in as a closure variable, and those
  helpers only look into dicts and lists (no attribute access on data).
"""

from __future__ import annotations

import marshal
from collections import deque
from collections.abc import Callable, Mapping
from types import CodeType
from typing import Any

from engine.core.templates import runtime
from engine.core.templates.functions import raw
from engine.core.templates.nodes import (
    BoolOp,
    Call,
    Compare,
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

__all__ = [
    "PythonCompiler",
    "RenderFunction",
    "compile_marshalled",
    "compile_python",
    "generate",
    "load",
]

RenderFunction = Callable[[Mapping[str, Any]], str]

# Name in generated code -> what it is bound to.
_HELPERS: dict[str, Any] = {
    "dict": dict,
    "str": str,
    "int": int,
    "float": float,
    "_len": len,
    "_enumerate": enumerate,
    "_s": runtime.render_value,
    "_e": runtime.escape_html,
    "_ctx": runtime.to_context,
    "_get": runtime.get,
    "_index": runtime.index,
    "_path": runtime.path,
    "_values": runtime.iter_values,
    "_items": runtime.iter_items,
    "_call": runtime.call,
    "_equal": runtime.equal,
    "_contains": runtime.contains,
    "_gt": runtime.greater,
    "_lt": runtime.less,
    "_ge": runtime.greater_equal,
    "_le": runtime.less_equal,
}
_ORDER_HELPERS = {">": "_gt", "<": "_lt", ">=": "_ge", "<=": "_le"}
_FSTRING_PIECES = 64  # longer outputs are built from several f-strings
_INLINE_SEGMENTS = 3  # longer loop-variable paths and unbranched runs go through _path()
_ELIF_CHUNK = 32  # CPython compiles an elif chain recursively: longer ones are split


def _as_text(name: str) -> str:
    """An expression rendering the local ``name``, free of quotes (usable in an f-string)."""
    return f"({name} if {name}.__class__ is str else _s({name}))"


class _Generator:
    def __init__(self, escape_html: bool = False) -> None:
        self.escape_html = escape_html
        self.lines: list[str] = []
        self.constants: list[Any] = []
        self._constant_names: dict[tuple[type, Any], str] = {}
        self._temps = 0
        self.hoisted: dict[tuple[Segment, ...], str] = {}

    def constant(self, value: Any) -> str:
        key = (type(value), value if isinstance(value, (str, int, float)) else id(value))
        if key not in self._constant_names:
            self._constant_names[key] = f"c{len(self.constants)}"
            self.constants.append(value)
        return self._constant_names[key]

    def temp(self, prefix: str = "t") -> str:
        self._temps += 1
        return f"{prefix}{self._temps}"

    def emit(self, indent: int, line: str) -> None:
        # One space a level past render's body (level 2, 8 spaces): deep blocks would
        # otherwise spend most of the source, and of compiling it, on indentation.
        self.lines.append(" " * (indent + 6) + line)

    # --- context reads, hoisted to the top -------------------------------------------------

    def hoist(self, variables: list[Var], indent: int) -> None:
        # A trie of the paths read, nodes by number (0 is ctx), so each part of a path costs
        # one dict step: building each prefix of a path as a tuple made compiling quadratic
        # in its length.
        children: list[dict[Segment, int]] = [{}]
        names = ["ctx"]
        read: set[int] = set()
        for var in variables:
            node = 0
            for part in (var.root, *var.segments):
                child = children[node].get(part)
                if child is None:
                    child = len(children)
                    children[node][part] = child
                    children.append({})
                    names.append(f"v{child - 1}")
                node = child
            read.add(node)
            self.hoisted[(var.root, *var.segments)] = names[node]
        if not self.hoisted:
            return
        self.emit(indent, "if ctx.__class__ is not dict:")
        self.emit(indent + 1, "ctx = _ctx(ctx)")
        for key, child in children[0].items():
            self.emit(indent, f"{names[child]} = ctx.get({key!r})")
        pending = deque(children[0].values())
        while pending:
            parent = pending.popleft()
            name = names[parent]
            keys: list[tuple[str, int]] = []
            for k, c in children[parent].items():
                # A long run of parts nothing else branches from or reads is one _path() call,
                # not a local per part: code stays small whatever the paths' length.
                run, end = [k], c
                while end not in read and len(children[end]) == 1:
                    (k2, end), = children[end].items()
                    run.append(k2)
                if len(run) > _INLINE_SEGMENTS:
                    self.emit(indent, f"{names[end]} = _path({name}, {tuple(run)!r})")
                    pending.append(end)
                    continue
                if isinstance(k, str):
                    keys.append((k, c))
                else:
                    self.emit(indent, f"{names[c]} = _index({name}, {k!r})")
                pending.append(c)
            if keys:
                self.emit(indent, f"if {name}.__class__ is dict:")
                for k, c in keys:
                    self.emit(indent + 1, f"{names[c]} = {name}.get({k!r})")
                self.emit(indent, "else:")
                for k, c in keys:
                    self.emit(indent + 1, f"{names[c]} = _get({name}, {k!r})")

    # --- expressions -----------------------------------------------------------------------

    def lookup(self, base: str, segments: tuple[Segment, ...]) -> str:
        if len(segments) > _INLINE_SEGMENTS:
            return f"_path({base}, {segments!r})"
        expr = base
        for segment in segments:
            if isinstance(segment, int):
                expr = f"_index({expr}, {segment!r})"
            else:
                t = expr if expr.isidentifier() else self.temp()
                bind = t if t == expr else f"({t} := {expr})"
                expr = (
                    f"({t}.get({segment!r}) if {bind}.__class__ is dict "
                    f"else _get({t}, {segment!r}))"
                )
        return expr

    def value(self, expr: Expr) -> str:
        """A Python expression for the value of ``expr``."""
        if isinstance(expr, Const):
            return repr(expr.value)
        if isinstance(expr, Var):
            if expr.scope == "context":
                return self.hoisted[(expr.root, *expr.segments)]
            loop_id, role = expr.binding
            if expr.scope == "local":
                return self.lookup(f"{'k' if role == 'key' else 'l'}{loop_id}", expr.segments)
            attr, rest = expr.segments[0], expr.segments[1:]
            base = {
                "index": f"(i{loop_id} + 1)",
                "index0": f"i{loop_id}",
                "first": f"(i{loop_id} == 0)",
                "last": f"(i{loop_id} == n{loop_id} - 1)",
                "length": f"n{loop_id}",
            }[str(attr)]
            return self.lookup(base, rest)
        if isinstance(expr, Call):
            args = [self.value(v) for v in expr.context] + [self.value(a) for a in expr.args]
            return f"_call({', '.join([self.constant(expr.function), *args])})"
        if isinstance(expr, Compare):
            return self.condition(expr)
        return f"(True if {self.condition(expr)} else False)"

    def text_of(self, expr: Expr) -> str:
        """A Python expression for ``expr`` rendered as text."""
        value = self.value(expr)
        if value.isidentifier():
            return _as_text(value)
        t = self.temp()
        return f"({t} if ({t} := {value}).__class__ is str else _s({t}))"

    def condition(self, expr: Expr) -> str:
        """A Python expression whose truthiness is that of ``expr``."""
        if isinstance(expr, Not):
            return f"(not {self.condition(expr.operand)})"
        if isinstance(expr, BoolOp):
            joined = f" {expr.op} ".join(self.condition(e) for e in expr.operands)
            return f"({joined})"
        if not isinstance(expr, Compare):
            return self.value(expr)
        left, right, op = expr.left, expr.right, expr.op
        if op in ("==", "!="):
            # Against a literal that is not numeric, equality is plain text equality.
            for a, b in ((left, right), (right, left)):
                if isinstance(b, Const) and runtime.numeric(b.value) is None:
                    return f"({self.text_of(a)} {op} {runtime.render_value(b.value)!r})"
            equal = f"_equal({self.value(left)}, {self.value(right)})"
            return equal if op == "==" else f"(not {equal})"
        if op in _ORDER_HELPERS:
            helper = _ORDER_HELPERS[op]
            if isinstance(right, Const) and type(right.value) in (int, float):
                value, bound = self.value(left), repr(right.value)
                t = value if value.isidentifier() else self.temp()
                bind = t if t == value else f"({t} := {value})"
                return (
                    f"({t} {op} {bound} if {bind}.__class__ is int "
                    f"or {t}.__class__ is float else {helper}({t}, {bound}))"
                )
            return f"{helper}({self.value(left)}, {self.value(right)})"
        container, item = (left, right) if op.endswith("contains") else (right, left)
        found = f"_contains({self.value(container)}, {self.value(item)})"
        return f"(not {found})" if op.startswith("not") else found

    # --- statements ------------------------------------------------------------------------

    def block(self, nodes: tuple[Node, ...], indent: int) -> str:
        """Emit the statements ``nodes`` need; return an expression for their text."""
        pieces: list[str] = []
        for node in nodes:
            if isinstance(node, TextNode):
                pieces.append(self.constant(node.value))
            elif isinstance(node, Output):
                pieces.append(self.output(node.expr, indent))
            elif isinstance(node, If):
                pieces.append(self.if_block(node, indent))
            else:
                pieces.append(self.for_block(node, indent))
        return self.join(pieces, indent)

    def join(self, pieces: list[str], indent: int) -> str:
        """An expression concatenating ``pieces`` (quote-free expressions)."""
        if not pieces:
            return "''"
        if len(pieces) == 1:
            return pieces[0]
        if len(pieces) > _FSTRING_PIECES:  # CPython compiles huge f-strings in quadratic time
            chunks = []
            for start in range(0, len(pieces), _FSTRING_PIECES):
                chunk = self.temp("j")
                self.emit(
                    indent,
                    f"{chunk} = {self.join(pieces[start : start + _FSTRING_PIECES], indent)}",
                )
                chunks.append(chunk)
            return self.join(chunks, indent)
        return 'f"' + "".join(f"{{{p}}}" for p in pieces) + '"'

    def output(self, expr: Expr, indent: int) -> str:
        if not self.escape_html:
            return self.text(expr, indent)
        if isinstance(expr, Call) and expr.function is raw and len(expr.args) == 1:
            return self.text(expr.args[0], indent)  # {raw(x)}: x as it is
        if isinstance(expr, Const):
            return self.constant(runtime.escape_html(runtime.render_value(expr.value)))
        return f"_e({self.text(expr, indent)})"

    def text(self, expr: Expr, indent: int) -> str:
        """A quote-free expression for the text of output tag ``expr``."""
        if isinstance(expr, Const):
            return self.constant(runtime.render_value(expr.value))
        if isinstance(expr, Var) and expr.scope == "context":
            return _as_text(self.hoisted[(expr.root, *expr.segments)])
        t = self.temp()
        if isinstance(expr, (Not, BoolOp, Compare)):
            self.emit(indent, f"{t} = 'true' if {self.condition(expr)} else 'false'")
            return t
        value = self.value(expr)
        if value.isidentifier():
            return _as_text(value)
        self.emit(indent, f"{t} = {value}")
        return _as_text(t)

    def if_block(self, node: If, indent: int) -> str:
        result = self.temp("b")
        branches = node.branches
        if len(branches) <= _ELIF_CHUNK:
            self.branches(result, branches, indent)
            self.emit(indent, "else:")
            self.emit(indent + 1, f"{result} = {self.block(node.otherwise, indent + 1)}")
            return result
        # A text is never None: None says no branch of the chunks so far was taken.
        self.emit(indent, f"{result} = None")
        for start in range(0, len(branches), _ELIF_CHUNK):
            self.emit(indent, f"if {result} is None:")
            self.branches(result, branches[start : start + _ELIF_CHUNK], indent + 1)
        self.emit(indent, f"if {result} is None:")
        self.emit(indent + 1, f"{result} = {self.block(node.otherwise, indent + 1)}")
        return result

    def branches(
        self, result: str, branches: tuple[tuple[Expr, tuple[Node, ...]], ...], indent: int
    ) -> None:
        for number, (condition, body) in enumerate(branches):
            self.emit(indent, f"{'if' if number == 0 else 'elif'} {self.condition(condition)}:")
            self.emit(indent + 1, f"{result} = {self.block(body, indent + 1)}")

    def for_block(self, node: For, indent: int) -> str:
        n = node.loop_id
        result, items, parts = self.temp("b"), f"it{n}", f"a{n}"
        helper = "_items" if node.key is not None else "_values"
        self.emit(indent, f"{result} = ''")
        self.emit(indent, f"{items} = {helper}({self.value(node.iterable)})")
        self.emit(indent, f"if {items}:")
        if node.loop_attrs & {"length", "last"}:
            self.emit(indent + 1, f"n{n} = _len({items})")
        self.emit(indent + 1, f"{parts} = []")
        target = f"(k{n}, l{n})" if node.key is not None else f"l{n}"
        if node.loop_attrs & {"index", "index0", "first", "last"}:
            self.emit(indent + 1, f"for i{n}, {target} in _enumerate({items}):")
        else:
            self.emit(indent + 1, f"for {target} in {items}:")
        text = self.block(node.body, indent + 2)
        self.emit(indent + 2, f"{parts}.append({text})")
        self.emit(indent + 1, f"{result} = ''.join({parts})")
        return result


def generate(
    nodes: tuple[Node, ...], context_vars: list[Var], *, escape_html: bool = False
) -> tuple[str, list[Any]]:
    """The Python source of a factory returning ``render``, and the constants it takes.
    With ``escape_html`` every output tag's text is HTML-escaped but ``{raw(x)}``'s."""
    gen = _Generator(escape_html)
    gen.hoist(context_vars, 2)
    result = gen.block(nodes, 2)
    body = gen.lines
    head = [
        "def _factory(_helpers, _constants):",
        f"    ({', '.join(_HELPERS)},) = _helpers",
    ]
    if gen.constants:
        names = ", ".join(f"c{i}" for i in range(len(gen.constants)))
        head.append(f"    ({names},) = _constants")
    head.append("    def render(ctx):")
    tail = [f"        return {result}", "    return render", ""]
    return "\n".join([*head, *body, *tail]), gen.constants


#: Compiles generated Python source (``source``, ``filename``) to a code object.
PythonCompiler = Callable[[str, str], CodeType]


def compile_python(source: str, filename: str) -> CodeType:
    """The builtin ``compile``: what :func:`load` uses unless given another compiler."""
    return compile(source, filename, "exec")


def compile_marshalled(source: str, filename: str) -> bytes:
    """``marshal`` of the code of ``source``, for a compiler that runs in another process
    (CPython's compiler holds the GIL throughout; ``marshal.loads`` is ~100 times faster)."""
    return marshal.dumps(compile(source, filename, "exec"))


def load(
    source: str, constants: list[Any], filename: str, compiler: PythonCompiler | None = None
) -> RenderFunction:
    """Compile generated source (with ``compiler``, default :func:`compile_python`) and
    return its ``render`` function.

    May raise SyntaxError, RecursionError or MemoryError for pathological input; the caller
    turns those into a TemplateError.
    """
    code = (compiler or compile_python)(source, filename)
    namespace: dict[str, Any] = {"__builtins__": {}}
    exec(code, namespace)
    factory = namespace["_factory"]
    render: RenderFunction = factory(tuple(_HELPERS.values()), tuple(constants))
    return render
