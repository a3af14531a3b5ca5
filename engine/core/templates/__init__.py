"""The Herald template language: compile once per mailing, render per message.

The language is specified in ``TEMPLATES.md``. :func:`compile_template` parses a template and
generates one Python function for it (see ``codegen.py``); :meth:`Template.render` is that
function, so rendering never re-parses and costs a few dict lookups and one f-string.

Choices made where the spec is silent:

Text and tags
    A tag starts at ``{`` followed by an ASCII letter or ``_`` (so ``{Привет}`` is literal
    text). Names are ASCII (``[A-Za-z_][A-Za-z0-9_]*``); other keys are reached with brackets:
    ``json["order-id"]``, ``json["товар"]``. A tag may span lines; a string may not.
    Outside tags only ``\\{`` and ``\\\\`` are escapes: any other backslash (and any ``}``)
    is printed as written. Inside strings only ``\\"`` and ``\\\\`` are allowed.
Paths
    ``.0`` and ``[0]`` index a list (``[-1]`` counts from the end) or read key ``"0"`` of an
    object. Keywords (``if in not and or equal ...``) cannot be roots but can be fields
    (``lead.end``). A bare function name with no dot is a call: ``{unsubscribe}``.
Values
    Integral floats below 1e16 render without ``.0`` (``100.0`` -> ``100``), like integers;
    other floats use ``repr`` (shortest round-trip). Lists and objects render as compact
    JSON with non-ASCII kept. An output tag may hold a condition: ``{a equal b}`` renders
    ``true`` or ``false``; ``and``/``or``/``not`` always give ``true``/``false``.
Comparisons
    Numeric strings are decimal literals (``-1``, ``2.50``, ``1e3``); no spaces, ``inf`` or
    ``nan``. ``true``/``false`` are not numbers: they compare as the text ``true``/``false``.
    A missing value compares as ``""``. ``contains`` on an object tests its keys; list
    membership uses ``equal`` (so ``[1, 2] contains "2"``).
Loops
    ``{for x in obj}`` walks an object's keys; ``{for i, x in list}`` gives 0-based
    positions. Strings, numbers and missing values are not iterable (render nothing).
    ``loop`` refers to the innermost loop; ``loop.foo`` is a compile error; ``loop`` is
    reserved and cannot be a loop variable.
Errors
    ``missing {end}`` points at the innermost block left open. Extra functions may override
    built-ins of the same name; plugins can mark functions that read the context with
    :func:`context_function`.
Bounds
    Compiling takes time and memory linear in the template's size (``bench/templates.py``
    compiles 100 KB of hostile shapes). :class:`TemplateLimits` (the ``[limits]`` table:
    ``template_bytes``, ``template_path_depth``, ``template_variables``) are checked while
    compiling, the defaults unless the caller passes its own or ``None``; the error names
    the key and points at the first byte, the path or the variable past it. Fixed, whatever
    the limits: blocks nest at most 16 deep (CPython allows 20 nested loops), expressions 32
    (parentheses, ``not``, nested calls); number literals and indexes have at most 100
    characters. A ``RecursionError`` or ``MemoryError`` while compiling, which these bounds
    are there to prevent, becomes a TemplateError ("too complex").
Blank templates
    A template is blank when every path through it (each branch of every ``{if}``, any
    number of passes of every ``{for}``) yields only whitespace (``str.isspace``): it has
    no other text and no tag that outputs a value, like an empty file or
    ``{if lead.x}{end}``. ``Template.blank`` says so; :func:`check_template` reports it as
    an error at 1:1 and :func:`refuse_blank` raises it. Whether any other template renders
    blank is known per message (the engine skips those as ``empty``).
Metadata
    ``Template.urls`` are the distinct URLs of each run of literal text, in order; a URL
    continued by a tag (``https://x.ru/?id={lead._id}``) is found up to the tag.
    ``closed_urls`` are those wholly inside literal text: followed, in the same run of
    text, by what ends a URL (a space, a quote...) or at the template's very end. The
    others are *open*: a tag may continue them (``https://x.ru/{lead.id}``, or
    ``https://x.ru{if a}/a{end}``), so the rendered URL is partly data. For link tracking
    (``engine.core.links.Shortener``): ``url_marks`` counts the ``://`` of the literal text
    outside any ``{if}`` or ``{for}`` (every rendered text holds them), ``open_urls`` says
    whether some literal URL is open (or some ``://`` of literal text is in no URL, as in
    ``{lead.scheme}://x.ru``), and ``prints_data`` whether any tag outputs a value (a text
    may then hold URLs from data).
Functions
    A function that raises at render time renders as ``""`` (its value is ``None``): data
    problems never stop a mailing. Literal arguments are checked at compile time where a
    built-in can (``jsonpath`` paths and modes, ``truncate`` lengths). Built-ins:
    ``default(x fallback)`` replaces missing, null, ``""``, ``[]``, ``{}`` (not ``0`` or
    ``false``); ``upper``, ``lower``; ``capitalize`` upper-cases the first character only;
    ``truncate(x n [end])`` keeps at most ``n`` characters including ``end``;
    ``date(x [format])`` defaults to ``"%d.%m.%Y"`` and also takes Unix timestamps (UTC);
    ``jsonpath(doc path [mode])`` supports ``$ .a ['a'] [n] [*] .* ..a ..*`` (see
    ``jsonpath.py``), mode ``"item"`` (default, first match) or ``"array"``, and decodes a
    string ``doc`` as JSON; ``len(x)``; ``unsubscribe`` renders the recipient's own
    unsubscribe link where the resource has a tracking domain
    (``resource.unsubscribe_link``, which the engine sets), else
    ``resource.unsubscribe_url``; ``globalunsubscribe`` renders the link that unsubscribes
    the recipient from every resource of the profile's database
    (``resource.globalunsubscribe_link``) and without a tracking domain falls back to the
    same static ``resource.unsubscribe_url``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from engine.core.links import find_urls, literal_urls
from engine.core.templates import runtime
from engine.core.templates.codegen import (
    PythonCompiler,
    RenderFunction,
    compile_marshalled,
    generate,
    load,
)
from engine.core.templates.functions import (
    BUILTIN_FUNCTIONS,
    FunctionSpec,
    context_function,
    function_spec,
)
from engine.core.templates.lexer import Source
from engine.core.templates.limits import DEFAULT_LIMITS, TemplateLimits
from engine.core.templates.nodes import Const, Expr, For, If, Node, Output, TextNode, Var
from engine.core.templates.parser import Parser
from engine.errors import TemplateError

__all__ = [
    "BUILTIN_FUNCTIONS",
    "DEFAULT_LIMITS",
    "KNOWN_ROOTS",
    "CheckReport",
    "PythonCompiler",
    "Template",
    "TemplateLimits",
    "check_template",
    "compile_marshalled",
    "compile_template",
    "context_function",
    "is_blank",
    "parse_expression",
    "refuse_blank",
]

KNOWN_ROOTS: Final = frozenset(
    {"lead", "subscription", "apicontent", "json", "mailing", "resource"}
)
"""The context roots the engine provides when rendering."""

_STANDARD_LEAD_FIELDS: Final = frozenset(
    "_fname _lname _bdate _sex _city _country _region _tz _id".split()
)
_BUILTIN_SPECS: Final = {name: function_spec(name, fn) for name, fn in BUILTIN_FUNCTIONS.items()}


class Template:
    """A compiled template.

    ``render(ctx)`` renders it for one message; ``ctx`` maps root names (``"lead"``,
    ``"subscription"``, ``"apicontent"``, ``"json"``, ``"mailing"``, ``"resource"``) to
    dicts, any of which may be missing. Rendering never raises: missing or odd data renders
    as ``""``.

    ``variables`` are the dotted context paths the template reads, ``roots`` their first
    names (build only those), ``urls`` the http(s) URLs in its literal text;
    ``closed_urls``, ``url_marks``, ``open_urls`` and ``prints_data`` describe them for link
    tracking (see the module docstring, *Metadata*). ``blank`` is
    True when it can only render whitespace, whatever the data (see :func:`refuse_blank`);
    ``never_blank`` when it can never render blank (it has literal text outside any tag),
    so the engine need not look at each message's text for it. ``escapes_html`` when its
    output tags' text is HTML-escaped (an email's HTML), so a URL from data has ``&amp;``
    for ``&``.
    """

    __slots__ = (
        "blank", "closed_urls", "escapes_html", "name", "never_blank", "open_urls",
        "prints_data", "python_source", "render", "roots", "source", "url_marks", "urls",
        "variables",
    )

    render: RenderFunction
    source: str
    name: str
    variables: frozenset[str]
    roots: frozenset[str]
    urls: tuple[str, ...]
    python_source: str
    blank: bool
    never_blank: bool
    closed_urls: tuple[str, ...]
    url_marks: int
    open_urls: bool
    prints_data: bool
    escapes_html: bool

    def __init__(
        self,
        *,
        render: RenderFunction,
        source: str,
        name: str,
        variables: frozenset[str],
        roots: frozenset[str],
        urls: tuple[str, ...],
        python_source: str,
        blank: bool = False,
        never_blank: bool = False,
        closed_urls: tuple[str, ...] = (),
        url_marks: int = 0,
        open_urls: bool = False,
        prints_data: bool = True,
        escapes_html: bool = False,
    ) -> None:
        self.escapes_html = escapes_html
        self.render = render
        self.source = source
        self.name = name
        self.variables = variables
        self.roots = roots
        self.urls = urls
        self.python_source = python_source
        self.blank = blank
        self.never_blank = never_blank
        self.closed_urls = closed_urls
        self.url_marks = url_marks
        self.open_urls = open_urls
        self.prints_data = prints_data

    def __repr__(self) -> str:
        return f"<Template {self.name} reads {sorted(self.variables)}>"


class CheckReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``herald template check`` reports about a template.

    ``errors`` holds the compile error, if any (a template stops at its first error);
    ``warnings`` are problems that do not stop compilation, such as a variable that cannot
    resolve, each starting with ``line:col``.
    """

    errors: list[TemplateError] = []
    variables: list[str] = []
    roots: list[str] = []
    urls: list[str] = []
    warnings: list[str] = []

    @property
    def ok(self) -> bool:
        """True when the template compiles."""
        return not self.errors


