"""The SMPP session as an SMSC sees it: binds, submits, the window, answers, reconnects.

Against ``peer.Peer`` on loopback (a real socket), on asyncio and trio. Timeouts that must
run out are set to a fraction of a second; reconnect waits use an injected backoff.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import pytest

from engine.drivers import OutboundMessage
from engine.errors import PermanentGatewayError, TransientGatewayError
from herald_smpp import SmppConfig, SmppDriver
from herald_smpp.codec import SubmitSm
from herald_smpp.codec.parts import Concat, split_udh
from herald_smpp.session import Backoff
from tests.drivers.smpp.peer import Conn, Peer

pytestmark = pytest.mark.anyio

FAST = Backoff(first=0.001, most=0.004)


@contextlib.asynccontextmanager
async def smpp(peer: Peer, **options: Any) -> AsyncIterator[SmppDriver]:
    config = msgspec.convert(peer.options(**options), SmppConfig)
    driver = SmppDriver(config, gateway="gw", backoff=FAST)
    try:
        with anyio.fail_after(10):
            yield driver
    finally:
        await driver.aclose()


def msg(i: int = 0, text: str = "hello", to: str = "+15551234567", sender: str = "ACME"
        ) -> OutboundMessage:
    return OutboundMessage(f"m{i}", to, sender, text, 1)


async def test_binds_submits_and_unbinds() -> None:
    async with Peer() as peer:
        async with smpp(peer) as driver:
            [result] = await driver.send_batch([msg()])
            assert result.status == "accepted" and result.provider_id == "1000"
            stats = driver.statistics()
            assert (stats.bound, stats.submits, stats.in_flight) == (1, 1, 0)
        [bind] = peer.binds
        assert (bind.kind, bind.system_id, bind.password) == ("transceiver", "herald", "secret")
        [submit] = peer.submits
        assert submit.destination_addr == "15551234567"
        assert (submit.dest_addr_ton, submit.dest_addr_npi) == (1, 1)
        assert (submit.source_addr, submit.source_addr_ton, submit.source_addr_npi) == (
            "ACME", 5, 0)
        assert submit.registered_delivery == 1
        assert (submit.data_coding, submit.esm_class, submit.short_message) == (0, 0, b"hello")
        assert peer.unbinds == 1  # aclose unbound politely
        await driver.aclose()  # twice is harmless
        assert peer.unbinds == 1


async def test_a_numeric_sender_goes_as_an_international_number() -> None:
    async with Peer() as peer:
        async with smpp(peer) as driver:
            await driver.send_batch([msg(sender="+4915112345678")])
        [submit] = peer.submits
        assert (submit.source_addr, submit.source_addr_ton, submit.source_addr_npi) == (
            "4915112345678", 1, 1)


def udh(pdu: SubmitSm) -> Concat:
    concat, _, _ = split_udh(pdu.short_message)
    assert concat is not None
    return concat


async def test_a_three_part_gsm7_message_goes_in_parts_with_one_reference() -> None:
    text = "x" * 320 + "€"  # 322 septets: 3 parts of at most 153
    async with Peer() as peer:
        async with smpp(peer) as driver:
            [result] = await driver.send_batch([msg(text=text)])
        parts = peer.submits
        assert [p.esm_class for p in parts] == [0x40] * 3
        assert [p.data_coding for p in parts] == [0] * 3
        refs = [udh(p) for p in parts]
        assert {r.reference for r in refs} == {refs[0].reference}
        assert [(r.total, r.seq) for r in refs] == [(3, 1), (3, 2), (3, 3)]
        assert result.status == "accepted" and result.provider_id == "1000"  # first part's
        assert all(p.registered_delivery == 1 for p in parts)


async def test_ucs2_text_goes_with_data_coding_8() -> None:
    async with Peer() as peer:
        async with smpp(peer) as driver:
            short, long = await driver.send_batch(
                [msg(0, text="Привет"), msg(1, text="Привет мир! " * 10)])
        assert short.status == long.status == "accepted"
        first, *parts = peer.submits
        assert (first.data_coding, first.short_message) == (8, "Привет".encode("utf-16-be"))
        assert [p.data_coding for p in parts] == [8, 8]
        assert [udh(p).seq for p in parts] == [1, 2]


async def test_sar_and_payload_modes() -> None:
    text = "y" * 200
    async with Peer() as peer:
        async with smpp(peer, long_messages="sar") as driver:
            await driver.send_batch([msg(text=text)])
        assert [p.esm_class for p in peer.submits] == [0, 0]
        assert [p.tlvs[0x020F] for p in peer.submits] == [b"\x01", b"\x02"]
    async with Peer() as peer:
        async with smpp(peer, long_messages="payload") as driver:
            await driver.send_batch([msg(text=text)])
        [pdu] = peer.submits
        assert pdu.short_message == b"" and pdu.tlvs[0x0424] == b"y" * 200


async def test_the_window_bounds_unanswered_submits() -> None:
    total = 23

    async def answer_in_bulk(conn: Conn) -> None:
        if len(conn.unanswered) >= 5 or len(conn.peer.submits) == total:
            await conn.answer_all()

    async with Peer(submit=lambda conn, pdu: None, after_read=answer_in_bulk) as peer:
        async with smpp(peer, window=5) as driver:
            results = await driver.send_batch([msg(i) for i in range(total)])
        assert {r.status for r in results} == {"accepted"}
        assert peer.conns[0].max_unanswered == 5
        assert len({p.sequence for p in peer.submits}) == total


async def test_sessions_bind_in_parallel_and_share_the_work() -> None:
    async with Peer() as peer:
        async with smpp(peer, sessions=3, window=2) as driver:
            assert driver.capabilities.max_batch == 6
            results = await driver.send_batch([msg(i) for i in range(60)])
            assert driver.statistics().bound == 3
        assert {r.status for r in results} == {"accepted"}
        assert len(peer.binds) == 3 and len(peer.submits) == 60
        assert len({r.provider_id for r in results}) == 60


async def test_a_transmitter_with_a_receiver_bind() -> None:
    async with Peer() as peer:
        async with smpp(peer, bind="transmitter", receiver=True) as driver:
            [result] = await driver.send_batch([msg()])
            await peer.wait(lambda: len(peer.binds) == 2)
        assert result.status == "accepted"
        assert sorted(b.kind for b in peer.binds) == ["receiver", "transmitter"]


def answering(status: int) -> Callable[[Conn, SubmitSm], tuple[int, str]]:
    return lambda conn, pdu: (status, "")


async def test_a_throttling_answer_asks_to_retry_later() -> None:
    async with Peer(submit=answering(0x58)) as peer:
        async with smpp(peer) as driver:
            [result] = await driver.send_batch([msg()])
            assert driver.statistics().throttled == 1
    assert result.status == "retry" and result.retry_after == 1.0
    assert "ESME_RTHROTTLED" in (result.error or "")


async def test_a_full_queue_is_throttling_too() -> None:
    async with Peer(submit=answering(0x14)) as peer:
        async with smpp(peer) as driver:
            [result] = await driver.send_batch([msg()])
    assert result.status == "retry" and result.retry_after == 1.0


async def test_a_transient_status_is_retry_and_a_permanent_one_rejected() -> None:
    statuses = iter([0x08, 0x0B])
    async with Peer(submit=lambda conn, pdu: (next(statuses), "")) as peer:
        async with smpp(peer, window=1) as driver:
            transient, permanent = await driver.send_batch([msg(0), msg(1)])
    assert transient.status == "retry" and transient.retry_after is None
    assert permanent.status == "rejected"
    assert permanent.error == "ESME_RINVDSTADR (0x0000000B)"


async def test_a_later_part_refused_stops_the_message() -> None:
    answers = iter([(0, "a1"), (0x0B, "")])
    async with Peer(submit=lambda conn, pdu: next(answers)) as peer:
        async with smpp(peer) as driver:
            [result] = await driver.send_batch([msg(text="z" * 400)])  # 3 parts
    assert len(peer.submits) == 2  # the third was never sent
    assert result.status == "rejected"
    assert "ESME_RINVDSTADR" in (result.error or "") and "1 of 3 parts" in (result.error or "")


async def test_no_answer_is_unknown_timeout() -> None:
    async with Peer(submit=lambda conn, pdu: None) as peer:
        async with smpp(peer, timeout=0.2) as driver:
            [result] = await driver.send_batch([msg()])
            assert driver.statistics().in_flight == 0
    assert result.status == "unknown"
    assert (result.error or "").startswith("timeout: gateway 'gw'")


async def test_a_connection_lost_after_the_write_is_unknown_and_reconnects() -> None:
    async def hang_up(conn: Conn) -> None:
        if conn.number == 0 and conn.unanswered:
            await conn.close()

    async with Peer(submit=lambda conn, pdu: None if conn.number == 0 else (0, "b"),
                    after_read=hang_up) as peer:
        async with smpp(peer) as driver:
            [lost] = await driver.send_batch([msg(0)])
            [again] = await driver.send_batch([msg(1)])
            assert driver.statistics().reconnects == 1
    assert lost.status == "unknown"
    assert (lost.error or "").startswith("connection_lost: gateway 'gw'")
    assert again.status == "accepted" and again.provider_id == "b"
    assert len(peer.binds) == 2


async def test_an_unbind_from_the_smsc_reconnects_and_loses_nothing() -> None:
    total = 12
    state = {"unbound": False}

    async def answer_then_unbind(conn: Conn) -> None:
        if conn.unanswered and (len(conn.unanswered) == 4 or len(conn.peer.submits) == total):
            await conn.answer_all()
            if not state["unbound"]:
                state["unbound"] = True
                await conn.unbind()

    async with Peer(submit=lambda conn, pdu: None, after_read=answer_then_unbind) as peer:
        async with smpp(peer, window=4) as driver:
            results = await driver.send_batch([msg(i, text=f"text {i}") for i in range(total)])
            assert driver.statistics().reconnects == 1
    assert {r.status for r in results} == {"accepted"}
    texts = sorted(p.short_message for p in peer.submits)
    assert texts == sorted(f"text {i}".encode() for i in range(total))  # none twice
    assert len(peer.binds) == 2


async def test_a_generic_nack_closes_the_session_and_reconnects() -> None:
    from herald_smpp.codec import GenericNack

    async def nack(conn: Conn) -> None:
        if conn.number == 0 and conn.unanswered:
            pdu = conn.unanswered.pop()
            await conn.send(GenericNack(sequence=pdu.sequence, status=0x03))

    async with Peer(submit=lambda conn, pdu: None if conn.number == 0 else (0, "c"),
                    after_read=nack) as peer:
        async with smpp(peer) as driver:
            [first] = await driver.send_batch([msg(0)])
            [second] = await driver.send_batch([msg(1)])
    assert first.status == "rejected" and "ESME_RINVCMDID" in (first.error or "")
    assert second.status == "accepted"
    assert len(peer.binds) == 2


async def test_a_refused_password_is_a_permanent_error_without_retrying() -> None:
    async with Peer(password="right") as peer:
        config = msgspec.convert(peer.options(password="wrong"), SmppConfig)
        driver = SmppDriver(config, gateway="gw", backoff=FAST)
        with pytest.raises(PermanentGatewayError) as err:
            await driver.send_batch([msg()])
        message = str(err.value)
        assert "gateway 'gw'" in message and "system_id 'herald'" in message
        assert "password" in message and "wrong" not in message
        with pytest.raises(PermanentGatewayError):
            await driver.send_batch([msg()])
        assert len(peer.binds) == 1  # no retry loop
        assert driver.statistics().failed == message
        await driver.aclose()


async def test_no_smsc_is_a_transient_unsent_error() -> None:
    async with Peer() as peer:
        port = peer.port
    config = msgspec.convert({"host": "127.0.0.1", "port": port, "system_id": "x"},
                             SmppConfig)
    driver = SmppDriver(config, gateway="gw", backoff=Backoff(first=60, random=lambda: 0))
    with pytest.raises(TransientGatewayError) as err:
        await driver.send_batch([msg()])
    assert err.value.unsent and "gateway 'gw'" in str(err.value)
    with pytest.raises(TransientGatewayError) as again:  # in its backoff: at once
        await driver.send_batch([msg()])
    assert again.value.unsent and again.value.retry_after is not None
    assert again.value.retry_after > 10
    await driver.aclose()


async def test_a_bind_refused_for_another_reason_is_retried() -> None:
    async with Peer(bind_status=0x08) as peer:
        async with smpp(peer) as driver:
            with pytest.raises(TransientGatewayError) as err:
                await driver.send_batch([msg()])
            assert "ESME_RSYSERR" in str(err.value)
            peer.bind_status = None
            with anyio.fail_after(5):
                while True:  # the backoff is a few ms: the engine would wait retry_after
                    try:
                        [result] = await driver.send_batch([msg()])
                        break
                    except TransientGatewayError as again:
                        await anyio.sleep(again.retry_after or 0)
        assert result.status == "accepted"


async def test_enquire_link_is_answered_and_sent_when_idle() -> None:
    async with Peer() as peer:
        async with smpp(peer, enquire_link=0.1) as driver, anyio.create_task_group() as tg:
            tg.start_soon(driver.serve)
            await peer.bound.wait()
            from herald_smpp.codec import EnquireLink

            await peer.conns[0].send(EnquireLink(sequence=77))
            await peer.wait(lambda: peer.enquire_link_resps == 1 and peer.enquire_links >= 1)
            tg.cancel_scope.cancel()


async def test_an_unanswered_enquire_link_means_a_dead_socket() -> None:
    async with Peer(answer_enquire_link=False) as peer:
        async with smpp(peer, enquire_link=0.05, timeout=0.1) as driver, \
                anyio.create_task_group() as tg:
            tg.start_soon(driver.serve)
            await peer.wait(lambda: len(peer.binds) >= 2)
            assert driver.statistics().reconnects >= 1
            tg.cancel_scope.cancel()


def test_backoff_doubles_to_thirty_seconds_with_jitter() -> None:
    top = Backoff(random=lambda: 1.0)
    assert [top.delay(n) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert Backoff(random=lambda: 0.0).delay(0) == 0.25


async def test_sequence_numbers_wrap_after_0x7fffffff() -> None:
    async with Peer() as peer:
        async with smpp(peer) as driver:
            await driver.send_batch([msg(0)])
            driver._sessions[0]._sequence = 0x7FFFFFFE
            results = await driver.send_batch([msg(1), msg(2)])
        assert {r.status for r in results} == {"accepted"}
        assert [p.sequence for p in peer.submits[1:]] == [0x7FFFFFFF, 1]
