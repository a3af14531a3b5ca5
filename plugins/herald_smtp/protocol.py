"""The SMTP client's protocol, without I/O (RFC 5321, with RFC 2920 PIPELINING).

- :class:`ReplyParser` turns the server's bytes into :class:`Reply` objects: multi-line
  replies (``250-...`` lines up to the ``250 ...`` one), the enhanced status code
  (RFC 3463, ``5.1.1``) when the text starts with one. Bytes that are not SMTP replies
  raise :class:`SmtpProtocolError` (an ``InputError``) saying which line and why.
- :class:`Extensions` is what an EHLO reply offers (PIPELINING, STARTTLS, 8BITMIME,
  SMTPUTF8, SIZE, AUTH mechanisms, CHUNKING).
- Commands are written by :func:`command`, :func:`mail_from` and :func:`rcpt_to`;
  :func:`data_payload` dot-stuffs a message and ends it with ``CRLF . CRLF``.
- :class:`Transactions` is the state machine of the mail transactions of one session:
  feed it envelopes (:meth:`~Transactions.add`), write what :meth:`~Transactions.data_to_send`
  gives, hand it each reply (:meth:`~Transactions.receive`) and read each envelope's
  :class:`Outcome`. With PIPELINING, ``MAIL FROM``, ``RCPT TO`` and ``DATA`` go in one
  write, and a message's content goes with the next message's three commands (RFC 2920
  3.1 lets the content start a group): one round trip per message. Without it, one
  command per round trip. A transaction that failed after ``MAIL`` was taken is ended by
  ``RSET`` before the next one; a ``354`` for a transaction without an accepted recipient
  is answered by an empty message (RFC 2920 3.1).
"""

from __future__ import annotations

import base64
import re
from collections import deque
from typing import Final, Literal, NamedTuple

from engine.errors import InputError

__all__ = [
    "MAX_LINE",
    "Envelope",
    "Extensions",
    "Outcome",
    "Reply",
    "ReplyParser",
    "SmtpProtocolError",
    "Transactions",
    "auth_plain",
    "classify",
    "command",
    "data_payload",
    "mail_from",
    "normalise_line_ends",
    "queue_id",
    "rcpt_to",
]

#: Octets a reply line may hold before the parser gives up (RFC 5321 says 512; servers
#: write longer EHLO and error lines, never this long).
MAX_LINE: Final = 4096
#: Lines one reply may hold.
MAX_LINES: Final = 512
#: Replies that say "not now, and slow down": the whole sender waits.
THROTTLING: Final = frozenset({421, 451, 452})

_ENHANCED: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?= |$)")
_QUEUE_ID: Final = (
    re.compile(r"queued as ([^\s;,]+)", re.I),           # Postfix, Haraka
    re.compile(r"\bid=([^\s;,]+)", re.I),                 # Exim
    re.compile(r"^(?:ok|queued)\s+([0-9A-Za-z][0-9A-Za-z._-]{9,})", re.I),  # Amazon SES
    re.compile(r"^([0-9A-Za-z]{10,}) (?:message accepted|accepted)", re.I),  # Sendmail
    re.compile(r"^<([^<>\s]+)>"),                          # Exchange: <message-id>
)
_BAD_IN_ADDRESS: Final = re.compile(r"[\x00-\x1f\x7f<>]")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class SmtpProtocolError(InputError):
    """The server's bytes are not SMTP, or the client was asked to write something that
    is not (an address with a line break in it)."""


class Reply(NamedTuple):
    """One SMTP reply: ``code``, ``enhanced`` status (``"5.1.1"``, or ""), and its lines'
    text (the enhanced code kept). ``str(reply)`` is ``"550 5.1.1 user unknown"``, the
    lines joined by spaces."""

    code: int
    enhanced: str
    lines: tuple[str, ...]

    def __str__(self) -> str:
        text = " ".join(line for line in self.lines if line)
        return f"{self.code} {text}" if text else str(self.code)

    @property
    def text(self) -> str:
        """The text of the first line, without the enhanced status code."""
        first = self.lines[0] if self.lines else ""
        return first[len(self.enhanced):].lstrip() if self.enhanced else first


