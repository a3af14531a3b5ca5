"""The server side of HTTP/1.1, as little of it as the simulator needs, on loopback only.

``read_request`` parses one request (``content-length`` bodies, keep-alive, pipelining,
``100-continue``; chunked bodies are refused with 411), ``format_response`` writes one JSON
answer, and ``LoopbackServer`` serves connections, leaving the answers to a subclass.
"""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any, Self

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

__all__ = [
    "DEFAULT_HOST",
    "BadRequest",
    "LoopbackServer",
    "format_response",
    "loopback_host",
    "read_request",
]

DEFAULT_HOST = "127.0.0.1"
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_CLOSE = b"\r\nconnection: close\r\n\r\n"
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
}

_encode = msgspec.json.Encoder().encode


def loopback_host(host: str) -> str:
    """``host`` as an address to listen on if it is loopback ("localhost" is 127.0.0.1).

    Raises ``ValueError`` for anything else: the simulator never listens off the machine.
    """
    if host == "localhost":
        return DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"{host!r} is not a loopback address (127.0.0.1, ::1 or localhost)")
    return str(address)


def format_response(status: int, body: bytes, *, close: bool = False, extra: bytes = b"") -> bytes:
    """One HTTP/1.1 response with a JSON ``body``; ``extra`` holds more header lines."""
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%s\r\n"
    connection = b"connection: close\r\n" if close else b""
    reason = _REASONS.get(status, b"Simulated")
    return head % (status, reason, len(body), extra, connection) + body


class BadRequest(Exception):
    """A request the server cannot read; answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_request(
    stream: SocketStream, buffer: bytearray
) -> tuple[bytes, bytes, bytes, bool] | None:
    """Read one HTTP/1.1 request: (method, target, body, keep-alive), or None at EOF.

    ``buffer`` carries bytes already received past the previous request (pipelining).
    """
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > _MAX_HEAD:
            raise BadRequest(431, "request head too large")
        try:
            buffer += await stream.receive(65536)
        except anyio.EndOfStream:
            return None
    lines = bytes(buffer[:end]).lstrip(b"\r\n").split(b"\r\n")
    del buffer[: end + 4]
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    length = 0
    keep_alive = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise BadRequest(400, "bad content-length") from None
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token != b"close" and (keep_alive or token == b"keep-alive")
        elif name == b"transfer-encoding":
            raise BadRequest(411, "chunked bodies are not supported: send content-length")
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    if length < 0:
        raise BadRequest(400, "bad content-length")
    if length > _MAX_BODY:
        raise BadRequest(413, "body too large")
    while len(buffer) < length:
        buffer += await stream.receive(65536)
    body = bytes(buffer[:length])
    del buffer[:length]
    return method, target, body, keep_alive


class LoopbackServer:
    """An HTTP/1.1 keep-alive server on a loopback address living inside ``async with``.

    Subclasses answer requests in ``_answer`` and may open resources in ``_open`` and start
    tasks in ``_start``; all of it ends when the ``async with`` block does.
    """

    def __init__(self, port: int, host: str = DEFAULT_HOST) -> None:
        self.host = loopback_host(host)
        self._requested_port = port
        self.port = 0
        self.bad_requests = 0
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the base URL (once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            listener = await anyio.create_tcp_listener(
                local_host=self.host, local_port=self._requested_port
            )
            stack.push_async_callback(listener.aclose)
            self.port = listener.extra(SocketAttribute.local_port)
            await self._open(stack)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            self._start(task_group)
            task_group.start_soon(listener.serve, self._serve_connection)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        """Open what the server's tasks use; ``stack`` closes it after they have ended."""

    def _start(self, task_group: TaskGroup) -> None:
        """Start the server's own tasks besides the listener."""

    async def _answer(self, method: bytes, target: bytes, body: bytes) -> bytes | None:
        """The response to one request, or None to hang up without answering."""
        raise NotImplementedError

    async def _serve_connection(self, stream: SocketStream) -> None:
        async with stream:
            buffer = bytearray()
            with contextlib.suppress(
                anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                while True:
                    try:
                        request = await read_request(stream, buffer)
                    except BadRequest as err:
                        self.bad_requests += 1
                        body = _encode({"error": str(err)})
                        await stream.send(format_response(err.status, body, close=True))
                        return
                    if request is None:
                        return
                    method, target, body, keep_alive = request
                    answer = await self._answer(method, target, body)
                    if answer is None:
                        return
                    if not keep_alive:
                        await stream.send(answer.replace(b"\r\n\r\n", _CLOSE, 1))
                        return
                    await stream.send(answer)