def _specs(functions: Mapping[str, Callable[..., Any]] | None) -> Mapping[str, FunctionSpec]:
    if not functions:
        return _BUILTIN_SPECS
    return _BUILTIN_SPECS | {name: function_spec(name, fn) for name, fn in functions.items()}


def _texts(nodes: tuple[Node, ...]) -> list[str]:
    found: list[str] = []
    for node in nodes:
        if isinstance(node, TextNode):
            found.append(node.value)
        elif isinstance(node, If):
            for _, body in node.branches:
                found += _texts(body)
            found += _texts(node.otherwise)
        elif isinstance(node, For):
            found += _texts(node.body)
    return found


class _Links:
    """What the literal text of a template holds for link tracking (see *Metadata*)."""

    def __init__(self, nodes: tuple[Node, ...]) -> None:
        self.closed: dict[str, None] = {}
        self.marks = 0
        self.open = False
        self.outputs = False
        self._walk(nodes, top=True)

    def _walk(self, nodes: tuple[Node, ...], top: bool) -> None:
        for i, node in enumerate(nodes):
            if isinstance(node, TextNode):
                text = node.value
                # at the template's very end nothing can continue a URL
                at_end = top and i == len(nodes) - 1
                in_urls = 0
                for start, end, runs_on in literal_urls(text):
                    url = text[start:end]
                    in_urls += url.count("://")
                    if runs_on and not at_end:
                        self.open = True
                    else:
                        self.closed[url] = None
                marks = text.count("://")
                if marks > in_urls:
                    self.open = True
                if top:
                    self.marks += marks
            elif isinstance(node, Output):
                self.outputs = True
            elif isinstance(node, If):
                for _, body in node.branches:
                    self._walk(body, False)
                self._walk(node.otherwise, False)
            elif isinstance(node, For):
                self._walk(node.body, False)


