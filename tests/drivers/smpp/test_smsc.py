"""The SMPP simulator itself, spoken to in raw bytes built here with ``struct``: what an
ESME sees on the wire and what the simulator records."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

from engine.cli.simulate import add_simulate_parser
from engine.simulator.smpp import SmppSimulator

pytestmark = pytest.mark.anyio

BIND_RX, BIND_TX, SUBMIT, DELIVER, UNBIND, BIND_TRX, ENQUIRE = 0x1, 0x2, 0x4, 0x5, 0x6, 0x9, 0x15
RESP = 0x80000000
NACK = 0x80000000


def cstr(text: str) -> bytes:
    return text.encode("latin-1") + b"\0"


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def bind_body(system_id: str = "herald", password: str = "secret") -> bytes:
    return cstr(system_id) + cstr(password) + cstr("") + bytes((0x34, 0, 0)) + cstr("")


def submit_body(short: bytes, *, source: str = "ACME", to: str = "447911000001", dc: int = 0,
                esm: int = 0, rd: int = 0, tlvs: bytes = b"") -> bytes:
    return (cstr("") + bytes((5, 0)) + cstr(source) + bytes((1, 1)) + cstr(to)
            + bytes((esm, 0, 0)) + cstr("") + cstr("") + bytes((rd, 0, dc, 0, len(short)))
            + short + tlvs)


def read_deliver(body: bytes) -> dict[str, Any]:
    """The fields of a deliver_sm body a test looks at."""
    def cs(at: int) -> tuple[str, int]:
        end = body.index(0, at)
        return body[at:end].decode("latin-1"), end + 1

    _, at = cs(0)
    source, at = cs(at + 2)
    destination, at = cs(at + 2)
    esm = body[at]
    _, at = cs(at + 3)
    _, at = cs(at)
    dc, length = body[at + 2], body[at + 4]
    short = body[at + 5:at + 5 + length]
    at += 5 + length
    tlvs = {}
    while at < len(body):
        tag, size = struct.unpack_from(">HH", body, at)
        tlvs[tag] = body[at + 4:at + 4 + size]
        at += 4 + size
    return {"source": source, "destination": destination, "esm_class": esm,
            "data_coding": dc, "short": short, "tlvs": tlvs}


class Esme:
    """A raw SMPP client: whole PDUs out, whole PDUs in."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.seq = itertools.count(1)

    async def send(self, command: int, body: bytes = b"", *, seq: int | None = None,
                   status: int = 0) -> int:
        seq = next(self.seq) if seq is None else seq
        await self.stream.send(struct.pack(">IIII", 16 + len(body), command, status, seq) + body)
        return seq

    async def read(self) -> tuple[int, int, int, bytes]:
        """(command id, status, sequence, body) of the next PDU."""
        while True:
            if len(self.buffer) >= 16:
                length, command, status, seq = struct.unpack_from(">IIII", self.buffer)
                if len(self.buffer) >= length:
                    body = bytes(self.buffer[16:length])
                    del self.buffer[:length]
                    return command, status, seq, body
            self.buffer += await self.stream.receive()

    async def bind(self, command: int = BIND_TRX, **kw: str) -> int:
        seq = await self.send(command, bind_body(**kw))
        resp, status, rseq, _ = await self.read()
        assert (resp, rseq) == (command | RESP, seq)
        return status

    async def submit(self, short: bytes, **kw: Any) -> tuple[int, str]:
        """(status, message id) of one submit_sm."""
        seq = await self.send(SUBMIT, submit_body(short, **kw))
        command, status, rseq, body = await self.read()
        assert (command, rseq) == (SUBMIT | RESP, seq)
        return status, body.rstrip(b"\0").decode()


@contextlib.asynccontextmanager
async def esme(sim: SmppSimulator, bind: int | None = BIND_TRX) -> AsyncIterator[Esme]:
    async with await anyio.connect_tcp("127.0.0.1", sim.port) as stream:
        client = Esme(stream)
        if bind is not None:
            assert await client.bind(bind) == 0
        yield client


async def test_a_bind_with_the_right_credentials_is_accepted() -> None:
    async with SmppSimulator() as sim, esme(sim, None) as client:
        seq = await client.send(BIND_TRX, bind_body())
        command, status, rseq, body = await client.read()
        assert (command, status, rseq) == (BIND_TRX | RESP, 0, seq)
        assert body.startswith(b"herald-sim\0")
    assert sim.statistics().binds == 1
    assert [s.bind for s in sim.sessions()] == ["transceiver"]


