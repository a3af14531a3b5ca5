"""The ``smpp`` driver: submits over SMPP 3.4 binds to an SMSC, takes receipts and replies on them.

Options (``[gateways.NAME]``)::

    driver = "smpp"
    host = "smsc.example.net"        # required
    port = 2775
    system_id = "herald"             # required; at most 15 characters
    password = "secret"              # at most 8; never shown in errors or logs
    system_type = ""
    bind = "transceiver"             # or "transmitter"
    receiver = false                 # with bind = "transmitter": a receiver bind too, per session
    sessions = 1                     # binds in parallel
    window = 10                      # submits awaiting their submit_sm_resp, per session
    enquire_link = 30                # seconds idle before a keep-alive; 0 = none
    tls = false                      # TLS with the system's CAs
    # source_ton / source_npi: unset = chosen per sender: 1/1 (international) for a number
    # (digits, with or without "+"), 5/0 (alphanumeric) for a name
    dest_ton = 1                     # with 1, the leading "+" of E.164 numbers is dropped
    dest_npi = 1
    registered_delivery = 1          # asked on every part of a long message
    long_messages = "udh"            # or "sar" (TLVs) or "payload" (message_payload)
    timeout = 10                     # seconds for a submit_sm_resp (0 = no limit)
    connect_timeout = 10             # seconds to connect and bind
    receipt_ids = "same"             # receipts write ids "same" as submit_sm_resp, or in
                                     # "decimal" (resp in hex) or "hex" (resp in decimal)
    max_pending_receipts = 10000     # received, not yet stored: past it, ESME_RTHROTTLED
    validity_period = ""             # SMPP time format, e.g. "000001000000000R" (1 day)
    service_type = ""
    listen = true                    # herald serve / worker stay bound between runs

Capabilities: ``max_batch = sessions * window``, ``supports_dlr``, not ``idempotent``
(SMPP has no idempotent submit: an ambiguous submit follows the sender's ``on_ambiguous``).

**Who runs the sessions.** A driver has no ``async with`` of its own, and on trio a task
group must be left by the task that entered it, while the engine calls ``send_batch``
from worker tasks and ``aclose`` from another. So no task outlives the call that started
it: every ``send_batch`` opens a task group and, for as long as it waits for its answers,
*attends* the sessions: each session is pumped (connected, bound, read, written, its
receipts stored; ``session.py``) by exactly one task at a time, started in the task group
of whichever call is attending when no other pump runs. When that call returns, its pumps
are cancelled at a safe point (what must not be cut, a write or a listener call, is
shielded), and a call still waiting starts them again in its own group. The connection, the
window, sequence numbers and backoff live on the sessions, so nothing is lost in the
hand-over. Between calls nobody reads the sockets (the SMSC holds its receipts meanwhile);
``serve()`` is a call that only attends, until cancelled or ``aclose()``: an engine that
wants receipts, inbound messages and keep-alives between batches runs it in a task group
of its own. A session nobody read for ``enquire_link`` seconds is probed with an
``enquire_link`` before it carries a submit, so a connection the SMSC dropped meanwhile
costs a reconnect, not lost messages. The same code runs on asyncio and trio.

**Submitting.** Each message becomes its parts (``codec.parts.message_parts``: GSM-7 or
UCS-2, cut as Herald counts segments, with a per-message reference), each a ``submit_sm``
encoded once. The parts of one message go in order through one session, each after the
previous one was accepted, so a refusal stops the rest. The writer of each session writes,
per wake-up, every answer due and as many submits as the window has room for, in one write;
answers are matched by sequence number in a dict. Outcomes:

=============================================  ==============================================
what happened                                  result
=============================================  ==============================================
every part ESME_ROK                            ``accepted``, provider id = first part's id
first part ESME_RTHROTTLED / ESME_RMSGQFUL     ``retry`` with ``retry_after`` (1 s): the
                                               sender slows down; the session pauses 1 s
first part a ``retry`` status (codec table)    ``retry``
first part a ``permanent`` status              ``rejected``, error = the status name and code
a later part throttled or ``retry``            that part again after the pause (5 times),
                                               then ``rejected`` "... k of n parts were sent"
a later part ``permanent``                     ``rejected``, "... on part k+1; k of n parts
                                               were sent" (the rest is not sent)
no resp within ``timeout``                     ``unknown``, error "timeout: ..."
the connection lost after the write            ``unknown``, error "connection_lost: ..."
no session could be bound (never written)      ``retry``; the whole call raises
                                               ``TransientGatewayError(unsent=True)`` when
                                               nothing of it was written
bind refused: bad system_id / password         ``PermanentGatewayError`` (and every later
                                               call), no reconnecting
=============================================  ==============================================

A ``generic_nack``, an ``unbind`` from the SMSC (answered first), a dead socket or an
unreadable stream close that session; it reconnects after 0.5 s, doubling to 30 s with
jitter while that fails, and the other sessions go on. After an ``unbind`` from the SMSC,
the submits still unanswered go again (on any session, in order): an SMSC answers what it
took before it unbinds, so those crossed its ``unbind`` on the wire and were not taken.
Submits a lost session had not written yet go through the others (or through it once it
is back); the next parts of a message half-sent on it wait for it, and end ``unknown``
(``connection_lost``) if reconnecting fails.

**Receipts and inbound.** A ``deliver_sm`` is answered only once the listener (the
engine's ``driver.listener``) returned for it. What arrives together is handed over
together: one ``listener.receipts([...])`` and one ``listener.inbound([...])`` per wake-up
of a session's storer, then each ``deliver_sm_resp``. If the listener raises, the answer
is ESME_RX_T_APPN (0x64, temporary application error), for the SMSC to deliver it again;
so is it when the driver has no listener. With more than ``max_pending_receipts`` received
and not yet stored, the answer is ESME_RTHROTTLED at once.

- A receipt (``codec.dlr``: TLVs, else the text form; ids normalised and converted by
  ``receipt_ids``) becomes a ``Receipt`` of state ``delivered`` or ``undelivered`` (error:
  the stat word and the network error); ``enroute``/``accepted``/``unknown`` ones are
  acknowledged and dropped, as are unreadable ones (with ESME_RX_P_APPN).
- A long message is delivered when all its parts' receipts say so, undelivered as soon
  as one does not (``receipts.py``; the part ids are remembered, the oldest forgotten past
  200,000). An id the driver does not know (after a restart) passes as it is. A receipt
  that may belong to a part whose ``submit_sm_resp`` has not come yet is held until it has.
- Any other ``deliver_sm`` is an ``Inbound``: ``phone`` with a "+" for an international
  source (ton 1), text decoded by ``data_coding`` (GSM-7, UCS-2, Latin-1, ASCII) with any
  UDH removed. Parts of a concatenated reply are passed one by one (a STOP fits one).

SMPP receipts arrive on the session, never over HTTP: ``parse_receipts`` raises InputError.
"""

