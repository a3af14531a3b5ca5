"""One SMPP 3.4 bind on anyio: connect, bind, carry submits in a window, read, reconnect.

A ``Session`` is one TCP (or TLS) connection to the SMSC, bound as a transceiver,
transmitter or receiver. It is driven by ``pump()``: connect and bind (after the backoff
owed by the last failure), then three tasks for as long as the connection lasts:

- the **reader** decodes what arrives and settles what it can at once, synchronously:
  a ``submit_sm_resp`` settles its part (a dict, sequence number -> waiting part), an
  ``enquire_link`` or ``unbind`` from the SMSC is answered, a ``deliver_sm`` is handed to
  the owner (the driver) for storing. It also keeps the clocks: a submit unanswered after
  ``timeout`` ends ``unknown``, an ``enquire_link`` goes out after ``enquire_link`` idle
  seconds, and one unanswered within ``timeout`` means the socket is dead;
- the **writer** is the only task that writes: on each wake-up it takes the queued
  answers and as many submits as the window has room for (the next parts of messages
  already under way on this session first, then first parts from the owner's queue),
  and writes them all at once. Writes are shielded from cancellation (with a deadline),
  so a PDU is never cut in half;
- the **storer** (the owner's) hands received ``deliver_sm`` to the listener and queues
  their answers only once that returned.

A connection that fails (end of stream, a socket error, a ``generic_nack``, an
``unbind`` from the SMSC, a dead ``enquire_link``, an unreadable stream) is closed: its
unanswered submits end ``unknown`` (``connection_lost``), and the pump connects again after
0.5 s, doubling to 30 s with jitter while connecting fails. A bind refused for its
credentials is not retried: the owner is told and the pump ends.

Which task runs ``pump()`` is the owner's business (see the driver's docstring): it may be
cancelled at any checkpoint and started again later in another task; everything that must
survive that (the bound stream, the window, the backoff) lives on the session.
"""

from __future__ import annotations

import random as _random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import anyio
from anyio.abc import ByteStream

from engine.drivers import SendResult
from engine.errors import redact
from herald_smpp.codec import (
    Bind,
    BindResp,
    CodecError,
    Decoder,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    encode,
    is_response,
)
from herald_smpp.codec.status import (
    BIND_CREDENTIAL_ERRORS,
    ESME_RINVCMDID,
    ESME_ROK,
    describe,
    kind,
)

__all__ = ["Backoff", "Call", "Endpoint", "Owner", "Session", "Submit"]

SessionKind = Literal["transceiver", "transmitter", "receiver"]

#: Sequence numbers run 1..0x7FFFFFFF and wrap.
_MAX_SEQUENCE = 0x7FFFFFFF
#: A part answered "throttled" or "retry" after earlier parts went out is sent again (after
#: the pause) at most this many times; the message is then given up as partly sent.
PART_TRIES = 5
_READ_SIZE = 65536
_SMSC_UNBOUND = "the SMSC unbound the session"
_FAILURES = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream,
             ssl.SSLError)