def is_blank(text: str) -> bool:
    """True when ``text`` is empty or only whitespace: not worth sending as an SMS."""
    return not text or text.isspace()


def _always_blank(nodes: tuple[Node, ...]) -> bool:
    """True when every path through ``nodes`` yields only whitespace."""
    for node in nodes:
        if isinstance(node, TextNode):
            if not is_blank(node.value):
                return False
        elif isinstance(node, Output):
            expr = node.expr
            if not (isinstance(expr, Const) and is_blank(runtime.render_value(expr.value))):
                return False
        elif isinstance(node, If):
            if not _always_blank(node.otherwise) or not all(
                _always_blank(body) for _, body in node.branches
            ):
                return False
        elif not _always_blank(node.body):
            return False
    return True


def refuse_blank(template: Template) -> Template:
    """``template``, or :class:`~engine.errors.TemplateError` at 1:1 when it is blank (every
    message would be empty): a sender calls this before anything is sent."""
    if template.blank:
        raise TemplateError(
            "every message would be empty: the template holds only whitespace and tags that"
            " output nothing", line=1, col=1,
        )
    return template


def _check_size(src: Source, limits: TemplateLimits) -> None:
    limit = limits.template_bytes
    if len(src.text) <= limit // 4:  # at most 4 UTF-8 bytes a character: no need to encode
        return
    data = src.text.encode("utf-8", "surrogatepass")
    if len(data) > limit:
        first_past = len(data[:limit].decode("utf-8", "ignore"))
        raise src.error(
            f"the template is {len(data)} bytes; [limits] template_bytes is {limit}", first_past
        )


