"""A small SMSC on loopback, built on Herald's SMPP codec, for the driver's unit tests.

``async with Peer() as peer:`` listens on a free port (``peer.port``) and serves binds:
credentials are checked against ``system_id``/``password``, submits go to ``submit``
(a function of the connection and the PDU: ``(status, message_id)`` to answer now, or None
to leave it unanswered in ``conn.unanswered`` for the test to answer later), and
``after_read`` runs after each chunk read (to answer held submits in bulk). Everything the
peer sees is recorded: ``peer.submits`` (every submit_sm, in order), ``conn.max_unanswered``
(the most submits that were waiting for an answer at once), ``peer.log`` (events in order,
shared with the test's fake listener), the answers to its deliver_sm in ``peer.acks``.
The end-to-end simulator (``engine/simulator/smpp.py``) is written apart from the codec;
this peer is for poking at the session's behaviour.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from herald_smpp.codec import (
    Bind,
    BindResp,
    Decoder,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    encode,
)

Answer = tuple[int, str] | None


class Conn:
    """One ESME connection to the peer."""

    def __init__(self, peer: Peer, stream: SocketStream, number: int) -> None:
        self.peer = peer
        self.stream = stream
        self.number = number
        self.kind = ""
        self.bound = False
        self.unbinding = False
        self.unanswered: list[SubmitSm] = []
        self.max_unanswered = 0
        self._sequence = itertools.count(1)
        self.closed = anyio.Event()
        self.acks: dict[int, anyio.Event] = {}
        self._lock = anyio.Lock()

    async def send(self, *pdus: Pdu) -> None:
        async with self._lock:
            await self.stream.send(b"".join(encode(p) for p in pdus))

    async def answer(self, pdu: SubmitSm, status: int = 0, message_id: str = "") -> None:
        self.unanswered.remove(pdu)
        await self.send(SubmitSmResp(sequence=pdu.sequence, status=status,
                                     message_id=message_id or self.peer.new_id()))

    async def answer_all(self) -> None:
        held, self.unanswered = self.unanswered, []
        await self.send(*(SubmitSmResp(sequence=p.sequence, message_id=self.peer.new_id())
                          for p in held))

    async def deliver(self, pdu: DeliverSm) -> int:
        """Send ``pdu`` (a fresh sequence number) and return it; ``peer.acks[seq]`` gets
        the answer's status, and ``self.acks[seq]`` is set then."""
        pdu.sequence = seq = next(self._sequence) + 1_000_000
        self.acks[seq] = anyio.Event()
        await self.send(pdu)
        return seq

    async def acked(self, seq: int) -> int:
        await self.acks[seq].wait()
        return self.peer.acks[seq]

    async def unbind(self) -> None:
        """Unbind the ESME: submits that come after it are ignored (``peer.ignored``),
        as an SMSC that is unbinding does."""
        self.unbinding = True
        await self.send(Unbind(sequence=next(self._sequence) + 2_000_000))

    async def close(self) -> None:
        await self.stream.aclose()


class Peer:
    """The SMSC (see the module docstring)."""

    def __init__(self, *, system_id: str = "herald", password: str = "secret",
                 submit: Callable[[Conn, SubmitSm], Answer] | None = None,
                 after_read: Callable[[Conn], Awaitable[None]] | None = None,
                 bind_status: int | None = None, answer_enquire_link: bool = True) -> None:
        self.system_id = system_id
        self.password = password
        self.submit = submit or (lambda conn, pdu: (0, self.new_id()))
        self.after_read = after_read
        self.bind_status = bind_status
        self.answer_enquire_link = answer_enquire_link
        self.port = 0
        self.conns: list[Conn] = []
        self.binds: list[Bind] = []
        self.submits: list[SubmitSm] = []
        self.ignored: list[SubmitSm] = []
        self.enquire_links = 0
        self.enquire_link_resps = 0
        self.unbinds = 0
        self.acks: dict[int, int] = {}
        self.log: list[str] = []
        self._ids = itertools.count(0x1000)
        self.bound = anyio.Event()
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None

    def new_id(self) -> str:
        return format(next(self._ids), "x")

    async def __aenter__(self) -> Peer:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(SocketAttribute.local_port)
        self._listener = listener
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(listener.serve, self._serve)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        result = await self._tg.__aexit__(*exc)
        await self._listener.aclose()
        return result

    def options(self, **extra: Any) -> dict[str, Any]:
        """Driver options that reach this peer."""
        return {"host": "127.0.0.1", "port": self.port, "system_id": self.system_id,
                "password": self.password, **extra}

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds (checked whenever the peer saw something)."""
        while not predicate():
            event = self._changed
            await event.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _serve(self, stream: SocketStream) -> None:
        conn = Conn(self, stream, len(self.conns))
        self.conns.append(conn)
        decoder = Decoder()
        try:
            async with stream:
                while True:
                    try:
                        data = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError,
                            anyio.ClosedResourceError, OSError):
                        return
                    out: list[Pdu] = []
                    for pdu in decoder.feed(data):
                        self._handle(conn, pdu, out)
                    conn.max_unanswered = max(conn.max_unanswered, len(conn.unanswered))
                    if out:
                        try:
                            await conn.send(*out)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                            return
                    if self.after_read is not None and conn.bound:
                        await self.after_read(conn)
                    self._notify()
        finally:
            conn.bound = False
            conn.closed.set()
            self._notify()

    def _handle(self, conn: Conn, pdu: Pdu, out: list[Pdu]) -> None:
        if isinstance(pdu, Bind):
            self.binds.append(pdu)
            status = self.bind_status
            if status is None:
                ok = pdu.system_id == self.system_id and pdu.password == self.password
                status = 0 if ok else 0x0E
            out.append(BindResp(kind=pdu.kind, sequence=pdu.sequence, status=status,
                                system_id="peer"))
            if status == 0:
                conn.kind = pdu.kind
                conn.bound = True
                self.bound.set()
        elif isinstance(pdu, SubmitSm) and conn.unbinding:
            self.ignored.append(pdu)
        elif isinstance(pdu, SubmitSm):
            self.submits.append(pdu)
            answer = self.submit(conn, pdu)
            if answer is None:
                conn.unanswered.append(pdu)
            else:
                out.append(SubmitSmResp(sequence=pdu.sequence, status=answer[0],
                                        message_id=answer[1]))
        elif isinstance(pdu, EnquireLink):
            self.enquire_links += 1
            if self.answer_enquire_link:
                out.append(EnquireLinkResp(sequence=pdu.sequence))
        elif isinstance(pdu, EnquireLinkResp):
            self.enquire_link_resps += 1
        elif isinstance(pdu, Unbind):
            self.unbinds += 1
            out.append(UnbindResp(sequence=pdu.sequence))
        elif isinstance(pdu, DeliverSmResp):
            self.acks[pdu.sequence] = pdu.status
            self.log.append(f"ack {pdu.sequence} {pdu.status:#x}")
            event = conn.acks.get(pdu.sequence)
            if event is not None:
                event.set()
        elif isinstance(pdu, UnbindResp):
            self.log.append("unbind_resp")


__all__ = ["Answer", "Conn", "Peer"]
