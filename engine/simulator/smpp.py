"""``SmppSimulator``: an SMSC speaking SMPP 3.4 on loopback, with fault knobs, for tests and
benchmarks of the ``smpp`` driver.

It is written apart from Herald's SMPP codec (``herald_smpp``: never imported here) so that
it is an independent oracle: its own framing, PDU bodies and GSM 03.38 table live in
``smpp_wire``. What it does is set by ``SmppOptions`` (``smpp_options``); what it saw
(kept by ``smpp_record``) is in ``received`` (every submit_sm), ``messages`` (whole
messages, concatenated ones reassembled), ``counts`` (whole messages per destination and
text), ``acked_receipts`` and ``statistics()``.

Python::

    async with SmppSimulator(system_id="herald", password="secret") as sim:
        ... connect to 127.0.0.1:sim.port ...
        sim.configure(throttle_rate=100)           # mid-test
        await sim.send_inbound("+447911000001", "STOP")
        await sim.wait_until(lambda: len(sim.messages) == 3)

Command line: ``herald simulate --smpp --port 2775`` (``engine.cli.simulate``).

Each connection has one reader and one writer task (never a task per PDU): the reader
parses every whole PDU a read brought, queues the answers, and wakes the writer, which sends
them in one write (after ``latency``, when set). Receipts and inbound messages wait in one
scheduler task until due, then go to a receiving session of their system_id, or wait for one
to bind; unanswered or refused ones are sent again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal, Self

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from engine.core.ratelimit import Gcra
from engine.simulator import smpp_wire as w
from engine.simulator.http import DEFAULT_HOST, loopback_host
from engine.simulator.smpp_options import (
    Message,
    Received,
    SessionInfo,
    SmppOptions,
    SmppStats,
)
from engine.simulator.smpp_record import Recorder

__all__ = ["Message", "Received", "SessionInfo", "SmppOptions", "SmppSimulator", "SmppStats"]

DEFAULT_PORT = 2775
_MAX_PDU = 64 * 1024
_FIRST_ID = 0xABC001  # hex ids with letters in them: a driver that reads them as decimal fails
_BINDS: dict[int, Literal["transmitter", "receiver", "transceiver"]] = {
    w.BIND_TRANSMITTER: "transmitter",
    w.BIND_RECEIVER: "receiver",
    w.BIND_TRANSCEIVER: "transceiver",
}
_BIND_RESP = b"herald-sim\0" + w.tlv(w.TAG_SC_INTERFACE_VERSION, b"\x34")
_STATES = {"DELIVRD": 2, "UNDELIV": 5}
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")

# Command statuses the SMSC answers with.
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RTHROTTLED = 0x58


class _Deliver:
    """A deliver_sm the SMSC owes a client: a receipt or an inbound message."""

    __slots__ = ("body", "done", "kind", "message_id", "sent_at", "status", "system_id")

    def __init__(self, system_id: str, body: bytes, kind: str, message_id: str | None,
                 done: anyio.Event | None = None) -> None:
        self.system_id = system_id
        self.body = body
        self.kind = kind
        self.message_id = message_id
        self.done = done
        self.status: int | None = None
        self.sent_at = 0.0


class _Session:
    """One connection, bound or not."""

    __slots__ = ("abrupt", "bind", "closing", "delayed", "id", "in_flight", "max_in_flight",
                 "out", "out_submits", "pending", "seq", "stream", "submits", "system_id",
                 "wake")

    def __init__(self, sid: int, stream: SocketStream) -> None:
        self.id = sid
        self.stream = stream
        self.bind: Literal["transmitter", "receiver", "transceiver"] | None = None
        self.system_id = ""
        self.out = bytearray()
        self.out_submits = 0
        self.delayed: deque[tuple[float, bytes, int]] = deque()
        self.wake = anyio.Event()
        self.closing = False
        self.abrupt = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.submits = 0
        self.pending: dict[int, _Deliver] = {}
        self.seq = itertools.count(1)

    def receives(self, system_id: str) -> bool:
        return (self.bind in ("receiver", "transceiver") and not self.closing
                and self.system_id == system_id)

    def notify(self) -> None:
        self.wake.set()

    def info(self) -> SessionInfo:
        return SessionInfo(session=self.id, system_id=self.system_id, bind=self.bind or
                           "transmitter", submits=self.submits,
                           max_in_flight=self.max_in_flight, open=not self.closing)


class SmppSimulator:
    """An SMSC on a loopback address; use as ``async with SmppSimulator(...) as sim``.

    Takes an ``SmppOptions`` and/or its fields as keywords. ``port=0`` picks a free port
    (``sim.port`` once started).
    """

    def __init__(self, options: SmppOptions | None = None, /, *, port: int = 0,
                 host: str = DEFAULT_HOST, **changes: Any) -> None:
        self.host = loopback_host(host)
        self.port = 0
        self._requested_port = port
        self.options = SmppOptions()
        #: The receipted message ids of the receipts a client acknowledged, in order.
        self.acked_receipts: list[str] = []
        self._counts: Counter[str] = Counter()
        self._recorder = Recorder(self._counts)
        #: Every submit_sm received, in order (when ``record``).
        self.received: list[Received] = self._recorder.received
        #: Whole messages, in the order they were complete (when ``record``).
        self.messages: list[Message] = self._recorder.messages
        #: Whole messages per (destination, text): more than 1 is a message sent twice.
        self.counts: Counter[tuple[str, str]] = self._recorder.counts
        self._serial = itertools.count(_FIRST_ID)
        self._session_ids = itertools.count(1)
        self._sessions: dict[int, _Session] = {}
        self._robin = itertools.count()
        self._rng = random.Random()
        self._gcra: Gcra | None = None
        self._submits_total = 0
        self._accepted_total = 0
        self._unbind_done = False
        self._drop_done = False
        self._last_source = "HERALD"
        self._due: list[tuple[float, int, _Deliver]] = []
        self._due_order = itertools.count()
        self._waiting: dict[str, deque[_Deliver]] = {}
        self._deliver_wake = anyio.Event()
        self._changed = anyio.Event()
        self._stack: contextlib.AsyncExitStack | None = None
        self.configure(options, **changes)

    # -- control -----------------------------------------------------------------------

    def configure(self, options: SmppOptions | None = None, /, **changes: Any) -> None:
        """Replace the options, or change some of them, while running or not."""
        base = options if options is not None else self.options
        self.options = opts = SmppOptions(**{**msgspec.structs.asdict(base), **changes})
        if options is not None or "seed" in changes:
            self._rng = random.Random(opts.seed)
        if opts.throttle_rate:
            burst = opts.throttle_burst or max(1, round(opts.throttle_rate / 10))
            self._gcra = Gcra(opts.throttle_rate, burst)
        else:
            self._gcra = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` (once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            listener = await anyio.create_tcp_listener(local_host=self.host,
                                                       local_port=self._requested_port)
            stack.push_async_callback(listener.aclose)
            self.port = listener.extra(SocketAttribute.local_port)
            task_group: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            task_group.start_soon(self._deliverer)
            task_group.start_soon(listener.serve, self._serve)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)

    async def send_inbound(self, phone: str, text: str, *, to: str | None = None) -> int:
        """A recipient's reply: a deliver_sm (not a receipt) from ``phone`` to ``to`` (by
        default the last sender address seen) on a receiving session; returns the command
        status of the first answer. Waits for a session to bind if none is."""
        encoded = w.encode_gsm(text)
        coding = 0
        if encoded is None:
            encoded, coding = text.encode("utf-16-be", "surrogatepass"), 8
        short, tlvs = encoded, b""
        if len(encoded) > 254:
            short, tlvs = b"", w.tlv(w.TAG_MESSAGE_PAYLOAD, encoded)
        destination = to or self._last_source
        body = w.short_body(source=phone.removeprefix("+"), destination=destination,
                            esm_class=0, data_coding=coding, short_message=short, tlvs=tlvs,
                            dest_ton=1 if destination.isdigit() else 5,
                            dest_npi=1 if destination.isdigit() else 0)
        done = anyio.Event()
        deliver = _Deliver(self.options.system_id, body, "inbound", None, done)
        self._counts["inbound_sent"] += 1
        self._route(deliver, anyio.current_time())
        await done.wait()
        return deliver.status if deliver.status is not None else -1

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; it is checked after each read and answer
        (wrap the call in ``anyio.fail_after``)."""
        while not predicate():
            await self._changed.wait()

    def sessions(self) -> list[SessionInfo]:
        """Every session so far, bound or not, in the order they connected."""
        return [s.info() for s in self._sessions.values()]

    @property
    def receipts_pending(self) -> int:
        """Receipts and inbound messages not acknowledged yet."""
        owed = sum(len(s.pending) for s in self._sessions.values())
        return owed + len(self._due) + sum(len(q) for q in self._waiting.values())

    def statistics(self) -> SmppStats:
        """A snapshot of the counters."""
        c = self._counts
        return SmppStats(
            connections=c["connections"], binds=c["binds"], binds_refused=c["binds_refused"],
            sessions_open=sum(1 for s in self._sessions.values()
                              if s.bind is not None and not s.closing),
            submits=c["submits"], accepted=c["accepted"], throttled=c["throttled"],
            errors=c["errors"], retry_errors=c["retry_errors"], unanswered=c["unanswered"],
            unbinds_sent=c["unbinds_sent"], drops=c["drops"],
            enquire_links=c["enquire_links"], generic_nacks=c["generic_nacks"],
            max_in_flight=max((s.max_in_flight for s in self._sessions.values()), default=0),
            messages=c["messages"], doubled=sum(1 for n in self.counts.values() if n > 1),
            duplicate_parts=c["duplicate_parts"], oversized_parts=c["oversized_parts"],
            split_pairs=c["split_pairs"], receipts_sent=c["receipts_sent"],
            receipts_acked=c["receipts_acked"], redeliveries=c["redeliveries"],
            inbound_sent=c["inbound_sent"], inbound_acked=c["inbound_acked"],
        )

    # -- connections ---------------------------------------------------------------------

    async def _serve(self, stream: SocketStream) -> None:
        session = _Session(next(self._session_ids), stream)
        self._sessions[session.id] = session
        self._counts["connections"] += 1
        try:
            async with stream, anyio.create_task_group() as tg:
                tg.start_soon(self._write_loop, session)
                await self._read_loop(session)
                if session.closing:
                    session.notify()  # the writer sends what is owed, then returns
                else:
                    tg.cancel_scope.cancel()
        finally:
            session.closing = True
            self._lost(session)

    async def _read_loop(self, s: _Session) -> None:
        buffer = bytearray()
        while not s.closing:
            try:
                data = await s.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            buffer += data
            self._handle(s, buffer)
            if s.in_flight > s.max_in_flight:
                s.max_in_flight = s.in_flight
            s.notify()
            self._touch()

    async def _write_loop(self, s: _Session) -> None:
        stream = s.stream
        delayed = s.delayed
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            while True:
                now = anyio.current_time()
                while delayed and delayed[0][0] <= now:
                    _, data, n = delayed.popleft()
                    s.out += data
                    s.out_submits += n
                if s.out:
                    data, n = bytes(s.out), s.out_submits
                    s.out.clear()
                    s.out_submits = 0
                    # answered once handed over: the client may read these and send more
                    # before send() returns, and those must not count with them
                    s.in_flight -= n
                    await stream.send(data)
                    continue
                if s.closing and (s.abrupt or not delayed):
                    return
                wake = s.wake = anyio.Event()
                if delayed:
                    with anyio.move_on_after(delayed[0][0] - now):
                        await wake.wait()
                else:
                    await wake.wait()

    def _lost(self, s: _Session) -> None:
        """A session ended: what it owed a client goes to another one (or waits)."""
        pending, s.pending = s.pending, {}
        now = anyio.current_time()
        for deliver in pending.values():
            self._counts["redeliveries"] += 1
            self._route(deliver, now)
        self._touch()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- PDUs ------------------------------------------------------------------------------

    def _answer(self, s: _Session, data: bytes, now: float, submits: int = 0) -> None:
        latency = self.options.latency
        if latency:
            s.delayed.append((now + latency, data, submits))
        else:
            s.out += data
            s.out_submits += submits

    def _handle(self, s: _Session, buffer: bytearray) -> None:
        """Answer every whole PDU in ``buffer`` and remove them from it."""
        at = 0
        end = len(buffer)
        now = anyio.current_time()
        unpack = w.HEADER.unpack_from
        while end - at >= 16 and not s.closing:
            length, command, status, seq = unpack(buffer, at)
            if length < 16 or length > _MAX_PDU:
                self._counts["generic_nacks"] += 1
                self._answer(s, w.pdu(w.GENERIC_NACK, seq, status=ESME_RINVCMDLEN), now)
                s.closing = True
                break
            if end - at < length:
                break
            body = bytes(buffer[at + 16:at + length])
            at += length
            if command == w.SUBMIT_SM:
                self._submit(s, seq, body, now)
            elif command == w.DELIVER_SM_RESP or command == w.GENERIC_NACK:
                self._delivered(s, seq, status, now)
            elif command in _BINDS:
                self._bind(s, command, seq, body, now)
            elif command == w.ENQUIRE_LINK:
                self._counts["enquire_links"] += 1
                if self.options.enquire_link_answer:
                    self._answer(s, w.pdu(w.ENQUIRE_LINK_RESP, seq), now)
            elif command == w.UNBIND:
                self._answer(s, w.pdu(w.UNBIND_RESP, seq), now)
                s.closing = True
            elif command == w.UNBIND_RESP:
                s.closing = True
            elif command & w.RESP:
                pass  # enquire_link_resp and the like
            else:
                self._counts["generic_nacks"] += 1
                self._answer(s, w.pdu(w.GENERIC_NACK, seq, status=ESME_RINVCMDID), now)
        del buffer[:at]

    def _bind(self, s: _Session, command: int, seq: int, body: bytes, now: float) -> None:
        resp = command | w.RESP
        if s.bind is not None:
            self._answer(s, w.pdu(resp, seq, status=ESME_RALYBND), now)
            return
        try:
            bind = w.read_bind(body)
        except (ValueError, IndexError):
            self._answer(s, w.pdu(resp, seq, status=ESME_RINVCMDLEN), now)
            return
        opts = self.options
        status = ESME_ROK
        if bind.system_id != opts.system_id:
            status = ESME_RINVSYSID
        elif bind.password != opts.password:
            status = ESME_RINVPASWD
        if status:
            self._counts["binds_refused"] += 1
            self._answer(s, w.pdu(resp, seq, status=status), now)
            return
        self._counts["binds"] += 1
        s.bind = _BINDS[command]
        s.system_id = bind.system_id
        self._answer(s, w.pdu(resp, seq, _BIND_RESP), now)
        waiting = self._waiting.get(s.system_id)
        if waiting and s.receives(s.system_id):
            while waiting:
                self._send_deliver(s, waiting.popleft(), now)

    def _submit(self, s: _Session, seq: int, body: bytes, now: float) -> None:
        counts = self._counts
        if s.bind not in ("transmitter", "transceiver"):
            self._answer(s, w.pdu(w.SUBMIT_SM_RESP, seq, status=ESME_RINVBNDSTS), now)
            return
        try:
            sm = w.read_short(body)
        except (ValueError, IndexError):
            self._answer(s, w.pdu(w.SUBMIT_SM_RESP, seq, status=ESME_RINVMSGLEN), now)
            return
        counts["submits"] += 1
        s.submits += 1
        self._submits_total += 1
        self._last_source = sm.source
        opts = self.options
        if opts.drop_after and not self._drop_done and self._submits_total >= opts.drop_after:
            self._drop_done = True
            counts["drops"] += 1
            counts["unanswered"] += 1
            if opts.record:
                self._recorder.record(s.id, seq, sm, None, None, None)
            s.closing = s.abrupt = True
            return
        gcra = self._gcra
        if gcra is not None and not gcra.try_acquire(1, now):
            counts["throttled"] += 1
            self._answer(s, w.pdu(w.SUBMIT_SM_RESP, seq, status=ESME_RTHROTTLED), now, 1)
            s.in_flight += 1
            return
        roll = self._rng.random()
        if roll < opts.no_answer_rate:
            counts["unanswered"] += 1
            if opts.record:
                self._recorder.record(s.id, seq, sm, None, None, None)
            return
        roll -= opts.no_answer_rate
        if roll < opts.error_rate + opts.retry_error_rate:
            permanent = roll < opts.error_rate
            status = opts.error_status if permanent else ESME_RSYSERR
            counts["errors" if permanent else "retry_errors"] += 1
            self._answer(s, w.pdu(w.SUBMIT_SM_RESP, seq, status=status), now, 1)
            s.in_flight += 1
            if opts.record:
                self._recorder.record(s.id, seq, sm, status, None, None)
            return
        serial = next(self._serial)
        message_id = self._format_id(serial, opts.id_format, opts.id_width)
        receipt = None
        rd = sm.registered_delivery & 0x03
        if rd:
            receipt = "UNDELIV" if self._rng.random() < opts.undelivered_rate else "DELIVRD"
            if rd == 2 and receipt == "DELIVRD":
                receipt = None  # asked for failure receipts only
        counts["accepted"] += 1
        self._accepted_total += 1
        record = None
        if opts.record:
            record = self._recorder.record(s.id, seq, sm, ESME_ROK, message_id, receipt)
        deliver = None
        if receipt is not None:
            rid = self._format_id(serial, opts.receipt_id_format or opts.id_format, 0)
            text = record.text if record is not None else ""
            deliver = _Deliver(s.system_id, self._receipt_body(sm, rid, receipt, text),
                               "receipt", rid)
            self._counts["receipts_sent"] += 1
            if opts.receipt_before_resp:
                self._route(deliver, now)
                deliver = None
        self._answer(s, w.pdu(w.SUBMIT_SM_RESP, seq, message_id.encode() + b"\0"), now, 1)
        s.in_flight += 1
        if deliver is not None:
            if opts.receipt_delay or opts.latency:
                self._schedule(deliver, now + opts.latency + opts.receipt_delay)
            else:
                self._route(deliver, now)
        if opts.unbind_after and not self._unbind_done \
                and self._accepted_total >= opts.unbind_after:
            self._unbind_done = True
            counts["unbinds_sent"] += 1
            self._answer(s, w.pdu(w.UNBIND, next(s.seq)), now)

    @staticmethod
    def _format_id(serial: int, form: str, width: int) -> str:
        text = format(serial, "x") if form == "hex" else str(serial)
        return text.zfill(width) if width else text

    def _receipt_body(self, sm: w.Short, rid: str, stat: str, text: str) -> bytes:
        opts = self.options
        err = opts.undelivered_err if stat == "UNDELIV" else 0
        short = b""
        tlvs = b""
        if opts.receipt_form in ("text", "both"):
            stamp = time.strftime("%y%m%d%H%M", time.gmtime())
            shown = "".join(ch if ch in _SAFE else "." for ch in text[:20])
            dlvrd = "001" if stat == "DELIVRD" else "000"
            short = (f"id:{rid} sub:001 dlvrd:{dlvrd} submit date:{stamp} done date:{stamp}"
                     f" stat:{stat} err:{err:03d} text:{shown}").encode("ascii")
        if opts.receipt_form in ("tlv", "both"):
            tlvs = (w.tlv(w.TAG_RECEIPTED_MESSAGE_ID, rid.encode() + b"\0")
                    + w.tlv(w.TAG_MESSAGE_STATE, bytes((_STATES[stat],))))
            if err:
                tlvs += w.tlv(w.TAG_NETWORK_ERROR_CODE, bytes((3,)) + err.to_bytes(2, "big"))
        return w.short_body(source=sm.destination, destination=sm.source, esm_class=0x04,
                            data_coding=0, short_message=short, tlvs=tlvs,
                            source_ton=sm.dest_ton, source_npi=sm.dest_npi,
                            dest_ton=sm.source_ton, dest_npi=sm.source_npi)

    # -- receipts and inbound messages -------------------------------------------------------

    def _schedule(self, deliver: _Deliver, due: float) -> None:
        heapq.heappush(self._due, (due, next(self._due_order), deliver))
        self._deliver_wake.set()

    def _route(self, deliver: _Deliver, now: float) -> None:
        """Send ``deliver`` on a receiving session of its system_id, or keep it for one."""
        sessions = [s for s in self._sessions.values() if s.receives(deliver.system_id)]
        if not sessions:
            self._waiting.setdefault(deliver.system_id, deque()).append(deliver)
            return
        session = sessions[next(self._robin) % len(sessions)]
        self._send_deliver(session, deliver, now)
        session.notify()

    def _send_deliver(self, s: _Session, deliver: _Deliver, now: float) -> None:
        seq = next(s.seq)
        deliver.sent_at = now
        if not s.pending:
            self._deliver_wake.set()  # arm the redelivery timer
        s.pending[seq] = deliver
        s.out += w.pdu(w.DELIVER_SM, seq, deliver.body)

    def _delivered(self, s: _Session, seq: int, status: int, now: float) -> None:
        deliver = s.pending.pop(seq, None)
        if deliver is None:
            return
        if deliver.done is not None and not deliver.done.is_set():
            deliver.status = status
            deliver.done.set()
        if status == ESME_ROK:
            if deliver.kind == "receipt":
                self._counts["receipts_acked"] += 1
                self.acked_receipts.append(deliver.message_id or "")
            else:
                self._counts["inbound_acked"] += 1
            return
        self._counts["redeliveries"] += 1
        self._schedule(deliver, now + self.options.redeliver_after)

    async def _deliverer(self) -> None:
        """Send receipts when due; send again those not answered in ``redeliver_after``."""
        while True:
            now = anyio.current_time()
            due = self._due
            while due and due[0][0] <= now:
                self._route(heapq.heappop(due)[2], now)
            wait = due[0][0] - now if due else math.inf
            after = self.options.redeliver_after
            for s in list(self._sessions.values()):
                if not s.pending or s.closing:
                    continue
                for seq, deliver in list(s.pending.items()):
                    late = deliver.sent_at + after - now
                    if late > 0:
                        wait = min(wait, late)
                        break  # oldest first: the rest are later still
                    del s.pending[seq]
                    self._counts["redeliveries"] += 1
                    self._route(deliver, now)
            self._touch()
            wake = self._deliver_wake = anyio.Event()
            with anyio.move_on_after(wait):
                await wake.wait()
