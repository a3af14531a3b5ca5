"""Keep-alive HTTP/1.1 connections to one origin, on anyio streams (asyncio, uvloop, trio).

``ConnectionPool.post(body)`` sends one ``POST`` on an idle connection (most recently used
first) or a new one and reads the answer with ``http1.ResponseParser``. Every transport
failure comes out as ``TransportError``; cancellation passes through untouched, and a
connection cut off in the middle of a request (error, timeout, cancellation) is closed,
never reused. The pool does not bound concurrency or time: its caller does both (a
semaphore and a cancel scope around ``post``), so it opens at most as many connections as
the caller lets requests in.

A kept-alive connection the server has meanwhile closed fails the next request before any
byte of an answer; that request is sent again, once, on a new connection, as browsers and
httpcore do. Idle connections are dropped after ``keepalive_expiry`` seconds, under the
5 s that many servers (uvicorn, Node.js) keep them.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

import anyio
import msgspec
from anyio.abc import ByteStream

from herald_http.http1 import Origin, ProtocolError, Response, ResponseParser, request_head

__all__ = ["ConnectionPool", "PoolStatistics", "Transport", "TransportError"]

_READ_SIZE = 65536
_FAILURES = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, ProtocolError)


class TransportError(Exception):
    """A request did not complete: no connection, a broken one, or an answer that is not HTTP.

    ``sent``: the request may have reached the server (False only when it surely did not).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        self.sent = sent
        super().__init__(message)


class Transport(Protocol):
    """What the driver needs from an HTTP client: POST a body to the configured URL."""

    async def post(self, body: bytes) -> Response:
        """The gateway's answer; raise ``TransportError`` when there is none."""
        ...

    async def aclose(self) -> None:
        """Close every connection; calling it again does nothing."""
        ...


class PoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot: connections open and idle; connects, reuses and stale-connection retries."""

    open: int
    idle: int
    connects: int
    reuses: int
    stale_retries: int


class ConnectionPool:
    """HTTP/1.1 keep-alive connections to ``origin``, all carrying ``POST``s with ``headers``.

    ``ssl_context`` for ``https`` (default: the system's CAs); ``clock`` (seconds, for the
    keep-alive expiry) is ``anyio.current_time`` unless a test fakes it.
    """

    def __init__(
        self,
        origin: Origin,
        headers: dict[str, str],
        *,
        keepalive_expiry: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.origin = origin
        self.keepalive_expiry = keepalive_expiry
        self._clock = clock
        self._head = request_head(origin, headers)
        self._ssl_context = ssl_context
        #: (stream, idle since), oldest first.
        self._idle: list[tuple[ByteStream, float]] = []
        self._open = 0
        self._connects = 0
        self._reuses = 0
        self._stale_retries = 0
        self._closed = False

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            open=self._open,
            idle=len(self._idle),
            connects=self._connects,
            reuses=self._reuses,
            stale_retries=self._stale_retries,
        )

    async def post(self, body: bytes) -> Response:
        """POST ``body``; the complete response. Raises ``TransportError``."""
        request = self._head % len(body) + body
        stream = await self._idle_connection()
        if stream is not None:
            self._reuses += 1
            try:
                return await self._exchange(stream, request, reused=True)
            except _Stale:
                self._stale_retries += 1
        return await self._exchange(await self._connect(), request, reused=False)

    async def aclose(self) -> None:
        """Close the idle connections now and the busy ones when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for stream, _ in idle:
            await self._discard(stream)

    async def _idle_connection(self) -> ByteStream | None:
        if self._closed:
            raise TransportError("the driver is closed", sent=False)
        idle = self._idle
        if not idle:
            return None
        stale_before = self._clock() - self.keepalive_expiry
        while idle and idle[0][1] < stale_before:
            await self._discard(idle.pop(0)[0])
        return idle.pop()[0] if idle else None

    async def _connect(self) -> ByteStream:
        host, port = self.origin.host, self.origin.port
        try:
            if self.origin.scheme == "https":
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                    self._ssl_context.set_alpn_protocols(["http/1.1"])
                # Not "standard compatible": many servers hang up without a TLS close_notify,
                # and every body we accept is framed (or must parse as JSON) anyway.
                stream: ByteStream = await anyio.connect_tcp(
                    host, port, tls=True, ssl_context=self._ssl_context, tls_hostname=host,
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(host, port)
        except _FAILURES as err:
            raise TransportError(f"cannot connect: {_describe(err)}", sent=False) from err
        self._open += 1
        self._connects += 1
        return stream

    async def _exchange(self, stream: ByteStream, request: bytes, *, reused: bool) -> Response:
        parser = ResponseParser()
        try:
            await stream.send(request)
            while True:
                try:
                    data = await stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    data = b""
                response = parser.feed(data)
                if response is not None:
                    break
        except _FAILURES as err:
            await self._discard(stream)
            if reused and not parser.received:
                raise _Stale from err
            raise TransportError(_describe(err), sent=True) from err
        except BaseException:  # cancelled (a timeout): the answer may still come; drop it
            await self._discard(stream)
            raise
        if response.keep_alive and not self._closed:
            self._idle.append((stream, self._clock()))
        else:
            await self._discard(stream)
        return response

    async def _discard(self, stream: ByteStream) -> None:
        self._open -= 1
        await anyio.aclose_forcefully(stream)


class _Stale(Exception):
    """A kept-alive connection turned out closed before any byte of the answer came."""


def _describe(err: BaseException) -> str:
    # anyio wraps the OS error that broke a stream, or that each connection attempt met:
    # name that one ("connection refused", not "All connection attempts failed").
    while True:
        cause = err.__cause__
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
        if cause is None or not isinstance(cause, OSError | anyio.BrokenResourceError):
            break
        if isinstance(err, OSError) and err.errno is not None:
            break
        err = cause
    if isinstance(err, ProtocolError):
        return str(err)
    if isinstance(err, anyio.BrokenResourceError):
        return "the connection broke"
    if isinstance(err, anyio.ClosedResourceError):
        return "the connection was closed"
    if isinstance(err, OSError):
        # The errno's own words: asyncio's strerror is "Connect call failed (addr)".
        text = err.strerror if isinstance(err, socket.gaierror) else None
        if text is None and isinstance(err.errno, int) and err.errno > 0:
            text = os.strerror(err.errno)
        text = text or err.strerror or str(err) or type(err).__name__
        return text[:1].lower() + text[1:]
    return str(err) or type(err).__name__