def _compile(
    source: str,
    functions: Mapping[str, Callable[..., Any]] | None,
    name: str,
    limits: TemplateLimits | None,
    compiler: PythonCompiler | None = None,
    escape_html: bool = False,
) -> tuple[Template, list[Var], Source]:
    src = Source(source)
    if limits is not None:
        _check_size(src, limits)
    parser = Parser(src, _specs(functions), limits)
    try:
        nodes = parser.parse()
        python_source, constants = generate(nodes, parser.context_vars,
                                            escape_html=escape_html)
        render = load(python_source, constants, f"<template {name}>", compiler)
        urls: dict[str, None] = {}
        for text in _texts(nodes):
            for start, end in find_urls(text):
                urls[text[start:end]] = None
        links = _Links(nodes)
        blank = _always_blank(nodes)
        never_blank = any(isinstance(n, TextNode) and not is_blank(n.value) for n in nodes)
    except (SyntaxError, RecursionError, MemoryError, OverflowError) as exc:
        # Only reachable by pathological input the nesting bounds did not anticipate.
        raise TemplateError(f"template too complex to compile ({type(exc).__name__})") from exc
    template = Template(
        render=render,
        source=source,
        name=name,
        variables=frozenset(var.path for var in parser.context_vars),
        roots=frozenset(var.root for var in parser.context_vars),
        urls=tuple(urls),
        python_source=python_source,
        blank=blank,
        never_blank=never_blank,
        closed_urls=tuple(links.closed),
        url_marks=links.marks,
        open_urls=links.open,
        prints_data=links.outputs,
        escapes_html=escape_html,
    )
    return template, parser.context_vars, src


def compile_template(
    source: str,
    *,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    name: str = "<template>",
    limits: TemplateLimits | None = DEFAULT_LIMITS,
    compiler: PythonCompiler | None = None,
    escape_html: bool = False,
) -> Template:
    """Compile template ``source``; raise :class:`~engine.errors.TemplateError` if it does
    not parse or goes past ``limits``.

    ``functions`` adds template functions (from the ``herald_template_functions`` hook) to
    :data:`BUILTIN_FUNCTIONS`, overriding built-ins of the same name. ``name`` appears in
    tracebacks and ``repr``. ``limits`` defaults to those of ``[limits]``; pass
    ``TemplateLimits.of(config.limits)`` for a workspace's, or ``None`` for no bounds but
    the fixed nesting ones. Time and memory are linear in ``len(source)`` either way; this
    is CPU work, so an event loop should run it in a worker thread; ``compiler`` turns the
    generated Python source into code (``compile`` by default), for a caller that would
    rather do that in another process (see :func:`compile_marshalled`).

    ``escape_html`` is for an email's HTML: each output tag's text is escaped (``&``,
    ``<``, ``>`` and quotes as references), so data never writes markup, except a tag
    whose outermost call is ``raw`` (``{raw(json.banner)}``). Literal text is as written.
    """
    return _compile(source, functions, name, limits, compiler, escape_html)[0]


def _warnings(variables: list[Var], src: Source) -> list[str]:
    warnings: list[str] = []
    seen: set[str] = set()
    known = ", ".join(sorted(KNOWN_ROOTS))
    for var in variables:
        if var.path in seen:
            continue
        seen.add(var.path)
        line, col, _ = src.location(var.pos)
        where = f"{line}:{col}"
        if var.root == "loop":
            warnings.append(
                f"{where}: cannot resolve {var.path!r}: loop.* exists only inside {{for}}"
            )
        elif var.root not in KNOWN_ROOTS:
            warnings.append(
                f"{where}: cannot resolve {var.path!r}: {var.root!r} is neither a loop "
                f"variable nor a known root ({known})"
            )
        elif var.root == "lead" and var.segments and f"_{var.segments[0]}" in _STANDARD_LEAD_FIELDS:
            standard = f"lead._{var.segments[0]}"
            warnings.append(
                f"{where}: {var.path!r} reads a custom field; the standard field is {standard!r}"
            )
    return warnings


def check_template(
    source: str,
    *,
    functions: Mapping[str, Callable[..., Any]] | None = None,
    limits: TemplateLimits | None = DEFAULT_LIMITS,
) -> CheckReport:
    """Compile ``source`` and report its error (if any), variables and warnings. A blank
    template (see :func:`refuse_blank`) is an error; ``limits`` as for
    :func:`compile_template`."""
    try:
        template, variables, src = _compile(source, functions, "<check>", limits)
        refuse_blank(template)
    except TemplateError as exc:
        return CheckReport(errors=[exc])
    return CheckReport(
        variables=sorted(template.variables),
        roots=sorted(template.roots),
        urls=list(template.urls),
        warnings=_warnings(variables, src),
    )


def parse_expression(
    source: str, *, functions: Mapping[str, Callable[..., Any]] | None = None
) -> Expr:
    """Parse ``source`` as one expression in the syntax of ``{if ...}``, without braces
    (``lead._city equal "Paris" and lead.age greater 18``); raise
    :class:`~engine.errors.TemplateError` with ``line:col`` if it does not parse.

    ``functions`` are added to the built-ins as for :func:`compile_template`. Paths are not
    checked against :data:`KNOWN_ROOTS`: the caller decides which roots it accepts.
    """
    return Parser(Source(source), _specs(functions)).parse_expression()
