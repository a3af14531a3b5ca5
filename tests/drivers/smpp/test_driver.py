"""The ``smpp`` driver's receipts and inbound messages, and its place among Herald's drivers.

What the SMSC (``peer.Peer``) delivers must reach the engine's listener, be answered only
once the listener returned, and be folded per message; on asyncio and trio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import msgspec
import pytest

from engine.drivers import Inbound, OutboundMessage, Receipt
from engine.errors import InputError
from engine.plugins import load_plugins
from herald_smpp import ESME_RX_T_APPN, SmppConfig, SmppDriver, inbound_message
from herald_smpp.codec import DeliverSm
from herald_smpp.receipts import InFlight, ReceiptBook
from herald_smpp.session import Backoff
from tests.drivers.smpp.peer import Peer

pytestmark = pytest.mark.anyio


class FakeListener:
    """The engine's side: records what it stored in ``peer.log`` (so the order of storing
    and answering shows); ``gate`` (when set) holds storing until it is set; ``fail``
    makes storing raise."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.receipts_in: list[list[Receipt]] = []
        self.inbound_in: list[list[Inbound]] = []
        self.gate: anyio.Event | None = None
        self.fail = False
        self.changed = anyio.Event()

    async def _store(self, what: str, count: int) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("the store is down")
        self.log.append(f"stored {count} {what}")

    async def receipts(self, receipts: Sequence[Receipt]) -> None:
        await self._store("receipts", len(receipts))
        self.receipts_in.append(list(receipts))
        self.changed.set()
        self.changed = anyio.Event()

    async def inbound(self, messages: Sequence[Inbound]) -> None:
        await self._store("inbound", len(messages))
        self.inbound_in.append(list(messages))
        self.changed.set()
        self.changed = anyio.Event()

    @property
    def all_receipts(self) -> list[Receipt]:
        return [r for batch in self.receipts_in for r in batch]


@contextlib.asynccontextmanager
async def serving(peer: Peer, listener: FakeListener | None, **options: Any
                  ) -> AsyncIterator[SmppDriver]:
    """A driver with ``serve()`` running (so it reads between batches), bound."""
    config = msgspec.convert(peer.options(**options), SmppConfig)
    driver = SmppDriver(config, gateway="gw", backoff=Backoff(first=0.001, most=0.004))
    driver.listener = listener
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(driver.serve)
                await peer.bound.wait()
                try:
                    yield driver
                finally:
                    if listener is not None and listener.gate is not None:
                        listener.gate.set()  # a store held by the test would hold us
                    tg.cancel_scope.cancel()
    finally:
        await driver.aclose()


async def eventually(predicate: Callable[[], bool]) -> None:
    """Until the driver's state says so (it has no event for tests: look every few ms)."""
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110 - the driver's counters have no event
            await anyio.sleep(0.002)


def msg(i: int = 0, text: str = "hello") -> OutboundMessage:
    return OutboundMessage(f"m{i}", "+15551234567", "ACME", text, 1)


def tlv_receipt(message_id: str, state: int, error: bytes = b"") -> DeliverSm:
    tlvs = {0x001E: message_id.encode() + b"\0", 0x0427: bytes((state,))}
    if error:
        tlvs[0x0423] = error
    return DeliverSm(esm_class=0x04, source_addr="15551234567", destination_addr="ACME",
                     tlvs=tlvs)


def text_receipt(message_id: str, stat: str, err: str = "000") -> DeliverSm:
    body = (f"id:{message_id} sub:001 dlvrd:001 submit date:2512011200 done date:2512011201 "
            f"stat:{stat} err:{err} text:hello")
    return DeliverSm(esm_class=0x04, source_addr="15551234567", short_message=body.encode())


async def test_receipts_in_tlv_and_text_form_reach_the_listener_before_the_answer() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        async with serving(peer, listener) as driver:
            first, second = await driver.send_batch([msg(0), msg(1)])
            conn = peer.conns[0]
            delivered = await conn.deliver(tlv_receipt(first.provider_id or "", 2))
            assert await conn.acked(delivered) == 0
            undelivered = await conn.deliver(
                text_receipt("000000" + (second.provider_id or ""), "UNDELIV", "034"))
            assert await conn.acked(undelivered) == 0
            assert driver.statistics().receipts == 2
        [ok], [failed] = listener.receipts_in
        assert ok == Receipt(provider_id=first.provider_id or "", status="delivered")
        assert (failed.provider_id, failed.status) == (second.provider_id, "undelivered")
        assert failed.error == "UNDELIV (034)" and failed.at == 1764590460.0
        assert peer.log[:2] == ["stored 1 receipts", f"ack {delivered} 0x0"]
        assert peer.log[2:4] == ["stored 1 receipts", f"ack {undelivered} 0x0"]