from __future__ import annotations

import logging
import random as _random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import anyio
import msgspec
from anyio.abc import ByteStream, TaskGroup

from engine.drivers import (
    Capabilities,
    Driver,
    DriverConfig,
    Inbound,
    OutboundMessage,
    Receipt,
    SendResult,
)
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from engine.hookspecs import hookimpl
from herald_smpp.codec import MESSAGE_PAYLOAD, Bind, DeliverSm, DeliverSmResp, SubmitSm, encode
from herald_smpp.codec.dlr import convert_id, is_receipt, normalise_id, parse_receipt
from herald_smpp.codec.parts import concatenation, decode_text, message_parts
from herald_smpp.codec.status import ESME_ROK, ESME_RTHROTTLED, describe
from herald_smpp.receipts import InFlight, ReceiptBook, Undo
from herald_smpp.session import Backoff, Call, Session, SessionKind, Submit

__all__ = ["SmppConfig", "SmppDriver", "SmppStatistics", "inbound_message"]

logger = logging.getLogger(__name__)

#: deliver_sm_resp status when a receipt could not be stored (the SMSC delivers it again).
ESME_RX_T_APPN = 0x64
#: ... when it can never be read (no message id): redelivering would not help.
ESME_RX_P_APPN = 0x65
#: Part ids of long messages remembered for folding their receipts.
REMEMBERED_PARTS = 200_000