class ReplyParser:
    """Cuts the server's bytes into replies. ``feed`` returns the replies completed."""

    def __init__(self) -> None:
        self._buffer = b""
        self._code = 0
        self._lines: list[str] = []
        #: Lines read so far (for errors: "line 3 of the server's replies").
        self.line_number = 0

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished reply are waiting (what came after the last reply)."""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> list[Reply]:
        buffer = self._buffer + data if self._buffer else data
        replies: list[Reply] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)
        rest = buffer[start:]
        if len(rest) > MAX_LINE:
            self.line_number += 1
            raise SmtpProtocolError(
                f"the server's reply line {self.line_number}: longer than {MAX_LINE} octets"
                f" without a line end ({_show(rest[:40])}...)")
        self._buffer = rest
        return replies

    def _line(self, line: bytes) -> Reply | None:
        self.line_number += 1
        where = f"the server's reply line {self.line_number}"
        if len(line) > MAX_LINE:
            raise SmtpProtocolError(f"{where}: longer than {MAX_LINE} octets")
        if len(line) < 3 or not line[:3].isdigit() or line[0] not in b"2345" or (
            len(line) > 3 and line[3] not in b" -"
        ):
            raise SmtpProtocolError(
                f"{where}: {_show(line)}: expected a 3-digit code from 200 to 599, then a"
                " space, a hyphen or the line end")
        code = int(line[:3])
        if self._lines and code != self._code:
            raise SmtpProtocolError(
                f"{where}: {_show(line)}: code {code} inside a reply of code {self._code}")
        if len(self._lines) >= MAX_LINES:
            raise SmtpProtocolError(f"{where}: a reply of more than {MAX_LINES} lines")
        self._code = code
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(line) > 3 and line[3] == 0x2D:  # "-": more lines follow
            return None
        lines, self._lines = tuple(self._lines), []
        enhanced = _ENHANCED.match(lines[0])
        if enhanced is not None and enhanced[1] != str(code)[0]:
            enhanced = None  # "250 5.0.0": not a status code of this reply
        return Reply(code, enhanced[0] if enhanced else "", lines)


def _show(data: bytes) -> str:
    return repr(data[:80])[1:] if len(data) <= 80 else repr(data[:80])[1:] + "..."


class Extensions(NamedTuple):
    """What the server's EHLO reply offers."""

    pipelining: bool = False
    starttls: bool = False
    eightbitmime: bool = False
    smtputf8: bool = False
    chunking: bool = False
    #: The largest message the server takes, in octets (0: no limit said).
    size: int = 0
    #: AUTH mechanisms, upper case.
    auth: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, reply: Reply) -> Extensions:
        """The extensions of an EHLO reply (its first line is the server's name)."""
        found: dict[str, list[str]] = {}
        for line in reply.lines[1:]:
            words = line.split()
            if not words:
                continue
            keyword = words[0].upper()
            if keyword.startswith("AUTH="):  # the old Microsoft spelling of AUTH
                found.setdefault("AUTH", []).extend(
                    w.upper() for w in [keyword[5:], *words[1:]] if w)
                continue
            found.setdefault(keyword, []).extend(w.upper() for w in words[1:])
        size = 0
        for value in found.get("SIZE", [])[:1]:
            size = int(value) if value.isdigit() else 0
        return cls(
            pipelining="PIPELINING" in found,
            starttls="STARTTLS" in found,
            eightbitmime="8BITMIME" in found,
            smtputf8="SMTPUTF8" in found,
            chunking="CHUNKING" in found,
            size=size,
            auth=frozenset(found.get("AUTH", ())),
        )


def command(verb: str, argument: str = "") -> bytes:
    """One command line: ``VERB argument CRLF``. SmtpProtocolError when the argument holds
    a line break or another control character."""
    if _CONTROL.search(argument):
        raise SmtpProtocolError(f"{verb}: {argument!r}: control characters in a command")
    line = f"{verb} {argument}\r\n" if argument else f"{verb}\r\n"
    return line.encode("utf-8")


def _address(what: str, address: str) -> str:
    if _BAD_IN_ADDRESS.search(address):
        raise SmtpProtocolError(f"{what}: {address!r}: an address with a line break, a"
                                " control character or angle brackets")
    return address


def mail_from(sender: str, *, params: str = "") -> bytes:
    """``MAIL FROM:<sender> params``; ``sender`` "" is the null return path (a bounce)."""
    line = f"MAIL FROM:<{_address('sender', sender)}>"
    return f"{line} {params}\r\n".encode() if params else f"{line}\r\n".encode()


def rcpt_to(recipient: str) -> bytes:
    """``RCPT TO:<recipient>``."""
    if not recipient:
        raise SmtpProtocolError("to: an empty recipient")
    return f"RCPT TO:<{_address('to', recipient)}>\r\n".encode()


