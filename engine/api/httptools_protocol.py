"""uvicorn's HTTP/1.1 protocol (httptools' C parser) with the bounds Hypercorn (h11) gave
``herald serve`` and that uvicorn lacks, so a hostile client holds no more than it did:

- a request head (request line and headers) of at most :data:`MAX_HEAD` bytes, else a 431
  and the connection closed (httptools itself would buffer a header without end);
- :data:`HEAD_TIMEOUT` seconds for a connection's next request head to arrive in full,
  from its opening or the end of the previous response, else it is closed (uvicorn waits
  for ever for a head that trickles in, or for a first request that never comes);
- at most :data:`MAX_REQUESTS` requests on one connection (the last says ``Connection:
  close``);
- a malformed request, a ``Transfer-Encoding`` with a ``Content-Length`` (llhttp refuses
  that pair: no request smuggling) or an ``Upgrade`` is answered without a log line each
  (uvicorn warns every time: a flood of them would flood the log).

The request body's own deadline (408) is :mod:`engine.api.connections`'.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["HEAD_TIMEOUT", "MAX_HEAD", "MAX_REQUESTS", "GuardedHttpToolsProtocol"]

# Hypercorn gets the same three (engine/api/server.py).
#: Bytes a request head may have (Hypercorn's ``h11_max_incomplete_size``, its default).
MAX_HEAD = 16 * 1024
#: Seconds for a request head to arrive once the connection waits for one (Hypercorn's
#: ``keep_alive_timeout``, its default).
HEAD_TIMEOUT = 5.0
#: Requests on one keep-alive connection (``keep_alive_max_requests``; Hypercorn's
#: default of 1,000 made load tests and API clients reconnect, at a cost).
MAX_REQUESTS = 100_000


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops there (an HttpParserCallbackError)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with the bounds of the module's docstring."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_open = False  # between a request's first byte and the end of its headers
    _head_bytes = 0  # the head's URL and headers, as the parser handed them over
    _unparsed = 0  # bytes of reads that ended inside an unfinished head
    _too_large = False
    _requests = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # What uvicorn's does, without its warning per bad request, with the head's bounds.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no WebSocket here: the request was answered as plain HTTP
        except httptools.HttpParserError:
            self._refuse(431 if self._too_large else 400)
            return
        if self._head_open:
            # This read ended inside a head that the parser buffers: all of it counts (with
            # pipelining, a read that began in the previous request's body counts too: the
            # bound is then slightly stricter, never looser).
            self._unparsed += len(data)
            if self._unparsed > MAX_HEAD:
                self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._unparsed = 0
        self._stop_head_timer()
        if self._head_bytes > MAX_HEAD:
            self._too_large = True
            raise _HeadTooLarge
        super().on_headers_complete()
        self._requests += 1
        if self._requests >= MAX_REQUESTS and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_response_complete(self) -> None:
        next_head_read = bool(self.pipeline)  # a pipelined request whose head is in already
        super().on_response_complete()
        if not next_head_read and not self.transport.is_closing():
            self._await_head()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_too_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int) -> None:
        """Answer ``status`` (Connection: close) to a request the parser gave up on, then
        close: what was sent after it cannot be told apart from a smuggled request."""
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started \
                and not self.cycle.response_complete:
            self.transport.close()  # an answer is under way: no second one in its middle
            return
        reason = (f"request head over {MAX_HEAD} bytes" if status == 431
                  else http.HTTPStatus(status).phrase).encode()
        head: list[Any] = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: text/plain; charset=utf-8\r\n",
                 b"content-length: %d\r\n" % len(reason), b"connection: close\r\n\r\n", reason]
        self.transport.write(b"".join(head))
        self.transport.close()
