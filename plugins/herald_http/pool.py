"""Keep-alive HTTP/1.1 connections to one origin: h11 on anyio streams (asyncio, uvloop, trio).

``ConnectionPool.post(body, progress)`` sends one ``POST`` on an idle connection (most
recently used first) or a new one; h11 frames the request and parses the answer. Every
transport failure comes out as ``TransportError``; cancellation passes through untouched.
A connection cut off in the middle of a request (error, timeout, cancellation) is closed,
never reused. The pool does not bound concurrency or time: its caller does both (a
semaphore and a cancel scope around ``post``), so it opens at most as many connections as
the caller lets requests in.

**A request is written at most once.** The pool never sends it again, on this connection
or another, whatever happened to it: once a byte of it may have left, only the gateway
knows whether it took the request. How far it got is told by ``Progress.written``, which
turns True once the whole request was handed to the socket: a caller whose cancel scope
(a timeout) interrupted ``post`` reads it there. Before that, the gateway cannot hold a
complete request; after it, it may have taken it.

**Reuse.** A connection goes back to the pool only when h11 has both sides done and able
to go on (HTTP/1.1, no ``Connection: close``), nothing came past the answer, and the
answer was not framed by both ``Transfer-Encoding`` and ``Content-Length`` (h11 reads
such a body as chunked and would keep the connection; RFC 9112 §6.3 calls it a sign of
request smuggling: drop it). Before an idle connection carries a request, a non-blocking
poll of its socket checks that the server has not closed it meanwhile (or sent bytes
nobody asked for): such a connection is dropped unused, and the next idle one, or a new
one, is taken. A server may still close a connection in the instant between that check
and the write; that request then fails as a lost connection, and is not sent again.
Idle connections are dropped after ``keepalive_expiry`` seconds, under the 5 s that many
servers (uvicorn, Node.js) keep them.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import h11
import msgspec
from anyio.abc import ByteStream, SocketAttribute

from herald_http.http1 import Origin, Response, request_headers

__all__ = ["ConnectionPool", "PoolStatistics", "Progress", "Transport", "TransportError"]

_READ_SIZE = 65536
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
#: Distinct body lengths whose h11 request event is kept (building one validates headers).
_CACHED_REQUESTS = 512


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 answer we can read (or it hung up mid-way)."""


_FAILURES = (
    OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, h11.RemoteProtocolError,
    ProtocolError,
)


class TransportError(Exception):
    """A request did not complete: no connection, a broken one, or an answer that is not HTTP.

    ``sent``: the whole request was handed to the socket, so the gateway may have it
    (False when it cannot hold a complete request: no connection, or it broke before).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        self.sent = sent
        super().__init__(message)


class Progress:
    """How far one ``post`` got, for a caller that interrupted it (a timeout).

    ``written``: None until the transport says; False while the request is not yet wholly
    handed to the socket (the gateway cannot have it); True once it is (it may).
    """

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written: bool | None = None


class Transport(Protocol):
    """What the driver needs from an HTTP client: POST a body to the configured URL."""

    async def post(self, body: bytes, progress: Progress | None = None) -> Response:
        """The gateway's answer; raise ``TransportError`` when there is none.

        Set ``progress.written`` (when given) to False before the request is written and
        True once all of it is; leave it None if the client cannot tell.
        """
        ...

    async def aclose(self) -> None:
        """Close every connection; calling it again does nothing."""
        ...


class PoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot: connections open and idle; connects, reuses, and idle ones found closed."""

    open: int
    idle: int
    connects: int
    reuses: int
    #: Idle connections the server had closed (or sent unasked bytes on), dropped unused.
    stale: int


_poll = getattr(select, "poll", None)  # not on Windows: select() there