def auth_plain(username: str, password: str) -> bytes:
    """``AUTH PLAIN`` with the initial response (RFC 4616: authorise as ``username``)."""
    token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode())
    return b"AUTH PLAIN " + token + b"\r\n"


def normalise_line_ends(message: bytes) -> bytes:
    """``message`` with every line end CRLF (a bare LF or CR would let a line that is only
    ``.`` end the DATA early on some servers: SMTP smuggling). Unchanged when it is so."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf:
        return message
    return re.sub(rb"\r\n|\r|\n", b"\r\n", message)


def data_payload(message: bytes) -> bytes:
    """The DATA content of ``message`` (CRLF line ends): a line starting with ``.`` gets
    another one (RFC 5321 4.5.2), and ``CRLF . CRLF`` ends it."""
    if message.startswith(b"."):
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\r\n.", b"\r\n..")
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


def queue_id(text: str) -> str | None:
    """The server's id of a message it took, from the text of its 250 after DATA
    (``Ok: queued as 4XyZ``, ``OK id=1qAb-00``, ...); None when the text gives none."""
    for pattern in _QUEUE_ID:
        found = pattern.search(text)
        if found is not None:
            return found[1]
    return None


OutcomeKind = Literal["accepted", "rejected", "retry", "throttled", "unsent", "unknown"]


class Outcome(NamedTuple):
    """What became of one envelope. ``accepted``: the server took it (after DATA);
    ``rejected``: a 5xx; ``retry``: a 4xx; ``throttled``: 421, 451 or 452 (retry, and slow
    down); ``unsent``: it never left (the session ended first: its content was not
    written); ``unknown``: its content was written and no answer came. ``reply`` is the
    server's (None for the last two, and for ones the client refused itself)."""

    kind: OutcomeKind
    reply: Reply | None
    #: The command the reply answered: "MAIL", "RCPT", "DATA" or "." (the content).
    step: str


def classify(reply: Reply, step: str) -> Outcome:
    """What a failed reply to ``step`` means for its message (2xx: accepted)."""
    code = reply.code
    if code < 300:
        return Outcome("accepted", reply, step)
    if code in THROTTLING:
        return Outcome("throttled", reply, step)
    if code < 500:
        return Outcome("retry", reply, step)
    return Outcome("rejected", reply, step)


class Envelope(NamedTuple):
    """One message to send: the return path, the recipient, ``MAIL`` parameters
    (``BODY=8BITMIME``, ``SIZE=``...) and the DATA content from :func:`data_payload`."""

    sender: str
    to: str
    payload: bytes
    params: str = ""


_Step = Literal["MAIL", "RCPT", "DATA", ".", "void", "RSET"]


