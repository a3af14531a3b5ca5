"""HTTP/1.1 for one origin, sans-I/O: the request head, and an incremental response parser.

Only what a JSON API client needs: ``POST`` with a ``Content-Length`` body; responses framed
by ``Content-Length``, ``Transfer-Encoding: chunked`` (with trailers) or the end of the
connection; interim ``1xx`` answers skipped; keep-alive decided per RFC 9112 §9.3. No I/O,
no clock: ``pool.py`` moves the bytes.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["Origin", "ProtocolError", "Response", "ResponseParser", "request_head", "split_url"]

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")
#: RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Headers the client frames the message with; a user may not set them.
RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "upgrade"})


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response we can read."""


class Origin(NamedTuple):
    """Where requests go: ``scheme://host:port`` and the request target (path and query)."""

    scheme: str
    host: str
    port: int
    target: str

    @property
    def authority(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def split_url(url: str) -> Origin:
    """The origin and target of an ``http://`` or ``https://`` URL; ``ValueError`` says why not."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"url must start with http:// or https://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"url has no host: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials: send them in `headers` (Authorization)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url has a bad port: {url!r}") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if any(c in target for c in " \r\n\t") or not target.isascii():
        raise ValueError(f"url path must be percent-encoded ASCII without spaces: {url!r}")
    return Origin(scheme, parts.hostname, port or (443 if scheme == "https" else 80), target)


def check_header(name: str, value: str) -> None:
    """``ValueError`` unless ``name: value`` is a header a user may add to every request."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"header name {name!r} is not an HTTP token")
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(f"header {name!r} is set by the driver itself")
    if any(c in value for c in "\r\n\0") or not value.isascii():
        raise ValueError(f"header {name!r} has a value with a line break or non-ASCII text")


def request_head(origin: Origin, headers: dict[str, str]) -> bytes:
    """The head of every ``POST`` but its length: a template for ``head % len(body)``.

    ``headers`` are added as given (checked by ``check_header``); ``Host`` among them
    replaces the origin's.
    """
    fields = {
        "host": origin.authority,
        "user-agent": "herald",
        "accept": "application/json",
        "content-type": "application/json",
    }
    for name, value in headers.items():
        fields.pop(name.lower(), None)
        fields[name] = value
    lines = [f"POST {origin.target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.items()]
    head = ("\r\n".join(lines) + "\r\n").encode("ascii").replace(b"%", b"%%")
    return head + b"content-length: %d\r\n\r\n"


class Response(NamedTuple):
    """A complete response. Header names are lower case; repeated headers are joined by ``,``."""

    status: int
    headers: dict[str, str]
    body: bytes
    #: The connection may carry another request.
    keep_alive: bool = True


# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE, _DONE = range(7)


class ResponseParser:
    """Reads one response to a ``POST``: ``feed`` bytes until it returns the ``Response``.

    ``feed(b"")`` tells the server closed the connection (needed when a body runs until
    then). Raises ``ProtocolError`` on anything malformed, oversized, or cut short.
    """

    __slots__ = ("_body", "_buffer", "_headers", "_keep_alive", "_remaining", "_state",
                 "_status", "received")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _HEAD
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = True
        self._remaining = 0
        self._body = bytearray()
        #: Some bytes of the response came (a failure after that is not a stale connection).
        self.received = False

    def feed(self, data: bytes) -> Response | None:
        """Take the next bytes from the server (``b""`` at its end); the response once whole."""
        if self._state == _DONE:
            raise ProtocolError("the response is already complete")
        if not data:
            return self._eof()
        self.received = True
        buffer = self._buffer
        if self._state == _HEAD and not buffer:
            # The usual case: a whole response in one read, framed by content-length.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._head(data[:end])
                if self._state == _LENGTH and len(data) - end - 4 == self._remaining:
                    self._state = _DONE
                    return Response(self._status, self._headers, data[end + 4 :],
                                    self._keep_alive)
                buffer += data[end + 4 :]
                return self._advance()
        buffer += data
        return self._advance()

    def _advance(self) -> Response | None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ProtocolError("response head too large")
                    return None
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                self._head(head)
            elif state == _LENGTH:
                if len(buffer) < self._remaining:
                    return None
                if len(buffer) > self._remaining:
                    # Bytes past the response: unasked-for data; never reuse this connection.
                    self._keep_alive = False
                self._body += buffer[: self._remaining]
                return self._done()
            elif state == _CHUNK_SIZE_LINE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise ProtocolError("chunk size line too long")
                    return None
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                if not _CHUNK_SIZE.fullmatch(size):
                    raise ProtocolError(f"bad chunk size {size[:20]!r}")
                self._remaining = int(size, 16)
                if len(self._body) + self._remaining > MAX_BODY:
                    raise ProtocolError("response body too large")
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            elif state == _CHUNK_DATA:
                if len(buffer) < self._remaining + 2:
                    return None
                if buffer[self._remaining : self._remaining + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                self._body += buffer[: self._remaining]
                del buffer[: self._remaining + 2]
                self._state = _CHUNK_SIZE_LINE
            elif state == _TRAILERS:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ProtocolError("trailers too large")
                    return None
                del buffer[: end + 2]
                if end == 0:  # the empty line after the (ignored) trailer fields
                    if buffer:
                        self._keep_alive = False
                    return self._done()
            elif state == _UNTIL_CLOSE:
                if len(self._body) + len(buffer) > MAX_BODY:
                    raise ProtocolError("response body too large")
                self._body += buffer
                buffer.clear()
                return None
            else:  # pragma: no cover - _DONE is caught in feed()
                raise ProtocolError("the response is already complete")

    def _eof(self) -> Response | None:
        if self._state == _UNTIL_CLOSE:
            self._keep_alive = False
            return self._done()
        if self._state == _HEAD and not self._buffer:
            raise ProtocolError("the server closed the connection without answering")
        raise ProtocolError("the server closed the connection in the middle of its answer")

    def _done(self) -> Response:
        self._state = _DONE
        return Response(self._status, self._headers, bytes(self._body), self._keep_alive)

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:60]!r}")
        code = status_line[1]
        if len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"bad status code {code[:10]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in b" \t" or line[:1] in b" \t":
                raise ProtocolError(f"malformed header line {line[:60]!r}")
            key = name.lower().decode("latin-1")
            text = value.strip(b" \t").decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols unasked")
            return  # interim answer (100 Continue, 103 Early Hints): the real one follows
        self._status = status
        self._headers = headers
        connection = headers.get("connection", "").lower()
        self._keep_alive = status_line[0] == b"HTTP/1.1" and "close" not in connection
        coding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if status in (204, 304):
            self._state, self._remaining = _LENGTH, 0
        elif coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._state = _CHUNK_SIZE_LINE
            else:  # RFC 9112 §6.3: read until the server closes
                self._state, self._keep_alive = _UNTIL_CLOSE, False
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1 or not _DIGITS.fullmatch(digits := values.pop()):
                raise ProtocolError(f"bad content-length {length[:40]!r}")
            self._remaining = int(digits)
            if self._remaining > MAX_BODY:
                raise ProtocolError("response body too large")
            self._state = _LENGTH
        else:
            self._state, self._keep_alive = _UNTIL_CLOSE, False
