"""The HTTP/1.1 server every HTTP vendor fake (``tests.fakes.<driver>``) is built on.

``VendorFake`` listens on loopback (``engine.simulator.http.LoopbackServer``), parses each
request with h11 (headers, keep-alive, pipelining, ``100-continue``, chunked bodies), records
it as a ``Request`` and leaves the answer to the subclass's ``handle``. What a test needs
from any vendor comes with it: ``answer_next`` queues answers that win over ``handle`` (a
429, a 500, a body the driver must not trust), and ``hang``/``hang_up`` leave requests
unanswered where a fake's ``handle`` asks ``withhold``. A request h11 cannot read is answered
``{"error": ...}`` with h11's status hint, then the connection closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property
from http import HTTPStatus
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl

import anyio
import h11
import msgspec
from anyio.abc import SocketStream

from engine.simulator.http import LoopbackServer

__all__ = ["Answer", "Request", "VendorFake", "gateway_on", "json_answer"]


@dataclass(frozen=True)
class Request:
    """One request a fake received."""

    method: str
    target: str
    #: Header names in lower case.
    headers: dict[str, str]
    body: bytes

    @cached_property
    def form(self) -> dict[str, str]:
        """The body's form fields (empty when the body is not a form)."""
        with contextlib.suppress(UnicodeDecodeError, ValueError):
            return dict(parse_qsl(self.body.decode(), keep_blank_values=True))
        return {}


class Answer(NamedTuple):
    """One response: ``headers`` are extra header lines (``retry-after``...)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


def json_answer(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> Answer:
    """An answer whose body is ``value`` as JSON."""
    return Answer(status, msgspec.json.encode(value), tuple(headers or ()))


class VendorFake(LoopbackServer):
    """An HTTP/1.1 keep-alive server on loopback that records requests; ``handle`` answers
    (None hangs up without an answer). ``answer_next`` queues answers that win over it."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        #: Every request read, in order (answered or not).
        self.requests: list[Request] = []
        #: Leave the next so many requests ``withhold`` is asked about unanswered: ``hang``
        #: until the fake closes, ``hang_up`` by hanging up at once.
        self.hang = 0
        self.hang_up = 0
        self._next: list[Answer] = []
        self._release: anyio.Event | None = None

    @property
    def received(self) -> list[Request]:
        """``requests``, by the name the Twilio, Vonage and Infobip tests use."""
        return self.requests

    def answer_next(self, *answers: Answer) -> None:
        """Answer the next requests with ``answers``, in order, whatever they ask."""
        self._next.extend(answers)

    async def handle(self, request: Request) -> Answer | None:
        """The answer to ``request``, or None to hang up without answering."""
        raise NotImplementedError

    def options(self, **extra: Any) -> dict[str, Any]:
        """The ``[gateways.NAME]`` options (``driver`` left out) that point the fake's driver
        at it, ``extra`` added or overriding."""
        raise NotImplementedError

    async def withhold(self) -> bool:
        """Whether the request in hand goes unanswered (``hang`` or ``hang_up``, counted off;
        after waiting until the fake closes for ``hang``). ``handle`` asks it where its
        vendor would stall (after the auth check, say) and answers None when it says so."""
        if self.hang_up:
            self.hang_up -= 1
            return True
        if self.hang:
            self.hang -= 1
            assert self._release is not None
            await self._release.wait()
            return True
        return False

    async def __aenter__(self) -> Self:
        self._release = anyio.Event()
        return await super().__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._release is not None:
            self._release.set()
        await super().__aexit__(*exc_info)

    async def _serve_connection(self, stream: SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError,
                                     h11.LocalProtocolError):
                while True:
                    try:
                        request = await self._read(stream, conn)
                    except h11.RemoteProtocolError as err:
                        self.bad_requests += 1
                        await stream.send(_response(conn, json_answer(
                            err.error_status_hint, {"error": str(err)},
                            [("connection", "close")])))
                        return
                    if request is None:
                        return
                    self.requests.append(request)
                    answer = self._next.pop(0) if self._next else await self.handle(request)
                    if answer is None:
                        return
                    await stream.send(_response(conn, answer))
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()

    @staticmethod
    async def _read(stream: SocketStream, conn: h11.Connection) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    go_on = h11.InformationalResponse(status_code=100, headers=[],
                                                      reason="Continue")
                    await stream.send(conn.send(go_on) or b"")
                try:
                    conn.receive_data(await stream.receive(65536))
                except anyio.EndOfStream:
                    conn.receive_data(b"")
            elif isinstance(event, h11.ConnectionClosed):
                return None
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
                return Request(head.method.decode(), head.target.decode(), headers,
                               bytes(body))


@contextlib.asynccontextmanager
async def gateway_on(fake: VendorFake) -> AsyncIterator[dict[str, Any]]:
    """``fake`` running, as its ``options()``: what each fake module's ``gateway(tmp_path)``
    yields to the driver contract suite."""
    async with fake:
        yield fake.options()


def _response(conn: h11.Connection, answer: Answer) -> bytes:
    """``answer`` as the bytes ``conn`` sends (h11 adds ``connection: close`` when the
    client asked for it)."""
    headers = [("content-type", answer.content_type),
               ("content-length", str(len(answer.body))), *answer.headers]
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = ""
    data = conn.send(h11.Response(status_code=answer.status, headers=headers, reason=reason))
    data = (data or b"") + (conn.send(h11.Data(data=answer.body)) or b"")
    return data + (conn.send(h11.EndOfMessage()) or b"")