async def test_hex_receipt_ids_for_decimal_answers() -> None:
    async with Peer(submit=lambda conn, pdu: (0, "4096")) as peer:
        listener = FakeListener(peer.log)
        async with serving(peer, listener, receipt_ids="hex") as driver:
            [result] = await driver.send_batch([msg()])
            seq = await peer.conns[0].deliver(text_receipt("00001000", "DELIVRD"))
            await peer.conns[0].acked(seq)
        assert result.provider_id == "4096"
        assert [r.provider_id for r in listener.all_receipts] == ["4096"]


async def test_receipts_queued_together_are_stored_together() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        listener.gate = anyio.Event()
        async with serving(peer, listener) as driver:
            conn = peer.conns[0]
            blocked = await conn.deliver(tlv_receipt("a1", 2))
            await eventually(lambda: driver.statistics().pending_receipts == 1)
            more = [await conn.deliver(tlv_receipt(f"b{i}", 2)) for i in range(3)]
            await eventually(lambda: driver.statistics().pending_receipts == 4)
            assert not peer.acks  # nothing answered while the store holds them
            listener.gate.set()
            for seq in [blocked, *more]:
                assert await conn.acked(seq) == 0
        assert [len(batch) for batch in listener.receipts_in] == [1, 3]


async def test_enroute_receipts_are_answered_and_dropped() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        async with serving(peer, listener):
            seq = await peer.conns[0].deliver(tlv_receipt("c1", 1))
            assert await peer.conns[0].acked(seq) == 0
        assert listener.receipts_in == []


async def test_a_failing_store_leaves_the_receipt_for_the_smsc_to_send_again() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        listener.fail = True
        async with serving(peer, listener):
            conn = peer.conns[0]
            seq = await conn.deliver(tlv_receipt("d1", 2))
            assert await conn.acked(seq) == ESME_RX_T_APPN
            listener.fail = False
            again = await conn.deliver(tlv_receipt("d1", 2))
            assert await conn.acked(again) == 0
        assert [r.provider_id for r in listener.all_receipts] == ["d1"]


async def test_without_a_listener_nothing_is_acknowledged_as_taken() -> None:
    async with Peer() as peer, serving(peer, None):
        seq = await peer.conns[0].deliver(tlv_receipt("e1", 2))
        assert await peer.conns[0].acked(seq) == ESME_RX_T_APPN


async def test_backpressure_answers_throttled_at_once() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        listener.gate = anyio.Event()
        async with serving(peer, listener, max_pending_receipts=2) as driver:
            conn = peer.conns[0]
            held = [await conn.deliver(tlv_receipt(f"f{i}", 2)) for i in range(2)]
            await eventually(lambda: driver.statistics().pending_receipts == 2)
            over = await conn.deliver(tlv_receipt("f9", 2))
            assert await conn.acked(over) == 0x58  # ESME_RTHROTTLED, while two wait
            assert driver.statistics().backpressured == 1
            listener.gate.set()
            assert [await conn.acked(seq) for seq in held] == [0, 0]


async def test_a_long_message_is_delivered_when_all_its_parts_are() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        async with serving(peer, listener) as driver:
            [three] = await driver.send_batch([msg(0, "g" * 400)])
            a, b, c = (format(0x1000 + i, "x") for i in range(3))
            assert three.provider_id == a
            conn = peer.conns[0]
            for receipt in (tlv_receipt(b, 2), tlv_receipt(a, 2), tlv_receipt(b, 2)):
                await conn.acked(await conn.deliver(receipt))
            assert listener.all_receipts == []  # not yet: the third part is out
            await conn.acked(await conn.deliver(tlv_receipt(c, 2)))
            [two] = await driver.send_batch([msg(1, "h" * 200)])
            d, e = (format(0x1003 + i, "x") for i in range(2))
            await conn.acked(await conn.deliver(tlv_receipt(e, 5, b"\x03\x00\x22")))
            await conn.acked(await conn.deliver(tlv_receipt(d, 2)))  # settled already
        assert listener.all_receipts == [
            Receipt(provider_id=a, status="delivered"),
            Receipt(provider_id=d, status="undelivered", error="UNDELIV (gsm:34)"),
        ]
        assert two.provider_id == d


async def test_a_receipt_before_its_submit_sm_resp_waits_for_it() -> None:
    async with Peer(submit=lambda conn, pdu: None if conn.peer.submits[-1:] == [pdu]
                    and len(conn.peer.submits) == 2 else (0, f"p{len(conn.peer.submits)}")
                    ) as peer:
        listener = FakeListener(peer.log)
        async with serving(peer, listener) as driver:
            async with anyio.create_task_group() as tg:
                results: list[Any] = []

                async def send() -> None:
                    results.extend(await driver.send_batch([msg(0, "i" * 200)]))

                tg.start_soon(send)
                await peer.wait(lambda: len(peer.conns[0].unanswered) == 1)
                conn = peer.conns[0]
                await conn.deliver(tlv_receipt("p1", 2))
                early = await conn.deliver(tlv_receipt("p2", 2))  # part 2: not answered yet
                await eventually(lambda: driver.statistics().held_receipts == 1)
                await conn.answer(conn.unanswered[0], message_id="p2")
                assert await conn.acked(early) == 0
        assert results[0].provider_id == "p1"
        assert listener.all_receipts == [Receipt(provider_id="p1", status="delivered")]