async def test_bad_credentials_are_refused_with_their_status() -> None:
    async with SmppSimulator(system_id="herald", password="secret") as sim:
        async with esme(sim, None) as client:
            assert await client.bind(password="wrong") == 0x0E
            assert await client.bind(system_id="nobody") == 0x0F
            # still unbound: a submit is refused for the bind state
            status, _ = await client.submit(b"hi")
            assert status == 0x04
        assert sim.statistics().binds_refused == 2 and sim.received == []


async def test_a_submit_is_answered_with_an_id_and_recorded() -> None:
    async with SmppSimulator() as sim, esme(sim) as client:
        gsm = bytes((0x48, 0x69, 0x20, 0x1B, 0x65, 0x35, 0x20, 0x1B, 0x3C, 0x00, 0x1B, 0x3E))
        status, mid = await client.submit(gsm, rd=1)
        assert status == 0 and int(mid, 16) > 0
    r = sim.received[0]
    assert (r.source, r.destination, r.data_coding, r.registered_delivery) == (
        "ACME", "447911000001", 0, 1)
    assert r.text == "Hi €5 [@]" and r.septets == 12 and r.message_id == mid
    assert [(m.text, m.parts, m.via) for m in sim.messages] == [("Hi €5 [@]", 1, "single")]
    assert sim.counts[("447911000001", "Hi €5 [@]")] == 1


async def test_decimal_ids_with_leading_zeros() -> None:
    async with SmppSimulator(id_format="decimal", id_width=12) as sim, esme(sim) as client:
        _, first = await client.submit(b"a")
        _, second = await client.submit(b"b")
    assert len(first) == 12 and first.startswith("0") and first.isdigit()
    assert int(second) == int(first) + 1


def udh(ref: int, total: int, seq: int) -> bytes:
    return bytes((5, 0, 3, ref, total, seq))


async def test_concatenated_parts_are_reassembled_in_order() -> None:
    async with SmppSimulator() as sim, esme(sim) as client:
        parts = [b"A" * 153, b"B" * 153, b"C" * 10]
        for seq in (2, 1, 3):  # out of order on purpose
            status, _ = await client.submit(udh(7, 3, seq) + parts[seq - 1], esm=0x40)
            assert status == 0
        # UCS-2 with a 16-bit ref, a surrogate pair kept whole
        text = "Привет 😀 " * 10
        data = text.encode("utf-16-be")
        chunks = [data[:132], data[132:]]
        for seq, chunk in enumerate(chunks, 1):
            head = bytes((6, 8, 4, 0x01, 0x02, 2, seq))
            await client.submit(head + chunk, esm=0x40, dc=8)
        # one more that splits an escape pair across parts
        await client.submit(udh(9, 2, 1) + b"x" * 152 + b"\x1b", esm=0x40)
        await client.submit(udh(9, 2, 2) + b"\x65", esm=0x40)
    whole = {m.text[:1]: m for m in sim.messages}
    assert whole["A"].text == "A" * 153 + "B" * 153 + "C" * 10
    assert (whole["A"].parts, whole["A"].via, whole["A"].data_coding) == (3, "udh", 0)
    assert whole["П"].text == text and whole["П"].data_coding == 8
    assert [r.udh for r in sim.received[:3]] == [(7, 3, 2), (7, 3, 1), (7, 3, 3)]
    assert whole["x"].text == "x" * 152 + "€"  # reassembled right, but the part was wrong
    stats = sim.statistics()
    assert stats.split_pairs == 1 and stats.oversized_parts == 0 and stats.messages == 3


async def test_sar_tlvs_and_message_payload() -> None:
    async with SmppSimulator() as sim, esme(sim) as client:
        for seq, piece in enumerate((b"one ", b"two"), 1):
            sar = tlv(0x020C, b"\x00\x05") + tlv(0x020E, b"\x02") + tlv(0x020F, bytes((seq,)))
            await client.submit(piece, tlvs=sar)
        await client.submit(b"", tlvs=tlv(0x0424, b"z" * 400))
        await client.submit(b"y" * 161)  # over 160 septets in one part
    assert [(m.text, m.via) for m in sim.messages] == [("one two", "sar"), ("z" * 400,
                                                                           "payload"),
                                                       ("y" * 161, "single")]
    assert sim.received[0].sar == (5, 2, 1)
    assert sim.statistics().oversized_parts == 1


async def test_throttling_answers_rthrottled_over_the_rate() -> None:
    async with SmppSimulator(throttle_rate=5, throttle_burst=2) as sim, esme(sim) as client:
        statuses = [(await client.submit(b"t"))[0] for _ in range(6)]
    assert statuses[:2] == [0, 0] and set(statuses[2:]) == {0x58}
    assert sim.statistics().throttled >= 3


