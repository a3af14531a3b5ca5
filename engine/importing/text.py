"""CSV and TXT files: the encoding and the delimiter come from a sample, rows are streamed.

Encoding, unless given: a byte order mark decides (UTF-8 or UTF-16); otherwise the first
256 KiB are read as UTF-8 and, when they are not UTF-8, as cp1251 (the usual encoding of
Russian Excel exports). cp1251 decodes almost any bytes, so it is taken only when the sample
reads as Cyrillic words: a Latin-1 file read as cp1251 mixes the scripts within words
("Mьller") and stray bytes seldom spell a word, and both are refused with the line of the
first byte that is not UTF-8. A byte that does not decode further on rejects its record,
not the file.

Delimiter: ``,`` ``;`` tab or ``|``, whichever splits the header into columns that the most
rows of the sample agree with; ``csv.Sniffer``'s guess breaks ties. A header that no
candidate splits is a single-column file.

Quotes: a quoted field may hold line breaks, but then it must end as RFC 4180 says, with a
quote followed by a delimiter, a line break or the end of the file. One that does not (a
quote left open, or closed by a quote followed by more text) is rejected as ``unclosed
quote`` on the line where that field began, and reading starts again at the next line, so a
stray quote costs its own record, not the rows after it. A quoted field within one line is
read leniently, as ``csv`` does: ``"ab"c`` is ``abc``.

Blank lines between records are skipped a block at a time, never handed to ``csv``: a
million of them cost what a few megabytes of reading costs.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Generator, Iterator
from typing import IO, TYPE_CHECKING

from engine.errors import InputError
from engine.importing.rows import Row

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["DELIMITERS", "detect_encoding", "read_text", "sniff_delimiter"]

DELIMITERS = ",;\t|"
#: Bytes read to choose the encoding.
SAMPLE = 256 * 1024
#: Lines (and at most this many characters) looked at to choose the delimiter.
SNIFF_LINES = 50
SNIFF_CHARS = 16 * 1024
#: Bytes without a line break that are not CSV: stop before they are held in memory.
MAX_LINE = 1024 * 1024

_WORD = re.compile(r"[^\W\d_]+")
_VOWELS = frozenset("аеёиоуыэюяіїєАЕЁИОУЫЭЮЯІЇЄ")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_BLANKS = re.compile(r"[\r\n]+")
#: Characters read from the decoded stream at a time.
_BLOCK = 1 << 16
_QUOTE_SCAN = {d: re.compile(r'"|\r\n|\r|\n|' + re.escape(d)) for d in DELIMITERS}
# Where _unclosed_quote is: a field's start, an unquoted field, a quoted one, just after a
# quote in a quoted field (closed, unless another quote follows).
_START, _UNQUOTED, _QUOTED, _CLOSING = range(4)


def read_text(
    raw: IO[bytes], name: str, encoding: str | None = None
) -> Generator[Row, None, None]:
    """The records of a delimited text file, each with the line it starts on.

    ``name`` is how errors refer to the file; ``encoding`` (a Python codec name) skips the
    detection. ``raw`` is read once, front to back, and left open.
    """
    sample = _read_up_to(raw, SAMPLE)
    complete = len(sample) < SAMPLE
    if encoding is None:
        encoding = detect_encoding(sample, complete=complete, name=name)
    else:
        encoding = _codec(encoding)
    label = {"utf-8-sig": "UTF-8", "utf-16": "UTF-16"}.get(encoding, encoding)
    head = sample[: SNIFF_CHARS * 4]
    final = complete and len(head) == len(sample)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=final)
    delimiter = sniff_delimiter(text[:SNIFF_CHARS], complete=final and len(text) <= SNIFF_CHARS)
    source = _Rejoined(sample, raw)
    stream = io.TextIOWrapper(
        io.BufferedReader(source, 1 << 16),
        encoding=encoding,
        errors="surrogateescape",  # undecodable bytes reject their record, found below
        newline="",
    )
    lines = _Lines(stream)
    reader = csv.reader(lines, delimiter=delimiter)
    done = 0  # lines before the record being read
    while True:
        lines.taken.clear()
        lines.blank = 0
        error: csv.Error | None = None
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # a NUL byte, a field over the size limit: that record
            done += lines.blank
            start = done + 1
            if not lines.taken:
                raise InputError(f"{name}:{start}: {err}") from err
            cells, error = [], err
        except UnicodeDecodeError as err:  # a codec surrogateescape cannot cover (UTF-16)
            line = done + lines.blank + len(lines.taken) + 1
            raise InputError(f"{name}:{line}: not {label} text ({err.reason})") from err
        except _LineTooLong as err:
            line = done + lines.blank + len(lines.taken) + 1
            raise InputError(
                f"{name}:{line}: a line longer than {MAX_LINE} bytes; is this a CSV file?"
            ) from err
        else:
            done += lines.blank
            start = done + 1
        taken = lines.taken
        suspect = len(taken) > 1 or lines.ended  # a record past its line, or to the end
        if suspect and (opened := _unclosed_quote(taken, delimiter)) is not None:
            yield start + opened, "unclosed quote"
            lines.again(taken[opened + 1 :])  # read again what the open quote swallowed
            done += opened + 1
            continue
        done += len(taken)
        if error is not None:
            yield start, f"unreadable record ({error})"
            continue
        if not "".join(cells).isascii():
            byte = _undecodable(cells)
            if byte is not None:
                yield start, f"not {label} text (byte 0x{byte:02X}); give the file's encoding"
                continue
        yield start, cells


def detect_encoding(sample: bytes, *, complete: bool, name: str) -> str:
    """The codec to read a file starting with ``sample`` with (the whole file if
    ``complete``); InputError when it is neither UTF-8 nor plausible cp1251."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Excel's "Unicode text"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
    except UnicodeDecodeError as err:
        if _looks_cp1251(sample):
            return "cp1251"
        line = sample.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"{name}:{line}: not UTF-8 text (byte 0x{sample[err.start]:02X}) nor Cyrillic"
            " cp1251; save it as UTF-8 or give its encoding"
        ) from err
    return "utf-8-sig"  # strips a BOM if there is one