Octet = Annotated[int, msgspec.Meta(ge=0, le=255)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]


class SmppConfig(DriverConfig, kw_only=True):
    """Options of the ``smpp`` driver (see the module docstring)."""

    host: Annotated[str, msgspec.Meta(min_length=1)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 2775
    system_id: Annotated[str, msgspec.Meta(min_length=1, max_length=15)]
    password: Annotated[str, msgspec.Meta(max_length=8)] = ""
    system_type: Annotated[str, msgspec.Meta(max_length=12)] = ""
    bind: Literal["transceiver", "transmitter"] = "transceiver"
    #: With ``bind = "transmitter"``: also a receiver bind per session (receipts, inbound).
    receiver: bool = False
    sessions: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    window: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    enquire_link: Seconds = 30.0
    tls: bool = False
    #: None: chosen per sender (1 for a number, 5 for a name).
    source_ton: Octet | None = None
    #: None: chosen per sender (1 for a number, 0 for a name).
    source_npi: Octet | None = None
    dest_ton: Octet = 1
    dest_npi: Octet = 1
    registered_delivery: Octet = 1
    long_messages: Literal["udh", "sar", "payload"] = "udh"
    timeout: Seconds = 10.0
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=3_600)] = 10.0
    receipt_ids: Literal["same", "decimal", "hex"] = "same"
    max_pending_receipts: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 10_000
    validity_period: Annotated[str, msgspec.Meta(max_length=16)] = ""
    service_type: Annotated[str, msgspec.Meta(max_length=5)] = ""
    #: ``herald serve`` and ``herald worker`` keep a session bound between runs, to take
    #: receipts and replies (``engine.listening``); false binds only while a run sends.
    listen: bool = True


class SmppStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the driver's sessions and counters (since it was made)."""

    #: Binds configured (receiver binds included) and bound now.
    sessions: int
    bound: int
    #: submit_sm written (one per part).
    submits: int
    #: submit_sm awaiting their submit_sm_resp now.
    in_flight: int
    #: Throttling answers (ESME_RTHROTTLED, ESME_RMSGQFUL).
    throttled: int
    #: Connections lost (and so reconnected, or being).
    reconnects: int
    #: Receipts and inbound messages the listener took.
    receipts: int
    inbound: int
    #: deliver_sm received and not yet stored (held ones included); held ones alone.
    pending_receipts: int
    held_receipts: int
    #: deliver_sm answered ESME_RTHROTTLED because too many were pending.
    backpressured: int
    #: Why the driver stopped for good (a refused bind), or None.
    failed: str | None