class Transactions:
    """The mail transactions of one session (see the module docstring).

    Envelopes are numbered from 0 in the order they are added; ``outcomes[i]`` is None
    until the server answered for envelope ``i`` for good. After a ``421`` the server is
    closing: ``closing`` turns True, every later envelope is ``unsent`` and nothing more is
    to be written. ``abandon`` settles what is left when the session ends otherwise (lost,
    timed out): ``unknown`` for an envelope whose content was handed out, ``unsent`` for
    the others.
    """

    def __init__(self, *, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.envelopes: list[Envelope] = []
        self.outcomes: list[Outcome | None] = []
        self.closing = False
        self.closing_reply: Reply | None = None
        self._waiting: deque[int] = deque()
        self._queue: deque[tuple[_Step, int, bytes]] = deque()
        self._expected: deque[tuple[_Step, int]] = deque()
        #: The envelope whose MAIL, RCPT and DATA are out (until DATA's reply).
        self._current: int | None = None
        self._mail_ok = False
        self._rcpt_ok = False
        self._content_out: set[int] = set()

    @property
    def waiting(self) -> int:
        """Envelopes added whose transaction has not started."""
        return len(self._waiting)

    @property
    def expecting(self) -> int:
        """Replies the server owes for what was handed out."""
        return len(self._expected)

    @property
    def done(self) -> bool:
        """Nothing to write, nothing owed, nothing waiting (or the server is closing)."""
        if self.closing:
            return True
        return not (self._queue or self._expected or self._waiting)

    def add(self, envelope: Envelope) -> int:
        """Queue ``envelope``; its number."""
        i = len(self.envelopes)
        self.envelopes.append(envelope)
        self.outcomes.append(None)
        if self.closing:
            self.outcomes[i] = Outcome("unsent", None, "MAIL")
            return i
        self._waiting.append(i)
        if self._current is None:
            self._start_next()
        return i

    def settle(self, i: int, outcome: Outcome) -> None:
        """Record an outcome the client decided itself (the message is too big...)."""
        self.outcomes[i] = outcome

    def data_to_send(self) -> bytes:
        """What to write now (b"" when the next thing to do is wait for a reply)."""
        queue, expected = self._queue, self._expected
        out: list[bytes] = []
        while queue and not self.closing:
            if expected and not self.pipelining:
                break
            step, i, data = queue.popleft()
            out.append(data)
            expected.append((step, i))
            if step in (".", "void"):
                self._content_out.add(i)
            if step == "DATA":  # the content waits for 354; a group ends with DATA
                break
        return b"".join(out)

    def receive(self, reply: Reply) -> None:
        """Take the next reply. SmtpProtocolError when nothing was owed or the reply
        makes no sense where it came (a 354 to RCPT)."""
        if not self._expected:
            raise SmtpProtocolError(f"the server answered {str(reply)[:80]!r} to nothing")
        step, i = self._expected.popleft()
        code = reply.code
        if code == 421:
            self._close(reply, step, i)
            return
        if step == "MAIL":
            self._mail_ok = code < 300
            self._rcpt_ok = False
            if code >= 300:
                self._fail(i, classify(reply, step))
        elif step == "RCPT":
            self._rcpt_ok = code < 300
            if code >= 300 and self._mail_ok:
                self._fail(i, classify(reply, step))
        elif step == "DATA":
            self._data(i, reply)
        elif step == ".":
            if code == 354 or 300 <= code < 400:
                raise SmtpProtocolError(f"the server answered {str(reply)[:80]!r} to the"
                                        " end of a message")
            self.outcomes[i] = classify(reply, step)
        # "void" (the empty content after a 354 without a recipient) and RSET: nothing

    def abandon(self) -> None:
        """The session ended: settle every envelope without an outcome."""
        for i, outcome in enumerate(self.outcomes):
            if outcome is None:
                kind: OutcomeKind = "unknown" if i in self._content_out else "unsent"
                self.outcomes[i] = Outcome(kind, None, "." if kind == "unknown" else "MAIL")
        self._queue.clear()
        self._expected.clear()
        self._waiting.clear()

    # -- internals -----------------------------------------------------------------------

    def _fail(self, i: int, outcome: Outcome) -> None:
        if self.outcomes[i] is None:
            self.outcomes[i] = outcome

    def _data(self, i: int, reply: Reply) -> None:
        code = reply.code
        if code == 354:
            if self._mail_ok and self._rcpt_ok:
                self._queue.append((".", i, self.envelopes[i].payload))
            else:  # 354 with no recipient taken (RFC 2920 3.1): send an empty message
                self._queue.append(("void", i, b".\r\n"))
                if self.outcomes[i] is None:
                    self.outcomes[i] = Outcome("rejected", reply, "RCPT")
        elif 300 <= code < 400 or code < 300:
            raise SmtpProtocolError(f"the server answered {str(reply)[:80]!r} to DATA")
        else:
            self._fail(i, classify(reply, "DATA"))
            if self._mail_ok:  # the transaction is still open on the server: end it
                self._queue.append(("RSET", i, b"RSET\r\n"))
        self._mail_ok = self._rcpt_ok = False
        self._current = None
        self._start_next()

    def _start_next(self) -> None:
        if not self._waiting:
            return
        i = self._waiting.popleft()
        e = self.envelopes[i]
        self._current = i
        queue = self._queue
        queue.append(("MAIL", i, mail_from(e.sender, params=e.params)))
        queue.append(("RCPT", i, rcpt_to(e.to)))
        queue.append(("DATA", i, b"DATA\r\n"))

    def _close(self, reply: Reply, step: str, i: int) -> None:
        self.closing = True
        self.closing_reply = reply
        if step not in ("void", "RSET") and self.outcomes[i] is None:
            self.outcomes[i] = Outcome("throttled", reply, step)
        for j, outcome in enumerate(self.outcomes):
            if outcome is None:  # never reached the server's DATA: not taken, slow down
                self.outcomes[j] = Outcome("throttled", reply, "MAIL")
        self._queue.clear()
        self._expected.clear()
        self._waiting.clear()

