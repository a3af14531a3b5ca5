"""Split template source into literal text and tags, and tags into tokens.

A tag starts at ``{`` immediately followed by an ASCII letter or ``_`` and ends at the next ``}``
outside a string. Outside tags, ``\\{`` is a literal ``{`` and ``\\\\`` a literal ``\\``; any other
backslash is printed as written.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Literal

from engine.errors import TemplateError

__all__ = ["KEYWORDS", "Source", "Tag", "Text", "Token", "scan"]

KEYWORDS = frozenset(
    "if elif else end for in not and or equal greater less contains true false".split()
)
"""Words a tag reserves: they cannot name a context root, a loop variable or a function."""

TokenKind = Literal["name", "segment", "int", "float", "string", "op", "punct", "end"]

_TAG_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_TEXT_SPECIAL = re.compile(r"[{\\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_]+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_WHITESPACE = frozenset(" \t\r\n")
_OPERATORS = ("==", "!=", ">=", "<=", ">", "<")
_PUNCTUATION = frozenset(".,()[]")
_MAX_NUMBER_LENGTH = 100  # keeps int() within its digit limit and floats finite


class Source:
    """Template text plus what is needed to point at a position in it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def location(self, pos: int) -> tuple[int, int, str]:
        """1-based line and column of offset ``pos``, and the text of that line."""
        line = bisect.bisect_right(self._line_starts, pos)
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        line_text = self.text[start : end if end >= 0 else len(self.text)]
        return line, pos - start + 1, line_text.rstrip("\r")

    def error(self, message: str, pos: int) -> TemplateError:
        """A :class:`TemplateError` pointing at offset ``pos``."""
        line, col, source_line = self.location(pos)
        return TemplateError(message, line=line, col=col, source_line=source_line)


@dataclass(frozen=True, slots=True)
class Token:
    """One token of a tag. ``pos`` is the offset of its first character in the source."""

    kind: TokenKind
    value: str | int | float
    pos: int

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind == "end":
            return "end of tag"
        if self.kind == "string":
            return "a string"
        return repr(str(self.value))


@dataclass(frozen=True, slots=True)
class Text:
    """Literal text (escapes already applied)."""

    value: str
    pos: int


@dataclass(frozen=True, slots=True)
class Tag:
    """A tag: its tokens, the last one of kind ``"end"`` at the closing ``}``."""

    tokens: list[Token]
    pos: int


def scan(source: Source) -> list[Text | Tag]:
    """Split the source into text and tags; raise TemplateError for malformed tags."""
    text = source.text
    n = len(text)
    chunks: list[Text | Tag] = []
    buffer: list[str] = []
    buffer_pos = 0
    i = 0
    while i < n:
        match = _TEXT_SPECIAL.search(text, i)
        j = match.start() if match else n
        if j > i:
            if not buffer:
                buffer_pos = i
            buffer.append(text[i:j])
        if j == n:
            break
        if not buffer:
            buffer_pos = j
        following = text[j + 1 : j + 2]
        if text[j] == "\\":
            if following in ("{", "\\") and following:
                buffer.append(following)
                i = j + 2
            else:
                buffer.append("\\")
                i = j + 1
        elif following and following in _TAG_START:
            if buffer:
                chunks.append(Text("".join(buffer), buffer_pos))
                buffer = []
            end = _find_tag_end(source, j)
            chunks.append(Tag(_tokenize(source, j + 1, end), j))
            i = end + 1
        else:
            buffer.append("{")
            i = j + 1
    if buffer:
        chunks.append(Text("".join(buffer), buffer_pos))
    return chunks


def _find_tag_end(source: Source, start: int) -> int:
    """Offset of the ``}`` closing the tag that opens at ``start``."""
    text = source.text
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "}":
            return i
        if ch == "{":
            break
        if ch == '"':
            i = _string_end(source, i) + 1
            continue
        i += 1
    raise source.error("unclosed tag: '{' has no matching '}'", start)


def _string_end(source: Source, start: int) -> int:
    """Offset of the quote closing the string that opens at ``start``."""
    text = source.text
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return i
        if ch == "\n" or (ch == "\\" and text[i + 1 : i + 2] == "\n"):
            break
        i += 2 if ch == "\\" else 1
    raise source.error("unterminated string (strings end on the line they start)", start)


def _tokenize(source: Source, start: int, end: int) -> list[Token]:
    text = source.text
    tokens: list[Token] = []
    i = start
    while i < end:
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
            continue
        after_dot = bool(tokens) and tokens[-1].kind == "punct" and tokens[-1].value == "."
        if after_dot and (m := _SEGMENT.match(text, i, end)):
            word = m.group()
            if word.isdigit() and len(word) > _MAX_NUMBER_LENGTH:
                raise source.error(f"index too long (at most {_MAX_NUMBER_LENGTH} digits)", i)
            tokens.append(Token("int" if word.isdigit() else "segment", word, i))
            i = m.end()
        elif m := _NAME.match(text, i, end):
            tokens.append(Token("name", m.group(), i))
            i = m.end()
        elif m := _NUMBER.match(text, i, end):
            word = m.group()
            if len(word) > _MAX_NUMBER_LENGTH:
                raise source.error(f"number too long (at most {_MAX_NUMBER_LENGTH} characters)", i)
            value: int | float = float(word) if m.group(1) else int(word)
            tokens.append(Token("float" if m.group(1) else "int", value, i))
            i = m.end()
        elif ch == '"':
            close = _string_end(source, i)
            tokens.append(Token("string", _unescape(source, i + 1, close), i))
            i = close + 1
        elif op := next((o for o in _OPERATORS if text.startswith(o, i)), None):
            tokens.append(Token("op", op, i))
            i += len(op)
        elif ch in _PUNCTUATION:
            tokens.append(Token("punct", ch, i))
            i += 1
        elif ch == "=":
            raise source.error("unexpected '='; compare with '==' or 'equal'", i)
        else:
            raise source.error(f"unexpected character {ch!r} in tag", i)
    tokens.append(Token("end", "}", end))
    return tokens


def _unescape(source: Source, start: int, end: int) -> str:
    text = source.text
    if "\\" not in text[start:end]:
        return text[start:end]
    out: list[str] = []
    i = start
    while i < end:
        ch = text[i]
        if ch == "\\":
            escaped = text[i + 1] if i + 1 < end else ""
            if escaped not in ('"', "\\") or not escaped:
                raise source.error(
                    f"bad string escape '\\{escaped}' (only \\\" and \\\\ are allowed)", i
                )
            out.append(escaped)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)