async def test_error_rates_answer_their_statuses() -> None:
    async with SmppSimulator(error_rate=1.0) as sim, esme(sim) as client:
        assert (await client.submit(b"x"))[0] == 0x0B
        sim.configure(error_rate=0.0, retry_error_rate=1.0)
        assert (await client.submit(b"x"))[0] == 0x08
        sim.configure(retry_error_rate=0.0, no_answer_rate=1.0)
        await client.send(SUBMIT, submit_body(b"lost"))
        await sim.wait_until(lambda: len(sim.received) == 3)
        sim.configure(no_answer_rate=0.0)
        status, _ = await client.submit(b"found")  # the next answer is this one's
        assert status == 0
    assert [r.status for r in sim.received] == [0x0B, 0x08, None, 0]
    assert [m.text for m in sim.messages] == ["found"]


async def test_receipts_come_as_deliver_sm_and_acks_are_recorded() -> None:
    async with SmppSimulator(receipt_form="both", id_format="decimal",
                             receipt_id_format="hex") as sim, esme(sim) as client:
        status, mid = await client.submit(b"hello", rd=1)
        command, _, seq, body = await client.read()
        assert status == 0 and command == DELIVER
        d = read_deliver(body)
        assert d["esm_class"] == 0x04 and d["source"] == "447911000001"
        assert d["destination"] == "ACME"
        rid = format(int(mid), "x")
        assert d["tlvs"][0x001E] == rid.encode() + b"\0" and d["tlvs"][0x0427] == b"\x02"
        assert d["short"].startswith(f"id:{rid} sub:001 dlvrd:001 ".encode())
        assert b" stat:DELIVRD err:000 text:hello" in d["short"]
        assert sim.acked_receipts == []
        await client.send(DELIVER | RESP, b"\0", seq=seq)
        await sim.wait_until(lambda: sim.acked_receipts == [rid])


async def test_a_refused_receipt_is_sent_again_and_text_only_undelivered() -> None:
    async with SmppSimulator(receipt_form="text", undelivered_rate=1.0, undelivered_err=34,
                             redeliver_after=0.0) as sim, esme(sim) as client:
        _, mid = await client.submit(b"hello", rd=1)
        _, _, seq, body = await client.read()
        first = read_deliver(body)
        assert first["tlvs"] == {} and b"stat:UNDELIV err:034" in first["short"]
        await client.send(DELIVER | RESP, seq=seq, status=0x58)  # "throttled": not stored
        _, _, again, body = await client.read()
        assert again != seq and read_deliver(body)["short"] == first["short"]
        await client.send(DELIVER | RESP, b"\0", seq=again)
        await sim.wait_until(lambda: sim.acked_receipts == [mid])
    assert sim.statistics().redeliveries == 1
    assert sim.messages[0].outcome == "undelivered"


async def test_receipts_go_to_a_receiver_session_and_may_precede_the_resp() -> None:
    async with SmppSimulator(receipt_before_resp=True) as sim:
        async with esme(sim, BIND_RX) as rx, esme(sim, BIND_TX) as tx:
            await tx.send(SUBMIT, submit_body(b"hi", rd=1))
            command, _, seq, _ = await rx.read()
            assert command == DELIVER
            assert (await tx.read())[0] == SUBMIT | RESP
            await rx.send(DELIVER | RESP, b"\0", seq=seq)
            await sim.wait_until(lambda: len(sim.acked_receipts) == 1)
        async with esme(sim) as trx:
            seq = await trx.send(SUBMIT, submit_body(b"again", rd=1))
            first, second = await trx.read(), await trx.read()
            assert (first[0], second[0], second[2]) == (DELIVER, SUBMIT | RESP, seq)


async def test_a_receipt_unacked_when_the_session_ends_goes_to_the_next_one() -> None:
    async with SmppSimulator() as sim:
        async with esme(sim) as client:
            _, mid = await client.submit(b"hi", rd=1)
            assert (await client.read())[0] == DELIVER  # left unanswered
        async with esme(sim) as client:
            command, _, seq, body = await client.read()
            assert command == DELIVER and read_deliver(body)["tlvs"][0x001E] == cstr(mid)
            await client.send(DELIVER | RESP, b"\0", seq=seq)
            await sim.wait_until(lambda: sim.acked_receipts == [mid])