class _Connection:
    """One connection: its stream, its h11 state machine, and its socket to poll."""

    __slots__ = ("h11", "idle_since", "socket", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.socket: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None)
        self.idle_since = 0.0

    def closed_by_peer(self) -> bool:
        """The socket is readable while no request is out: the server closed it, or junk."""
        if self.socket is None:  # not a socket stream: nothing to poll
            return False
        fd = self.socket.fileno()
        if fd < 0:
            return True
        if _poll is not None:
            poller = _poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])


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
        self._target = origin.target.encode("ascii")
        self._headers = request_headers(origin, headers)
        self._requests: dict[int, h11.Request] = {}
        self._request(0)  # h11 checks the headers now, not at the first request
        self._ssl_context = ssl_context
        #: Idle connections, oldest first.
        self._idle: list[_Connection] = []
        self._open = 0
        self._connects = 0
        self._reuses = 0
        self._stale = 0
        self._closed = False

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            open=self._open,
            idle=len(self._idle),
            connects=self._connects,
            reuses=self._reuses,
            stale=self._stale,
        )

    async def post(
        self, body: bytes, progress: Progress | None = None, *,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> Response:
        """POST ``body``; the complete response. Raises ``TransportError``.

        ``headers``: added to this request only (a signature over the body); h11 checks
        them, and a bad one raises its ``LocalProtocolError`` before anything is sent."""
        request = self._request(len(body)) if not headers else h11.Request(
            method=b"POST", target=self._target,
            headers=[*self._headers, *headers, (b"content-length", b"%d" % len(body))])
        if progress is None:
            progress = Progress()
        progress.written = False
        connection = await self._idle_connection()
        if connection is None:
            connection = await self._connect()
        else:
            self._reuses += 1
        return await self._exchange(connection, request, body, progress)

    async def aclose(self) -> None:
        """Close the idle connections now and the busy ones when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._discard(connection)

    def _request(self, length: int) -> h11.Request:
        # Building an h11 event validates every header: once per body length, not per request.
        request = self._requests.get(length)
        if request is None:
            if len(self._requests) >= _CACHED_REQUESTS:
                self._requests.clear()
            headers = [*self._headers, (b"content-length", b"%d" % length)]
            request = h11.Request(method=b"POST", target=self._target, headers=headers)
            self._requests[length] = request
        return request

    async def _idle_connection(self) -> _Connection | None:
        if self._closed:
            raise TransportError("the driver is closed", sent=False)
        idle = self._idle
        if not idle:
            return None
        stale_before = self._clock() - self.keepalive_expiry
        while idle and idle[0].idle_since < stale_before:
            await self._discard(idle.pop(0))
        while idle:
            connection = idle.pop()
            if not connection.closed_by_peer():
                return connection
            self._stale += 1
            await self._discard(connection)
        return None

    async def _connect(self) -> _Connection:
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
        return _Connection(stream)

    async def _exchange(
        self, connection: _Connection, request: h11.Request, body: bytes, progress: Progress
    ) -> Response:
        conn = connection.h11
        try:
            head = conn.send(request) or b""
            framed = conn.send_with_data_passthrough(h11.Data(data=body)) or []
            data = b"".join([head, *framed, conn.send(h11.EndOfMessage()) or b""])
            await connection.stream.send(data)
        except _FAILURES as err:
            await self._discard(connection)
            raise TransportError(_describe(err), sent=False) from err
        except BaseException:  # cancelled: part of the request may be out; never finish it
            # (On asyncio, a request too big for the socket buffer whose last bytes drained
            # in the very loop iteration the deadline fell in counts as not written.)
            await self._discard(connection)
            raise
        progress.written = True
        try:
            response = await self._receive(connection)
        except _FAILURES as err:
            await self._discard(connection)
            raise TransportError(_describe(err), sent=True) from err
        except BaseException:  # cancelled (a timeout): the answer may still come; drop it
            await self._discard(connection)
            raise
        if response.keep_alive and not self._closed:
            conn.start_next_cycle()
            connection.idle_since = self._clock()
            self._idle.append(connection)
        else:
            await self._discard(connection)
        return response

    async def _receive(self, connection: _Connection) -> Response:
        conn, stream = connection.h11, connection.stream
        status = 0
        headers: dict[str, str] = {}
        chunks: list[bytes] = []
        size = 0
        eof = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as err:
                if not eof:
                    raise
                if status or conn.trailing_data[0]:
                    raise ProtocolError(
                        "the server closed the connection in the middle of its answer"
                    ) from err
                raise ProtocolError("the server closed the connection without answering") from err
            if event is h11.NEED_DATA:
                if eof:  # h11 raises or ends the message at the end of stream; never this
                    raise ProtocolError("the server closed the connection in its answer")
                try:
                    data = await stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    data, eof = b"", True
                conn.receive_data(data)
            elif type(event) is h11.Response:
                status = event.status_code
                for raw_name, raw_value in event.headers:
                    name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
            elif type(event) is h11.Data:
                size += len(event.data)
                if size > MAX_BODY:
                    raise ProtocolError("response body too large")
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.InformationalResponse:
                continue  # 100 Continue, 103 Early Hints: the real answer follows
            else:  # ConnectionClosed or PAUSED: h11 raises for both before we get here
                raise ProtocolError(f"unexpected {type(event).__name__} from the server")
        keep_alive = (
            conn.our_state is h11.DONE and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
            and not ("transfer-encoding" in headers and "content-length" in headers)
        )
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return Response(status, headers, bytes(body), keep_alive)

    async def _discard(self, connection: _Connection) -> None:
        self._open -= 1
        await anyio.aclose_forcefully(connection.stream)


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
    if isinstance(err, h11.RemoteProtocolError):
        return f"not an HTTP/1.1 answer: {err}"
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