async def test_an_unknown_receipt_id_passes_as_it_is() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        async with serving(peer, listener):
            await peer.conns[0].acked(await peer.conns[0].deliver(tlv_receipt("00ABC", 2)))
        assert listener.all_receipts == [Receipt(provider_id="abc", status="delivered")]


async def test_a_stop_reply_reaches_the_inbound_listener() -> None:
    async with Peer() as peer:
        listener = FakeListener(peer.log)
        async with serving(peer, listener) as driver:
            conn = peer.conns[0]
            stop = DeliverSm(source_addr_ton=1, source_addr="15551234567",
                             destination_addr="ACME", short_message=b"STOP")
            seq = await conn.deliver(stop)
            assert await conn.acked(seq) == 0
            assert driver.statistics().inbound == 1
        assert listener.inbound_in == [[Inbound(phone="+15551234567", text="STOP", to="ACME")]]
        assert peer.log == ["stored 1 inbound", f"ack {seq} 0x0"]


def test_inbound_text_is_decoded_by_its_data_coding() -> None:
    ucs2 = DeliverSm(source_addr="79161234567", source_addr_ton=1, data_coding=8,
                     short_message="стоп".encode("utf-16-be"))
    assert inbound_message(ucs2).text == "стоп" and inbound_message(ucs2).phone == "+79161234567"
    part = DeliverSm(source_addr="ACME", source_addr_ton=5, esm_class=0x40,
                     short_message=bytes((5, 0, 3, 9, 2, 1)) + b"\x00\x11")  # GSM-7 "@_"
    assert (inbound_message(part).phone, inbound_message(part).text) == ("ACME", "@_")
    latin = DeliverSm(source_addr="1", data_coding=3, short_message="café".encode("latin-1"))
    assert inbound_message(latin).text == "café"


def test_receipts_over_http_are_refused_with_a_reason() -> None:
    driver = SmppDriver(SmppConfig(host="h", system_id="s"), gateway="gw")
    with pytest.raises(InputError, match="on its SMPP session, not over HTTP"):
        driver.parse_receipts(b"\x00 not a receipt", {})


def test_the_driver_registers_as_smpp_with_its_capabilities() -> None:
    cls = load_plugins().drivers["smpp"]
    assert cls is SmppDriver
    driver = cls(msgspec.convert({"host": "h", "system_id": "s", "sessions": 4, "window": 50},
                                 SmppConfig))
    caps = driver.capabilities
    assert (caps.max_batch, caps.supports_dlr, caps.idempotent) == (200, True, False)


def test_the_config_rejects_bad_values_by_name() -> None:
    with pytest.raises(msgspec.ValidationError, match="long_messages"):
        msgspec.convert({"host": "h", "system_id": "s", "long_messages": "x"}, SmppConfig)
    with pytest.raises(msgspec.ValidationError, match="sessions"):
        msgspec.convert({"host": "h", "system_id": "s", "sessions": 0}, SmppConfig)
    with pytest.raises(msgspec.ValidationError, match="password"):
        msgspec.convert({"host": "h", "system_id": "s", "password": "far too long"},
                        SmppConfig)


def test_the_receipt_book_folds_parts_and_forgets_the_oldest() -> None:
    book = ReceiptBook(limit=4)
    book.accepted("a", "a", 2)
    book.accepted("a", "b", 2)
    undo: list[Any] = []
    assert book.apply("a", "delivered", None, 5.0, undo) is None
    book.undo(undo)  # the store failed: the first part's receipt comes again
    assert book.apply("a", "delivered", None, 5.0, []) is None
    assert book.apply("b", "delivered", None, 7.0, []) == Receipt("a", "delivered", at=7.0)
    assert book.apply("b", "delivered", None, 7.0, []) is None  # a duplicate
    for first in "cde":
        book.accepted(first, first, 2)
    assert len(book) == 4 and not book.knows("a")


def test_in_flight_tickets_say_when_everything_written_before_is_answered() -> None:
    flight = InFlight()
    one, two = flight.written(), flight.written()
    mark = flight.mark()
    assert mark is not None
    three = flight.written()
    flight.answered(two)
    assert not flight.passed(mark)
    flight.answered(one)
    assert flight.passed(mark) and len(flight) == 1
    flight.answered(three)
    assert flight.mark() is None