async def test_inbound_messages_are_deliver_sm_that_are_not_receipts() -> None:
    async with SmppSimulator() as sim, esme(sim) as client:
        await client.submit(b"hi", source="ACME")
        async with anyio.create_task_group() as tg:
            status: list[int] = []

            async def reply() -> None:
                status.append(await sim.send_inbound("+447911000001", "STOP"))

            tg.start_soon(reply)
            command, _, seq, body = await client.read()
            d = read_deliver(body)
            assert command == DELIVER and d["esm_class"] == 0
            assert (d["source"], d["destination"], d["short"]) == ("447911000001", "ACME",
                                                                   b"STOP")
            await client.send(DELIVER | RESP, b"\0", seq=seq)
        assert status == [0]
        async with anyio.create_task_group() as tg:
            tg.start_soon(sim.send_inbound, "+447911000001", "Стоп")
            _, _, seq, body = await client.read()
            d = read_deliver(body)
            assert d["data_coding"] == 8 and d["short"].decode("utf-16-be") == "Стоп"
            await client.send(DELIVER | RESP, b"\0", seq=seq)
    assert sim.statistics().inbound_acked == 2


async def test_enquire_link_is_answered_until_told_not_to() -> None:
    async with SmppSimulator() as sim, esme(sim) as client:
        seq = await client.send(ENQUIRE)
        assert (await client.read())[:3] == (ENQUIRE | RESP, 0, seq)
        sim.configure(enquire_link_answer=False)
        await client.send(ENQUIRE)
        status, _ = await client.submit(b"x")  # the next PDU is the submit's answer
        assert status == 0


async def test_unbind_after_n_submits_then_close_on_unbind_resp() -> None:
    async with SmppSimulator(unbind_after=2) as sim, esme(sim) as client:
        await client.submit(b"1")
        await client.submit(b"2")
        command, _, seq, _ = await client.read()
        assert command == UNBIND
        # a submit already on its way is still answered before the close
        assert (await client.submit(b"3"))[0] == 0
        await client.send(UNBIND | RESP, seq=seq)
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await client.read()
    assert sim.statistics().unbinds_sent == 1 and len(sim.messages) == 3


async def test_drop_after_closes_the_socket_without_answering() -> None:
    async with SmppSimulator(drop_after=2) as sim, esme(sim) as client:
        assert (await client.submit(b"1"))[0] == 0
        await client.send(SUBMIT, submit_body(b"2"))
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await client.read()
    assert [r.status for r in sim.received] == [0, None]
    assert sim.statistics().drops == 1


async def test_with_latency_the_outstanding_submits_are_counted() -> None:
    async with SmppSimulator(latency=0.05) as sim, esme(sim) as client:
        seqs = []
        for i in range(5):
            seqs.append(await client.send(SUBMIT, submit_body(b"w%d" % i)))
        answered = [(await client.read())[2] for _ in seqs]
        assert answered == seqs
    assert sim.sessions()[0].max_in_flight == 5 and sim.statistics().max_in_flight == 5


async def test_an_unknown_command_gets_a_generic_nack() -> None:
    async with SmppSimulator() as sim, esme(sim) as client:
        seq = await client.send(0x00000103 + 0x1000)
        assert (await client.read())[:3] == (NACK, 0x03, seq)
    assert sim.statistics().generic_nacks == 1


def test_herald_simulate_smpp_serves_until_signalled_then_prints_its_statistics() -> None:
    cmd = [sys.executable, "-m", "engine.cli", "simulate", "--smpp", "--port", "0",
           "--system-id", "acme", "--password", "pw", "--error-rate", "1"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout is not None
            where = child.stdout.readline().strip()
            assert where.startswith("smpp://127.0.0.1:"), where
            port = int(where.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                body = bind_body("acme", "pw")
                sock.sendall(struct.pack(">IIII", 16 + len(body), BIND_TRX, 0, 1) + body)
                sub = submit_body(b"hi")
                sock.sendall(struct.pack(">IIII", 16 + len(sub), SUBMIT, 0, 2) + sub)
                data = b""
                while len(data) < 32 + 16:  # bind resp, then the submit's answer
                    data += sock.recv(4096)
            _, command, status, seq = struct.unpack_from(">IIII", data, 32)
            assert (command, status, seq) == (SUBMIT | RESP, 0x0B, 2)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=10)
        finally:
            child.kill()
    assert child.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert (stats["binds"], stats["submits"], stats["errors"]) == (1, 1, 1)
    assert "system_id 'acme'" in err


def test_smpp_flags_need_smpp(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="herald")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", "--port", "0", "--unbind-after", "5"])
    assert args.func(args) == 2
    assert "--unbind-after only with --smpp" in capsys.readouterr().err
    args = parser.parse_args(["simulate", "--smpp", "--error-rate", "2"])
    assert args.func(args) == 2
    assert "error_rate must be between 0 and 1" in capsys.readouterr().err