def sniff_delimiter(sample: str, *, complete: bool = True) -> str:
    """The delimiter of the text starting with ``sample`` (all of it if ``complete``)."""
    lines = _NEWLINE.split(sample)
    if not complete:
        lines.pop()  # cut short
    lines = lines[:SNIFF_LINES]
    try:
        favourite = csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        favourite = ","
    best, best_score = ",", (0, 0, False)
    for delimiter in DELIMITERS:
        try:
            rows = [r for r in csv.reader(lines, delimiter=delimiter) if r]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        score = (sum(len(r) == width for r in rows), width, delimiter == favourite)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _looks_cp1251(sample: bytes) -> bool:
    try:
        text = sample.decode("cp1251")
    except UnicodeDecodeError:  # 0x98 is not cp1251
        return False
    words = False
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        if not all("\u0400" <= ch <= "\u04ff" for ch in word):
            return False  # Latin and Cyrillic in one word: another 8-bit encoding
        vowels = sum(ch in _VOWELS for ch in word)
        words = words or 0 < vowels < len(word)
    return words


def _codec(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError as err:
        raise InputError(f"unknown encoding {encoding!r}") from err
    return "utf-8-sig" if name == "utf-8" else name


def _undecodable(cells: list[str]) -> int | None:
    """The first byte surrogateescape kept in ``cells``, if any."""
    for cell in cells:
        if not cell.isascii():
            try:
                cell.encode("utf-8")
            except UnicodeEncodeError as err:
                return ord(cell[err.start]) - 0xDC00
    return None


def _read_up_to(raw: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0 and (part := raw.read(size)):
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _unclosed_quote(lines: list[str], delimiter: str) -> int | None:
    """Which of ``lines`` (one record, as the lenient reader took it) holds the start of a
    quoted field that runs past its line and does not end as RFC 4180 says, if one does:
    its quote is never closed, or closed by a quote followed by more text."""
    text = "".join(lines)
    state, line, opened = _START, 0, 0  # opened: the line of the quoted field being read
    done = 0  # end of the last token; text lies between it and the next
    for m in _QUOTE_SCAN[delimiter].finditer(text):
        if m.start() > done:  # text
            if state == _CLOSING:
                if opened < line:
                    return opened
                state = _UNQUOTED  # "ab"c on one line is read leniently, as abc
            elif state == _START:
                state = _UNQUOTED
        done = m.end()
        token = m.group()
        if token == '"':
            if state == _START:
                state, opened = _QUOTED, line
            elif state == _QUOTED:
                state = _CLOSING
            elif state == _CLOSING:
                state = _QUOTED  # a doubled quote stands for one
        else:  # a delimiter or a line break
            if token != delimiter:
                line += 1
            if state != _QUOTED:
                state = _START
    if state == _CLOSING and done < len(text) and opened < line:
        return opened
    return opened if state == _QUOTED else None


class _Lines(Iterator[str]):
    """The stream's lines for ``csv.reader``, keeping those of the record being read
    (``taken``, cleared by the caller) so that some can be read ``again``.

    Blank lines before a record (none taken yet) are counted in ``blank`` (reset by the
    caller) and skipped a block at a time: within a record they may be a quoted field's.
    Lines end as with ``newline=""``: ``\r\n``, ``\r`` or ``\n``, kept on the line.
    """

    def __init__(self, stream: io.TextIOWrapper) -> None:
        self.taken: list[str] = []
        self.blank = 0
        #: True once the stream ran out: a record read then may have ended in a quote.
        self.ended = False
        self._again: list[str] = []  # reversed
        self._read = stream.read
        self._text = ""
        self._at = 0  # where the next line starts in _text
        self._eof = False

    def __next__(self) -> str:
        if self._again:
            line = self._again.pop()
        else:
            if not self.taken:
                self._skip_blank()
            line = self._line()
        self.taken.append(line)
        return line

    def again(self, lines: list[str]) -> None:
        self._again.extend(reversed(lines))

    def _more(self) -> bool:
        """Read another block onto what is left; False at the end of the stream."""
        if self._eof:
            return False
        block = self._read(_BLOCK)
        self._text = self._text[self._at :] + block
        self._at = 0
        self._eof = not block
        return bool(block)

    def _skip_blank(self) -> None:
        while True:
            m = _BLANKS.match(self._text, self._at)
            if m is None:
                if self._at < len(self._text) or not self._more():
                    return
                continue
            run = m.group()
            end = m.end()
            if end == len(self._text) and run.endswith("\r") and not self._eof:
                run, end = run[:-1], end - 1  # a \r\n may be cut in two: keep the \r
            self.blank += run.count("\n") + run.count("\r") - run.count("\r\n")
            self._at = end
            if end < len(self._text):
                return
            if not self._more() and self._at >= len(self._text):
                return

    def _line(self) -> str:
        while True:
            m = _NEWLINE.search(self._text, self._at)
            if m is not None and not (
                m.end() == len(self._text) and m.group() == "\r" and not self._eof
            ):
                line = self._text[self._at : m.end()]
                self._at = m.end()
                return line
            if not self._more():
                break
        if self._at < len(self._text):
            line = self._text[self._at :]
            self._at = len(self._text)
            return line
        self.ended = True
        raise StopIteration


class _LineTooLong(Exception):
    pass


class _Rejoined(io.RawIOBase):
    """The sample, then the rest of the stream: the sample put back without seeking.

    Raises _LineTooLong past ``MAX_LINE`` bytes without a line break, before a reader
    holds such a line in memory.
    """

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest
        self._run = 0  # bytes since the last line break

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(out), len(self._head))
            out[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._rest.read(len(out))
            n = len(data)
            out[:n] = data
        chunk = out[:n].tobytes()
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        self._run = n - end - 1 if end >= 0 else self._run + n
        if self._run > MAX_LINE:
            raise _LineTooLong
        return n