class Backoff:
    """Seconds to wait before connecting again: ``first`` doubling to ``most``, each drawn
    between half and all of that ("equal jitter", so sessions do not reconnect in step)."""

    def __init__(self, first: float = 0.5, most: float = 30.0,
                 random: Callable[[], float] = _random.random) -> None:
        self.first = first
        self.most = most
        self.random = random

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failed attempts in a row (0: after a lost connection)."""
        base = min(self.most, self.first * float(2 ** min(failures, 30)))
        return base * (0.5 + self.random() / 2)


class Call:
    """One ``send_batch`` call: a result per message, settled by whichever task learns it."""

    __slots__ = ("done", "over", "results", "unsettled", "written")

    def __init__(self, count: int) -> None:
        self.results: list[SendResult | None] = [None] * count
        self.unsettled = count
        self.done = anyio.Event()
        #: Something of this call was written to a socket (the SMSC may have it).
        self.written = False
        #: The call returned (or was cancelled): its queued messages are not to be sent.
        self.over = False

    def settle(self, index: int, result: SendResult) -> None:
        if self.results[index] is None:
            self.results[index] = result
            self.unsettled -= 1
            if self.unsettled == 0:
                self.done.set()


class Submit:
    """One message under way: its parts (encoded with sequence 0), the next to write, the
    message ids of the parts accepted so far, and the session its parts go through."""

    __slots__ = ("call", "ids", "index", "message_id", "next", "parts", "session", "tries")

    def __init__(self, call: Call, index: int, message_id: str, parts: list[bytes]) -> None:
        self.call = call
        self.index = index
        self.message_id = message_id
        self.parts = parts
        self.next = 0
        self.ids: list[str] = []
        self.session: Session | None = None
        self.tries = 0

    def settle(self, status: Literal["accepted", "rejected", "retry", "unknown"], *,
               provider_id: str | None = None, error: str | None = None,
               retry_after: float | None = None) -> None:
        self.call.settle(self.index, SendResult(self.message_id, status, provider_id, error,
                                                retry_after))

    def sent_so_far(self) -> str:
        """``"; 1 of 3 parts were sent"``: said of a message given up half-way."""
        done = len(self.ids)
        return f"; {done} of {len(self.parts)} parts were sent" if done else ""


class Endpoint(Protocol):
    """How the session reaches the SMSC (``connect_tcp``, TLS or not)."""

    def __call__(self) -> Awaitable[ByteStream]: ...


class Owner(Protocol):
    """What a session needs of the driver that owns it."""

    @property
    def where(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def enquire_link(self) -> float: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def throttle_pause(self) -> float: ...
    @property
    def failed(self) -> BaseException | None: ...

    def bind_pdu(self, kind: SessionKind) -> Bind: ...
    def next_first_part(self) -> Submit | None: ...
    def requeue(self, submit: Submit) -> None: ...
    def accepted(self, submit: Submit, message_id: str) -> None: ...
    def written(self, submit: Submit) -> int | None: ...
    def answered(self, ticket: int) -> None: ...
    def delivered(self, session: Session, pdu: DeliverSm) -> int | None: ...
    async def store(self, session: Session) -> None: ...
    def bound(self, session: Session) -> None: ...
    def lost(self, session: Session, reason: str) -> None: ...
    def connect_failed(self, session: Session, error: str) -> None: ...
    def refused(self, session: Session, status: int) -> None: ...


class Session:
    """One bind to the SMSC (see the module docstring)."""

    def __init__(self, owner: Owner, index: int, kind: SessionKind, *, window: int,
                 endpoint: Endpoint, backoff: Backoff,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        self.owner = owner
        self.index = index
        self.kind: SessionKind = kind
        #: Whether it carries submits (a receiver bind only takes deliver_sm).
        self.submits = kind != "receiver"
        self.window = window
        self.endpoint = endpoint
        self.backoff = backoff
        self.sleep = sleep
        self.stream: ByteStream | None = None
        self.decoder = Decoder()
        #: Connections made so far: a deliver_sm is answered on the one it came on only.
        self.epoch = 0
        self.bound = False
        #: A pump is running (in some caller's task group).
        self.pumped = False
        #: Written submits awaiting their resp: sequence -> (submit, part, ticket).
        self.pending: dict[int, tuple[Submit, int, int | None]] = {}
        #: (deadline, sequence) of written submits, in the order written.
        self._deadlines: deque[tuple[float, int]] = deque()
        #: Messages whose next part is to go on this session.
        self.next_parts: deque[Submit] = deque()
        #: Encoded answers (deliver_sm_resp, enquire_link_resp, ...) for the writer.
        self.outbox: list[bytes] = []
        #: Received deliver_sm waiting to be stored: (epoch, pdu, released from holding).
        self.deliveries: deque[tuple[int, DeliverSm, bool]] = deque()
        self.paused_until = 0.0
        self.failures = 0
        self.next_attempt = 0.0
        self.last_rx = 0.0
        self._sequence = 0
        self._probe: tuple[int, float] | None = None  # enquire_link out: (sequence, deadline)
        #: The writer waits for an enquire_link_resp before submitting (after idling).
        self._probing = False
        self._closing_reason: str | None = None  # set by an SMSC unbind: close once flushed
        self._lost: str | None = None
        self._scope: anyio.CancelScope | None = None
        self._read_scope: anyio.CancelScope | None = None  # the reader's wait, to shorten
        self._wake_writer: anyio.Event | None = None
        self._wake_storer: anyio.Event | None = None
        self.unbinding = False
        self._unbind_seq = 0
        #: PDUs read with the bind_resp, for the reader to handle first.
        self.early: list[Pdu] = []
        self.unbound: anyio.Event | None = None
        # statistics
        self.submitted = 0
        self.reconnects = 0
        self.throttled = 0

    # -- small helpers ------------------------------------------------------------------

    def next_sequence(self) -> int:
        seq = self._sequence + 1
        if seq > _MAX_SEQUENCE:
            seq = 1
        self._sequence = seq
        return seq

    def wake(self) -> None:
        """Something for the writer: answers queued, window room, parts ready."""
        if self._wake_writer is not None:
            self._wake_writer.set()

    def wake_storer(self) -> None:
        if self._wake_storer is not None:
            self._wake_storer.set()

    async def wait_for_deliveries(self) -> None:
        """Until ``deliveries`` holds something (called by the owner's storer)."""
        while not self.deliveries:
            event = self._wake_storer = anyio.Event()
            await event.wait()

    @property
    def ready(self) -> bool:
        """Bound and able to take submits now."""
        return (self.bound and self.submits and not self._probing and not self.unbinding
                and self._closing_reason is None and self._lost is None)

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def lose(self, reason: str) -> None:
        """End this connection (first reason wins): its pump reconnects."""
        if self._lost is None:
            self._lost = reason
            if self._scope is not None:
                self._scope.cancel()

    # -- the pump ------------------------------------------------------------------------

    async def pump(self) -> None:
        """Keep this session bound and read, until cancelled or the owner fails."""
        while self.owner.failed is None and not self.unbinding:
            if self.stream is None:
                if not await self._connect():
                    continue
            await self._serve()

    async def _connect(self) -> bool:
        delay = self.next_attempt - anyio.current_time()
        if delay > 0:
            await self.sleep(delay)
        owner = self.owner
        stream: ByteStream | None = None
        try:
            with anyio.fail_after(owner.connect_timeout or None):
                stream = await self.endpoint()
                resp = await self._bind(stream)
        except BaseException as err:
            if stream is not None:
                await anyio.aclose_forcefully(stream)
            if not isinstance(err, (*_FAILURES, TimeoutError, CodecError, _BindFailed)):
                raise
            if isinstance(err, TimeoutError):
                error = f"no bind_resp within {owner.connect_timeout:g} s"
            elif isinstance(err, _BindFailed):
                if err.status in BIND_CREDENTIAL_ERRORS:
                    owner.refused(self, err.status)
                    return False
                error = f"bind refused: {describe(err.status)}"
            else:
                error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            self.failures += 1
            self.next_attempt = anyio.current_time() + self.backoff.delay(self.failures)
            owner.connect_failed(self, redact(error))
            return False
        del resp
        self.stream = stream
        self.epoch += 1
        self.bound = True
        self.failures = 0
        self.last_rx = anyio.current_time()
        self._lost = self._closing_reason = None
        self._probe = None
        self._probing = False
        self.paused_until = 0.0
        owner.bound(self)
        return True

    async def _bind(self, stream: ByteStream) -> BindResp:
        bind = self.owner.bind_pdu(self.kind)
        bind.sequence = seq = self.next_sequence()
        await stream.send(encode(bind))
        decoder = self.decoder = Decoder()
        self.early = []
        while True:
            data = await stream.receive(_READ_SIZE)
            pdus = decoder.feed(data)
            for i, pdu in enumerate(pdus):
                if isinstance(pdu, BindResp) and pdu.sequence == seq:
                    if pdu.status != ESME_ROK:
                        raise _BindFailed(pdu.status)
                    # an SMSC sends what it holds (receipts) right after the bind_resp,
                    # often in the same segment: the reader takes those first
                    self.early = pdus[i + 1:]
                    return pdu
                if isinstance(pdu, GenericNack) and pdu.sequence == seq:
                    raise _BindFailed(pdu.status)
                if isinstance(pdu, EnquireLink):
                    await stream.send(encode(EnquireLinkResp(sequence=pdu.sequence)))

    async def _serve(self) -> None:
        """One connection's life: reader, writer and storer until it is lost."""
        if self.owner.enquire_link and (
            anyio.current_time() - self.last_rx >= self.owner.enquire_link
        ):
            # Nobody read this socket for a while (between calls): make sure it is alive
            # before a submit goes out on it, or the submit would be lost with it.
            self._probing = True
            self._send_probe(anyio.current_time())
        self._wake_writer = anyio.Event()
        self._wake_storer = anyio.Event()
        self._scope = anyio.CancelScope()
        try:
            if self._lost is None:
                with self._scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._read)
                        tg.start_soon(self._write)
                        tg.start_soon(self.owner.store, self)
        finally:
            self._scope = None
            if self._lost is not None:  # also when the pump is being cancelled meanwhile
                with anyio.CancelScope(shield=True):
                    await self._close(self._lost)

    async def _close(self, reason: str) -> None:
        stream, self.stream = self.stream, None
        self.bound = False
        if stream is not None:
            await anyio.aclose_forcefully(stream)
        where = self.owner.where
        pending, self.pending = self.pending, {}
        self._deadlines.clear()
        self.outbox.clear()
        owner = self.owner
        if reason == _SMSC_UNBOUND:
            # The SMSC answers what it took before it unbinds: what is still unanswered
            # crossed its unbind on the wire and was not taken. It goes again, in order.
            for submit, part, ticket in reversed(pending.values()):
                if ticket is not None:
                    owner.answered(ticket)
                submit.next = part
                if part == 0:
                    submit.session = None
                    owner.requeue(submit)
                else:
                    self.next_parts.appendleft(submit)
            pending = {}
        for submit, _part, ticket in pending.values():
            if ticket is not None:
                owner.answered(ticket)
            submit.settle("unknown", error=f"connection_lost: {where}: {reason}; "
                                           f"no submit_sm_resp came{submit.sent_so_far()}")
        self.reconnects += 1
        self.next_attempt = anyio.current_time() + self.backoff.delay(0)
        owner.lost(self, reason)

    # -- reading -------------------------------------------------------------------------

    async def _read(self) -> None:
        stream = self.stream
        assert stream is not None
        decoder = self.decoder
        early, self.early = self.early, []
        if early:  # PDUs that came with the bind_resp
            now = anyio.current_time()
            for pdu in early:
                self._handle(pdu, now)
        # ... and what came after them, incomplete, is in the decoder's buffer
        data = b""
        while True:
            if data or decoder.buffered:
                now = anyio.current_time()
                self.last_rx = now
                while True:
                    try:
                        pdus = decoder.feed(data)
                    except CodecError as err:
                        if err.fatal:
                            self.outbox.append(encode(GenericNack(
                                sequence=err.sequence or 0, status=err.status)))
                            self._closing_reason = f"an unreadable PDU: {err}"
                            break
                        self._answer_malformed(err)
                        data = b""
                        continue
                    for pdu in pdus:
                        self._handle(pdu, now)
                    break
            self._timers(anyio.current_time())
            if self._lost is not None:
                return
            if self.outbox:
                self.wake()
            data = b""
            with anyio.CancelScope(deadline=self._next_timer()) as self._read_scope:
                try:
                    data = await stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    self.lose("the SMSC closed the connection")
                    return
                except _FAILURES as err:
                    self.lose(f"{type(err).__name__}: {err}")
                    return
                finally:
                    self._read_scope = None

    def _answer_malformed(self, err: CodecError) -> None:
        cid, seq = err.command_id, err.sequence or 0
        if cid is not None and not is_response(cid):
            # the PDU's own response, when we know it, else generic_nack
            if cid == DeliverSm.command_id:
                self.outbox.append(encode(DeliverSmResp(sequence=seq, status=err.status)))
                return
            self.outbox.append(encode(GenericNack(sequence=seq, status=err.status)))
        elif cid == SubmitSmResp.command_id and seq in self.pending:
            self._submit_answered(seq, err.status or 0xFF, "", anyio.current_time())

    def _handle(self, pdu: Pdu, now: float) -> None:
        cls = type(pdu)
        if cls is SubmitSmResp:
            self._submit_answered(pdu.sequence, pdu.status, pdu.message_id, now)  # type: ignore[union-attr]
        elif cls is DeliverSm:
            status = self.owner.delivered(self, pdu)  # type: ignore[arg-type]
            if status is not None:
                self.outbox.append(encode(DeliverSmResp(sequence=pdu.sequence, status=status)))
        elif cls is EnquireLink:
            self.outbox.append(encode(EnquireLinkResp(sequence=pdu.sequence)))
        elif cls is EnquireLinkResp:
            if self._probe is not None and self._probe[0] == pdu.sequence:
                self._probe = None
                if self._probing:
                    self._probing = False
                    self.wake()
        elif cls is Unbind:
            self.outbox.append(encode(UnbindResp(sequence=pdu.sequence)))
            self._closing_reason = _SMSC_UNBOUND
        elif cls is UnbindResp:
            if self.unbinding and pdu.sequence == self._unbind_seq and self.unbound is not None:
                self.unbound.set()
        elif cls is GenericNack:
            entry = self.pending.get(pdu.sequence)
            if entry is not None:
                self._submit_answered(pdu.sequence, pdu.status or 0xFF, "", now)
            self.lose(f"the SMSC answered generic_nack {describe(pdu.status)}")
        elif not is_response(pdu.command_id):
            # a request we do not serve (data_sm, query_sm, outbind, unknown...)
            self.outbox.append(encode(GenericNack(sequence=pdu.sequence, status=ESME_RINVCMDID)))

    def _submit_answered(self, seq: int, status: int, message_id: str, now: float) -> None:
        entry = self.pending.pop(seq, None)
        if entry is None:
            return  # a late answer to a submit that timed out
        submit, part, ticket = entry
        owner = self.owner
        if status == ESME_ROK:
            owner.accepted(submit, message_id)
            if ticket is not None:
                owner.answered(ticket)
            if submit.next < len(submit.parts):
                self.next_parts.append(submit)
        else:
            if ticket is not None:
                owner.answered(ticket)
            verdict = kind(status)
            if verdict == "throttled":
                self.throttled += 1
                self.paused_until = max(self.paused_until, now + owner.throttle_pause)
            if part == 0:
                if verdict == "throttled":
                    submit.settle("retry", error=f"{owner.where}: {describe(status)}",
                                  retry_after=owner.throttle_pause)
                elif verdict == "permanent" or verdict == "ok":
                    submit.settle("rejected", error=describe(status))
                else:
                    submit.settle("retry", error=f"{owner.where}: {describe(status)}")
            elif verdict in ("throttled", "retry") and submit.tries < PART_TRIES:
                submit.tries += 1
                submit.next = part  # the same part again, after the pause
                self.next_parts.appendleft(submit)
            else:
                submit.settle("rejected", error=f"{describe(status)} on part {part + 1}"
                                                f"{submit.sent_so_far()}")
        # clear answered entries off the front of the deadline queue
        deadlines, pending = self._deadlines, self.pending
        while deadlines and deadlines[0][1] not in pending:
            deadlines.popleft()
        self.wake()

    # -- clocks --------------------------------------------------------------------------

    def _next_timer(self) -> float:
        soonest = self._deadlines[0][0] if self._deadlines else float("inf")
        if self._probe is not None:
            soonest = min(soonest, self._probe[1])
        elif self.owner.enquire_link:
            soonest = min(soonest, self.last_rx + self.owner.enquire_link)
        return soonest

    def _timers(self, now: float) -> None:
        deadlines, pending, owner = self._deadlines, self.pending, self.owner
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1] not in pending):
            _, seq = deadlines.popleft()
            entry = pending.pop(seq, None)
            if entry is None:
                continue
            submit, _part, ticket = entry
            if ticket is not None:
                owner.answered(ticket)
            submit.settle("unknown", error=f"timeout: {owner.where}: no submit_sm_resp within "
                                           f"{owner.timeout:g} s{submit.sent_so_far()}")
            self.wake()
        if self._probe is not None:
            if now >= self._probe[1]:
                self.lose(f"no enquire_link_resp within {owner.timeout:g} s")
        elif owner.enquire_link and now - self.last_rx >= owner.enquire_link:
            self._send_probe(now)

    def _send_probe(self, now: float) -> None:
        seq = self.next_sequence()
        self._probe = (seq, now + (self.owner.timeout or 10.0))
        self.outbox.append(encode(EnquireLink(sequence=seq)))
        self.wake()

    # -- writing -------------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            now = anyio.current_time()
            data = self._take(now)
            if data:
                await self._flush(data)
                if self._lost is not None:
                    return
                if self._closing_reason is not None and not self.outbox:
                    self.lose(self._closing_reason)
                    return
                continue
            event = self._wake_writer = anyio.Event()
            if self.paused_until > now and self.ready:
                with anyio.move_on_after(self.paused_until - now):
                    await event.wait()
            else:
                await event.wait()

    def _take(self, now: float) -> bytes:
        """What to write now: queued answers, then as many submits as the window holds."""
        out = self.outbox
        if self.ready and now >= self.paused_until:
            room = self.window - len(self.pending)
            if room > 0:
                owner = self.owner
                pending, deadlines = self.pending, self._deadlines
                next_parts = self.next_parts
                deadline = now + (owner.timeout or float("inf"))
                stop = owner.failed is not None
                if not deadlines and self._read_scope is not None:
                    # the reader waits on a later clock: have it wake for this deadline
                    self._read_scope.deadline = min(self._read_scope.deadline, deadline)
                while room > 0:
                    if next_parts:
                        submit = next_parts.popleft()
                        if submit.call.over:
                            continue
                    elif stop:
                        break
                    else:
                        first = owner.next_first_part()
                        if first is None:
                            break
                        submit = first
                        submit.session = self
                    part = submit.next
                    template = submit.parts[part]
                    seq = self.next_sequence()
                    out.append(template[:12] + seq.to_bytes(4, "big") + template[16:])
                    submit.next = part + 1
                    pending[seq] = (submit, part, owner.written(submit))
                    deadlines.append((deadline, seq))
                    submit.call.written = True
                    self.submitted += 1
                    room -= 1
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    async def _flush(self, data: bytes) -> None:
        stream = self.stream
        assert stream is not None
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + (self.owner.timeout or 30.0)
            try:
                await stream.send(data)
            except _FAILURES as err:
                self.lose(f"{type(err).__name__}: {err}")
                return
        if scope.cancelled_caught:
            self.lose(f"could not write for {self.owner.timeout:g} s")

    # -- unbinding -----------------------------------------------------------------------

    async def unbind(self, wait: float) -> None:
        """Unbind politely (wait up to ``wait`` s for the unbind_resp) and close. Called with
        no pump running; the owner's calls are over."""
        stream = self.stream
        self.unbinding = True
        if stream is None:
            return
        try:
            seq = self._unbind_seq = self.next_sequence()
            with anyio.move_on_after(wait):
                await stream.send(encode(Unbind(sequence=seq)))
                decoder = self.decoder
                done = False
                while not done:
                    data = await stream.receive(_READ_SIZE)
                    try:
                        pdus = decoder.feed(data)
                    except CodecError:
                        break
                    for pdu in pdus:
                        if isinstance(pdu, UnbindResp) and pdu.sequence == seq:
                            done = True
        except _FAILURES:
            pass
        finally:
            self.stream = None
            self.bound = False
            await anyio.aclose_forcefully(stream)
        where = self.owner.where
        for submit, _part, ticket in self.pending.values():
            if ticket is not None:
                self.owner.answered(ticket)
            submit.settle("unknown", error=f"connection_lost: {where}: the driver was closed")
        self.pending.clear()


class _BindFailed(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(describe(status))
        self.status = status