class SmppDriver(Driver):
    """Submits batches over SMPP binds (see the module docstring).

    ``sleep`` (the wait before reconnecting), ``random`` (its jitter) and ``backoff``
    (its delays) are for tests.
    """

    name = "smpp"
    Config = SmppConfig

    #: Seconds a session stops submitting after a throttling answer; also the
    #: ``retry_after`` of the messages it refused.
    throttle_pause = 1.0
    #: Seconds ``aclose`` waits for each session's unbind_resp.
    unbind_wait = 1.0

    def __init__(
        self,
        config: SmppConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        random: Callable[[], float] = _random.random,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(config, gateway=gateway, base_dir=base_dir)
        c = config
        self.config: SmppConfig = c
        name = f"gateway {gateway!r}" if gateway else "the SMSC"
        self.where = f"{name} at {c.host}:{c.port}"
        self.timeout = c.timeout
        self.enquire_link = c.enquire_link
        self.connect_timeout = c.connect_timeout
        self.capabilities = Capabilities(
            max_batch=c.sessions * c.window, supports_dlr=True, idempotent=False
        )
        self.failed: PermanentGatewayError | None = None
        backoff = backoff or Backoff(random=random)
        kinds: list[SessionKind] = [c.bind] * c.sessions
        if c.bind == "transmitter" and c.receiver:
            kinds += ["receiver"] * c.sessions
        self._sessions = [
            Session(self, i, k, window=c.window, endpoint=self._connect, backoff=backoff,
                    sleep=sleep)
            for i, k in enumerate(kinds)
        ]
        self._submitters = [s for s in self._sessions if s.submits]
        self._todo: deque[Submit] = deque()
        self._book = ReceiptBook(limit=REMEMBERED_PARTS)
        self._inflight = InFlight()
        self._held: list[tuple[int, Session, int, DeliverSm]] = []
        self._waiting = 0  # deliver_sm received, not yet answered
        self._pump_stopped: anyio.Event | None = None
        self._serving: set[anyio.CancelScope] = set()
        self._closed = False
        self._reference = int(random() * 0x10000)
        self._sources: dict[str, tuple[int, int, str]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._last_error = ""
        self._receipts = self._inbound = self._backpressured = 0

    # -- the engine's interface ------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Submit ``messages``; one result per message (see the module docstring)."""
        if not messages:
            return []
        if self.failed is not None:
            raise self.failed
        if self._closed:
            raise TransientGatewayError(f"{self.where}: the driver is closed", unsent=True)
        self._fail_fast()
        call = Call(len(messages))
        submits = self._prepare(call, messages)
        if submits:
            self._todo.extend(submits)
            for session in self._submitters:
                session.wake()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._attend, tg)
                    await call.done.wait()
                    tg.cancel_scope.cancel()
            finally:
                call.over = True
        results: list[SendResult] = call.results  # type: ignore[assignment]
        if not call.written:
            if self.failed is not None:
                raise self.failed
            unsent = [r for r in results if r.status == "retry"]
            if unsent and len(unsent) == len(results):
                raise TransientGatewayError(unsent[0].error or self.where, unsent=True)
        return results

    async def serve(self) -> None:
        """Keep the sessions bound and read until cancelled or ``aclose()``: receipts,
        inbound messages and keep-alives between batches too (binds them now)."""
        if self._closed or self.failed is not None:
            return
        with anyio.CancelScope() as scope:
            self._serving.add(scope)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._attend, tg)
                    await anyio.sleep_forever()
            finally:
                self._serving.discard(scope)

    async def listen(self) -> None:
        """``serve()`` for ``engine.listening`` (``herald serve`` and ``herald worker``
        keep the gateway bound between runs); raises the bind's refusal, for good
        (``PermanentGatewayError``), once a bind was refused."""
        if self.failed is None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.serve)
                while self.failed is None and not self._closed:
                    await self._stopped_event().wait()  # a pump stopped: a refused bind?
                tg.cancel_scope.cancel()
        if self.failed is not None:
            raise self.failed

    async def aclose(self) -> None:
        """Unbind every session (waiting ``unbind_wait`` s for each answer) and close
        them. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        for scope in list(self._serving):
            scope.cancel()
        with anyio.move_on_after(self.unbind_wait + 1):
            while any(s.pumped for s in self._sessions):
                stopped = self._stopped_event()
                await stopped.wait()
        async with anyio.create_task_group() as tg:
            for session in self._sessions:
                session.unbinding = True
                if session.stream is not None:
                    tg.start_soon(session.unbind, self.unbind_wait)

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """Not over HTTP: receipts come on the SMPP session."""
        raise InputError(f"the smpp driver takes receipts on its SMPP session, not over HTTP "
                         f"({self.where})")

    def statistics(self) -> SmppStatistics:
        sessions = self._sessions
        return SmppStatistics(
            sessions=len(sessions),
            bound=sum(s.bound for s in sessions),
            submits=sum(s.submitted for s in sessions),
            in_flight=sum(s.in_flight for s in sessions),
            throttled=sum(s.throttled for s in sessions),
            reconnects=sum(s.reconnects for s in sessions),
            receipts=self._receipts,
            inbound=self._inbound,
            pending_receipts=self._waiting,
            held_receipts=len(self._held),
            backpressured=self._backpressured,
            failed=None if self.failed is None else str(self.failed),
        )

    # -- calls and pumps -------------------------------------------------------------------

    def _stopped_event(self) -> anyio.Event:
        if self._pump_stopped is None:
            self._pump_stopped = anyio.Event()
        return self._pump_stopped

    async def _attend(self, tg: TaskGroup) -> None:
        """Keep every session pumped, starting pumps in ``tg`` where none runs."""
        while True:
            stopped = self._stopped_event()
            if self.failed is None and not self._closed:
                for session in self._sessions:
                    if not session.pumped and not session.unbinding:
                        session.pumped = True
                        tg.start_soon(self._pump, session)
            await stopped.wait()

    async def _pump(self, session: Session) -> None:
        try:
            await session.pump()
        finally:
            session.pumped = False
            stopped, self._pump_stopped = self._pump_stopped, None
            if stopped is not None:
                stopped.set()

    def _fail_fast(self) -> None:
        """Raise when no session is bound, each failed to connect, and none will try again
        yet: the engine waits (``retry_after``) instead of this call."""
        submitters = self._submitters
        if any(s.bound or s.failures == 0 for s in submitters):
            return
        wait = min(s.next_attempt for s in submitters) - anyio.current_time()
        if wait > 0:
            raise TransientGatewayError(
                f"{self.where}: cannot connect ({self._last_error}); next attempt in "
                f"{wait:.1f} s", unsent=True, retry_after=wait)

    def _give_up_unsent(self, error: str) -> None:
        todo = self._todo
        while todo:
            submit = todo.popleft()
            if not submit.call.over:
                submit.settle("retry", error=error)

    # -- messages to parts -----------------------------------------------------------------

    def _prepare(self, call: Call, messages: Sequence[OutboundMessage]) -> list[Submit]:
        c = self.config
        mode = c.long_messages
        submits: list[Submit] = []
        for index, m in enumerate(messages):
            ton, npi, source = self._source(m.sender)
            to = m.to[1:] if c.dest_ton == 1 and m.to.startswith("+") else m.to
            self._reference = reference = (self._reference + 1) & 0xFFFF
            try:
                parts = message_parts(m.text, mode=mode, reference=reference)
                templates = [
                    encode(SubmitSm(
                        service_type=c.service_type, source_addr_ton=ton, source_addr_npi=npi,
                        source_addr=source, dest_addr_ton=c.dest_ton, dest_addr_npi=c.dest_npi,
                        destination_addr=to, esm_class=p.esm_class,
                        validity_period=c.validity_period,
                        registered_delivery=c.registered_delivery, data_coding=p.data_coding,
                        short_message=p.short_message, tlvs=p.tlvs,
                    ))
                    for p in parts
                ]
            except ValueError as err:
                call.settle(index, SendResult(m.id, "rejected",
                                              error=f"cannot be sent over SMPP: {err}"))
                continue
            submits.append(Submit(call, index, m.id, templates))
        return submits

    def _source(self, sender: str) -> tuple[int, int, str]:
        known = self._sources.get(sender)
        if known is not None:
            return known
        c = self.config
        digits = sender[1:] if sender.startswith("+") else sender
        number = digits.isascii() and digits.isdigit()
        ton = c.source_ton if c.source_ton is not None else (1 if number else 5)
        npi = c.source_npi if c.source_npi is not None else (1 if number else 0)
        address = digits if number and ton == 1 else sender
        if len(self._sources) < 1000:
            self._sources[sender] = (ton, npi, address)
        return ton, npi, address

    # -- what sessions ask of their owner (session.Owner) ----------------------------------

    def bind_pdu(self, kind: SessionKind) -> Bind:
        c = self.config
        return Bind(kind=kind, system_id=c.system_id, password=c.password,
                    system_type=c.system_type)

    async def _connect(self) -> ByteStream:
        c = self.config
        if not c.tls:
            return await anyio.connect_tcp(c.host, c.port)
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return await anyio.connect_tcp(c.host, c.port, tls=True, ssl_context=self._ssl,
                                       tls_hostname=c.host)

    def next_first_part(self) -> Submit | None:
        todo = self._todo
        while todo:
            submit = todo.popleft()
            if not submit.call.over and submit.call.results[submit.index] is None:
                return submit
        return None

    def requeue(self, submit: Submit) -> None:
        self._todo.appendleft(submit)
        for session in self._submitters:
            session.wake()

    def written(self, submit: Submit) -> int | None:
        return self._inflight.written() if len(submit.parts) > 1 else None

    def accepted(self, submit: Submit, message_id: str) -> None:
        part_id = normalise_id(message_id)
        ids = submit.ids
        ids.append(part_id)
        total = len(submit.parts)
        if total > 1:
            self._book.accepted(ids[0], part_id, total)
        if len(ids) == total:
            submit.settle("accepted", provider_id=ids[0])

    def answered(self, ticket: int) -> None:
        self._inflight.answered(ticket)
        if self._held:
            self._release_held()

    def bound(self, session: Session) -> None:
        logger.debug("%s: session %d bound as %s", self.where, session.index, session.kind)

    def lost(self, session: Session, reason: str) -> None:
        logger.info("%s: session %d lost (%s); reconnecting", self.where, session.index,
                    reason)
        self._waiting -= len(session.deliveries)
        session.deliveries.clear()

    def connect_failed(self, session: Session, error: str) -> None:
        self._last_error = error
        logger.info("%s: session %d could not bind: %s", self.where, session.index, error)
        parts = session.next_parts
        while parts:
            submit = parts.popleft()
            if not submit.call.over:
                submit.settle("unknown", error=f"connection_lost: {self.where}: {error}"
                                               f"{submit.sent_so_far()}")
        submitters = self._submitters
        if not any(s.bound for s in submitters) and all(s.failures for s in submitters):
            self._give_up_unsent(f"{self.where}: cannot connect: {error}")

    def refused(self, session: Session, status: int) -> None:
        c = self.config
        self.failed = PermanentGatewayError(
            f"{self.where} refused the bind of system_id {c.system_id!r} with its password "
            f"({describe(status)}): check system_id and password of [gateways."
            f"{self.gateway or '...'}]", code=describe(status).split()[0])
        logger.error("%s", self.failed)
        self._give_up_unsent(str(self.failed))

    def delivered(self, session: Session, pdu: DeliverSm) -> int | None:
        if self.listener is None:
            return ESME_RX_T_APPN
        if self._waiting >= self.config.max_pending_receipts:
            self._backpressured += 1
            return ESME_RTHROTTLED
        self._waiting += 1
        session.deliveries.append((session.epoch, pdu, False))
        session.wake_storer()
        return None

    async def store(self, session: Session) -> None:
        """The storer of one connection: what it received, to the listener, then answered."""
        while True:
            await session.wait_for_deliveries()
            items = list(session.deliveries)
            session.deliveries.clear()
            # Shielded, so a call that returns meanwhile does not cut storing short (and
            # the SMSC waiting to send them again); bounded, so a hung store cannot hang us.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + (self.timeout or 10.0)
                await self._store(session, items)

    async def _store(self, session: Session, items: list[tuple[int, DeliverSm, bool]]) -> None:
        c = self.config
        epoch = session.epoch
        receipts: list[Receipt] = []
        receipt_acks: list[int] = []
        inbound: list[Inbound] = []
        inbound_acks: list[int] = []
        answers: list[tuple[int, int]] = []
        undo: Undo = []
        book = self._book
        for item_epoch, pdu, released in items:
            if item_epoch != epoch:
                self._waiting -= 1
                continue
            if not is_receipt(pdu):
                inbound.append(inbound_message(pdu))
                inbound_acks.append(pdu.sequence)
                continue
            try:
                report = parse_receipt(pdu)
                part_id = convert_id(report.message_id, c.receipt_ids)
            except ValueError as err:
                logger.warning("%s: an unreadable receipt, dropped: %s", self.where, err)
                answers.append((pdu.sequence, ESME_RX_P_APPN))
                continue
            state = report.state
            if state != "delivered" and state != "undelivered":
                answers.append((pdu.sequence, ESME_ROK))
                continue
            if not released and not book.knows(part_id):
                mark = self._inflight.mark()
                if mark is not None:  # its submit_sm_resp may be on its way
                    self._held.append((mark, session, epoch, pdu))
                    continue
            error = None
            if state == "undelivered":
                error = report.stat if report.error is None else f"{report.stat} ({report.error})"
            receipt = book.apply(part_id, state, error, report.done_at, undo)
            if receipt is not None:
                receipts.append(receipt)
            receipt_acks.append(pdu.sequence)
        listener = self.listener
        receipts_status = inbound_status = ESME_ROK
        try:
            if receipts and listener is not None:
                try:
                    await listener.receipts(receipts)
                    self._receipts += len(receipts)
                except Exception:
                    logger.exception("%s: storing %d receipts failed; the SMSC will send "
                                     "them again", self.where, len(receipts))
                    book.undo(undo)
                    receipts_status = ESME_RX_T_APPN
            if inbound and listener is not None:
                try:
                    await listener.inbound(inbound)
                    self._inbound += len(inbound)
                except Exception:
                    logger.exception("%s: storing %d inbound messages failed; the SMSC will "
                                     "send them again", self.where, len(inbound))
                    inbound_status = ESME_RX_T_APPN
        except BaseException:  # cancelled (storing took too long): nothing is answered
            if receipts_status == ESME_ROK:
                book.undo(undo)
            self._waiting -= len(answers) + len(receipt_acks) + len(inbound_acks)
            raise
        answers += [(seq, receipts_status) for seq in receipt_acks]
        answers += [(seq, inbound_status) for seq in inbound_acks]
        self._waiting -= len(answers)
        if answers and session.epoch == epoch and session.bound:
            session.outbox += [encode(DeliverSmResp(sequence=seq, status=status))
                               for seq, status in answers]
            session.wake()

    def _release_held(self) -> None:
        keep: list[tuple[int, Session, int, DeliverSm]] = []
        inflight = self._inflight
        for item in self._held:
            mark, session, epoch, pdu = item
            if not inflight.passed(mark):
                keep.append(item)
            elif session.epoch == epoch and session.bound:
                session.deliveries.append((epoch, pdu, True))
                session.wake_storer()
            else:
                self._waiting -= 1  # its connection is gone: the SMSC sends it again
        self._held = keep


def inbound_message(pdu: DeliverSm) -> Inbound:
    """A ``deliver_sm`` that is not a receipt, as Herald's ``Inbound``."""
    data = pdu.short_message
    if not data:
        data = pdu.tlvs.get(MESSAGE_PAYLOAD, b"")
        text = decode_text(pdu.data_coding, data)
    else:
        _, user = concatenation(pdu.esm_class, data, pdu.tlvs)
        text = decode_text(pdu.data_coding, user)
    phone = pdu.source_addr
    if pdu.source_addr_ton == 1 and not phone.startswith("+"):
        phone = "+" + phone
    return Inbound(phone=phone, text=text, to=pdu.destination_addr or None)



@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [SmppDriver]
