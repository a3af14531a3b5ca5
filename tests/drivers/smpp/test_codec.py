"""The SMPP 3.4 PDU codec: hand-built captures from the spec, round trips, framing over any
chunking, malformed input, and the command_status table."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald_smpp.codec import (
    BIND_CREDENTIAL_ERRORS,
    MESSAGE_STATE,
    RECEIPTED_MESSAGE_ID,
    SAR_MSG_REF_NUM,
    SC_INTERFACE_VERSION,
    STATUS,
    Bind,
    BindResp,
    CodecError,
    CommandId,
    DataSm,
    DataSmResp,
    Decoder,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnknownPdu,
    describe,
    encode,
    kind,
)


def hexbytes(text: str) -> bytes:
    """Hex with spaces and ``|`` separators (for readability) to bytes."""
    return bytes.fromhex(text.replace("|", " "))


def ascii_z(text: str) -> str:
    """A C-octet string in hex (ASCII + NUL)."""
    return (text.encode() + b"\0").hex()


# -- Captures built by hand from SMPP 3.4 section 4 ------------------------------------------

BIND_TRANSCEIVER = hexbytes(
    "0000002f 00000009 00000000 00000001"  # length 47, bind_transceiver, ok, seq 1
    + ascii_z("SMPP3TEST")  # system_id
    + ascii_z("secret08")  # password
    + ascii_z("SUBMIT1")  # system_type
    + "34 01 01"  # interface_version 3.4, addr_ton, addr_npi
    + "00"  # address_range ""
)

BIND_TRANSCEIVER_RESP = hexbytes(
    "0000001a 80000009 00000000 00000001"
    + ascii_z("SMSC")
    + "0210 0001 34"  # sc_interface_version 0x34
)

SUBMIT_SM_RESP = hexbytes("00000019 80000004 00000000 0000000a" + ascii_z("5F3A9B01"))

GENERIC_NACK = hexbytes("00000010 80000000 00000003 00000005")  # ESME_RINVCMDID, seq 5

RECEIPT_TEXT = (
    b"id:5F3A9B01 sub:001 dlvrd:001 submit date:2411301200 done date:2411301201 "
    b"stat:DELIVRD err:000 text:Hello"
)
DELIVER_SM_RECEIPT = hexbytes(
    "000000ae 00000005 00000000 0000002a"  # length 174, deliver_sm, seq 42
    "00"  # service_type ""
    "01 01" + ascii_z("447700900123")  # source: international, ISDN
    + "05 00" + ascii_z("Herald")  # destination: alphanumeric
    + "04"  # esm_class: SMSC delivery receipt
    "00 00 00 00 00 00 00 00"  # protocol_id .. sm_default_msg_id (NULL times)
    "69" + RECEIPT_TEXT.hex()  # sm_length 105
    + "001e 0009" + ascii_z("5F3A9B01")  # receipted_message_id
    + "0427 0001 02"  # message_state DELIVERED
)

SUBMIT_SM = hexbytes(
    "0000003e 00000004 00000000 00000007"  # length 62, submit_sm, seq 7
    "00"  # service_type ""
    "05 00" + ascii_z("Herald")
    + "01 01" + ascii_z("447700900123")
    + "00 00 00"  # esm_class, protocol_id, priority_flag
    "00 00"  # schedule_delivery_time, validity_period
    "01 00 00 00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    "05" + b"Hello".hex()
    + "020c 0002 0102"  # sar_msg_ref_num 0x0102
)


def test_bind_transceiver_capture() -> None:
    [pdu] = Decoder().feed(BIND_TRANSCEIVER)
    assert pdu == Bind(
        sequence=1,
        kind="transceiver",
        system_id="SMPP3TEST",
        password="secret08",
        system_type="SUBMIT1",
        addr_ton=1,
        addr_npi=1,
    )
    assert pdu.command_id == CommandId.BIND_TRANSCEIVER
    assert encode(pdu) == BIND_TRANSCEIVER


def test_bind_resp_capture_keeps_its_tlvs() -> None:
    [pdu] = Decoder().feed(BIND_TRANSCEIVER_RESP)
    assert pdu == BindResp(
        sequence=1, kind="transceiver", system_id="SMSC", tlvs={SC_INTERFACE_VERSION: b"\x34"}
    )
    assert encode(pdu) == BIND_TRANSCEIVER_RESP


def test_submit_sm_encodes_to_the_spec_layout() -> None:
    pdu = SubmitSm(
        sequence=7,
        source_addr_ton=5,
        source_addr="Herald",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="447700900123",
        registered_delivery=1,
        short_message=b"Hello",
        tlvs={SAR_MSG_REF_NUM: b"\x01\x02"},
    )
    assert encode(pdu) == SUBMIT_SM
    assert Decoder().feed(SUBMIT_SM) == [pdu]


def test_submit_sm_resp_and_generic_nack_captures() -> None:
    assert Decoder().feed(SUBMIT_SM_RESP + GENERIC_NACK) == [
        SubmitSmResp(sequence=10, message_id="5F3A9B01"),
        GenericNack(sequence=5, status=3),
    ]


def test_deliver_sm_receipt_capture() -> None:
    [pdu] = Decoder().feed(DELIVER_SM_RECEIPT)
    assert isinstance(pdu, DeliverSm)
    assert pdu.sequence == 42
    assert (pdu.source_addr, pdu.destination_addr, pdu.dest_addr_ton) == (
        "447700900123", "Herald", 5
    )
    assert pdu.esm_class == 0x04
    assert pdu.short_message == RECEIPT_TEXT
    assert pdu.tlvs == {RECEIPTED_MESSAGE_ID: b"5F3A9B01\0", MESSAGE_STATE: b"\x02"}
    assert encode(pdu) == DELIVER_SM_RECEIPT


def test_error_responses_without_a_body_decode_with_defaults() -> None:
    # SMPP 3.4: a submit_sm_resp or bind_resp with an error status carries no body.
    data = hexbytes("00000010 80000004 00000058 00000003 00000010 80000002 0000000e 00000001")
    assert Decoder().feed(data) == [
        SubmitSmResp(sequence=3, status=0x58),
        BindResp(sequence=1, status=0x0E, kind="transmitter"),
    ]


def test_a_message_id_without_its_nul_is_taken_to_the_end() -> None:
    data = hexbytes("00000014 80000004 00000000 00000009") + b"abcd"
    assert Decoder().feed(data) == [SubmitSmResp(sequence=9, message_id="abcd")]


def test_unknown_command_ids_decode_raw() -> None:
    data = hexbytes("00000013 00000021 00000000 0000000b 616263")  # submit_multi, not spoken
    assert Decoder().feed(data) == [UnknownPdu(command_id=0x21, sequence=11, body=b"abc")]
    assert encode(UnknownPdu(command_id=0x21, sequence=11, body=b"abc")) == data


# -- Round trips ------------------------------------------------------------------------------

EVERY_PDU: list[Pdu] = [
    Bind(sequence=1, kind="transmitter", system_id="herald", password="pw", system_type="x",
         addr_ton=1, addr_npi=1, address_range="^44"),
    Bind(sequence=2, kind="receiver", system_id="herald"),
    Bind(sequence=3, kind="transceiver", system_id="h", password="12345678"),
    BindResp(sequence=1, kind="transmitter", system_id="SMSC"),
    BindResp(sequence=2, kind="receiver", status=0x0D),
    BindResp(sequence=3, kind="transceiver", system_id="S", tlvs={SC_INTERFACE_VERSION: b"4"}),
    Outbind(sequence=4, system_id="smsc", password="pw"),
    SubmitSm(sequence=5, service_type="CMT", source_addr="Herald", destination_addr="4477",
             esm_class=0x40, protocol_id=1, priority_flag=2,
             schedule_delivery_time="241130120000000+", validity_period="000001000000000R",
             registered_delivery=1, replace_if_present_flag=1, data_coding=8,
             sm_default_msg_id=3, short_message=bytes(range(254)),
             tlvs={0x0424: b"x" * 1000, 0x1400: b""}),
    SubmitSmResp(sequence=5, message_id="a" * 64),
    DeliverSm(sequence=6, source_addr="447700900123", short_message=b"STOP"),
    DeliverSmResp(sequence=6),
    DataSm(sequence=7, source_addr="1" * 64, destination_addr="2" * 64, esm_class=4,
           registered_delivery=1, data_coding=8, tlvs={0x0424: "hi".encode("utf-16-be")}),
    DataSmResp(sequence=7, message_id="m1", tlvs={0x001D: b"fine\0"}),
    QuerySm(sequence=8, message_id="m1", source_addr_ton=5, source_addr="Herald"),
    QuerySmResp(sequence=8, message_id="m1", final_date="241130120000000+", message_state=2,
                error_code=0),
    EnquireLink(sequence=9),
    EnquireLinkResp(sequence=9),
    Unbind(sequence=10),
    UnbindResp(sequence=10),
    GenericNack(sequence=11, status=0x02),
    UnknownPdu(command_id=0x80000021, sequence=12, body=b"\x00\x01"),
]


@pytest.mark.parametrize("pdu", EVERY_PDU, ids=lambda pdu: type(pdu).__name__)
def test_every_pdu_round_trips(pdu: Pdu) -> None:
    data = encode(pdu)
    assert int.from_bytes(data[:4], "big") == len(data)
    assert int.from_bytes(data[4:8], "big") == pdu.command_id
    assert Decoder().feed(data) == [pdu]


STREAM = b"".join(encode(pdu) for pdu in EVERY_PDU)


def test_a_stream_fed_byte_by_byte() -> None:
    decoder = Decoder()
    out: list[Pdu] = []
    for i in range(len(STREAM)):
        out += decoder.feed(STREAM[i : i + 1])
    assert out == EVERY_PDU
    assert decoder.buffered == 0


@given(st.lists(st.integers(0, len(STREAM)), max_size=30))
def test_a_stream_in_any_chunks(cuts: list[int]) -> None:
    decoder = Decoder()
    out: list[Pdu] = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for start, end in itertools.pairwise(bounds):
        out += decoder.feed(STREAM[start:end])
    assert out == EVERY_PDU


text_fields = st.text(st.characters(min_codepoint=1, max_codepoint=0xFF), max_size=20)


@given(
    service_type=text_fields.filter(lambda s: len(s) <= 5),
    source_addr=text_fields,
    destination_addr=text_fields,
    octets=st.lists(st.integers(0, 255), min_size=8, max_size=8),
    short_message=st.binary(max_size=254),
    tlvs=st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=300), max_size=4),
    sequence=st.integers(0, 0xFFFFFFFF),
)
def test_any_submit_sm_round_trips(
    service_type: str,
    source_addr: str,
    destination_addr: str,
    octets: list[int],
    short_message: bytes,
    tlvs: dict[int, bytes],
    sequence: int,
) -> None:
    pdu = SubmitSm(
        sequence=sequence,
        service_type=service_type,
        source_addr=source_addr,
        destination_addr=destination_addr,
        source_addr_ton=octets[0],
        source_addr_npi=octets[1],
        dest_addr_ton=octets[2],
        dest_addr_npi=octets[3],
        esm_class=octets[4],
        registered_delivery=octets[5],
        data_coding=octets[6],
        priority_flag=octets[7],
        short_message=short_message,
        tlvs=tlvs,
    )
    assert Decoder().feed(encode(pdu)) == [pdu]


# -- Encoding refuses what does not fit ------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "field"),
    [
        (Bind(system_id="x" * 16), "system_id"),
        (Bind(password="x" * 9), "password"),
        (SubmitSm(source_addr="1" * 21), "source_addr"),
        (SubmitSm(destination_addr="€"), "destination_addr"),
        (SubmitSm(service_type="a\0b"), "service_type"),
        (SubmitSm(short_message=b"x" * 255), "short_message"),
        (SubmitSm(data_coding=256), "data_coding"),
        (SubmitSmResp(message_id="x" * 65), "message_id"),
        (EnquireLink(sequence=2**32), "sequence"),
        (Bind(kind="outbound"), "kind"),  # type: ignore[arg-type]
    ],
)
def test_encode_names_the_field_that_does_not_fit(pdu: Pdu, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        encode(pdu)


def test_the_longest_values_that_fit_encode() -> None:
    pdu = SubmitSm(source_addr="1" * 20, destination_addr="2" * 20, short_message=b"x" * 254)
    assert Decoder().feed(encode(pdu)) == [pdu]


# -- Malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 15, 65537, 0xFFFFFFFF])
def test_a_bad_command_length_is_fatal(length: int) -> None:
    decoder = Decoder()
    data = length.to_bytes(4, "big") + hexbytes("00000004 00000000 0000002a") + b"\0" * 20
    with pytest.raises(CodecError, match="cannot be resynchronised") as caught:
        decoder.feed(data)
    err = caught.value
    assert (err.fatal, err.status, err.command_id, err.sequence) == (True, 0x02, 4, 42)
    with pytest.raises(CodecError) as again:  # the stream stays lost
        decoder.feed(encode(EnquireLink(sequence=1)))
    assert again.value.fatal


def test_max_length_is_configurable() -> None:
    big = encode(SubmitSm(short_message=b"x" * 200, tlvs={0x0424: b"y" * 500}))
    assert Decoder(max_length=len(big)).feed(big)
    with pytest.raises(CodecError) as caught:
        Decoder(max_length=len(big) - 1).feed(big)
    assert caught.value.fatal


def test_pdus_before_a_fatal_length_are_still_handed_over() -> None:
    decoder = Decoder()
    good = encode(EnquireLink(sequence=1))
    assert decoder.feed(good + hexbytes("00000008 00000015 00000000 00000002")) == [
        EnquireLink(sequence=1)
    ]
    with pytest.raises(CodecError) as caught:
        decoder.feed(b"")
    assert caught.value.fatal


# A submit_sm whose destination_addr has no NUL before the end of the PDU.
TRUNCATED = hexbytes("00000017 00000004 00000000 00000063 00 0101 3434 3737")


def test_a_bad_body_skips_only_that_pdu() -> None:
    decoder = Decoder()
    after = encode(EnquireLink(sequence=100))
    with pytest.raises(CodecError) as caught:
        decoder.feed(TRUNCATED + after)
    err = caught.value
    assert (err.fatal, err.status, err.command_id, err.sequence) == (False, 0x02, 4, 0x63)
    assert "destination_addr" in str(err) or "source_addr" in str(err)
    assert decoder.feed(b"") == [EnquireLink(sequence=100)]
    assert decoder.feed(after) == [EnquireLink(sequence=100)]


def test_a_bad_body_raises_at_once_and_loses_nothing_around_it() -> None:
    decoder = Decoder()
    before, after = encode(EnquireLink(sequence=1)), encode(EnquireLink(sequence=2))
    with pytest.raises(CodecError) as caught:
        decoder.feed(before + TRUNCATED + after)
    assert caught.value.sequence == 0x63
    assert decoder.feed(b"") == [EnquireLink(sequence=1), EnquireLink(sequence=2)]
    assert decoder.feed(b"") == []


def test_pdus_kept_before_an_error_come_with_the_next_input() -> None:
    decoder = Decoder()
    with pytest.raises(CodecError):
        decoder.feed(encode(EnquireLink(sequence=1)) + TRUNCATED)
    assert decoder.feed(encode(Unbind(sequence=2))[:5]) == [EnquireLink(sequence=1)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("00 0000 00 0000 00 000000 00 00 00000000 05 6869", 0x02),  # sm_length 5, 2 octets left
        ("00 0000 00 0000 00 000000 00 00 00000000 00 0424 0005 6869", 0xC0),  # TLV past the end
        ("00 0000 00 0000 00 000000 00 00 00000000 00 04", 0xC0),  # half a TLV header
        ("00 0000 00 0000 00 000000 00 00", 0x02),  # stops before registered_delivery
    ],
)
def test_body_errors_carry_the_status_to_answer(body: str, status: int) -> None:
    raw = hexbytes(body)
    data = (16 + len(raw)).to_bytes(4, "big") + hexbytes("00000004 00000000 00000001") + raw
    with pytest.raises(CodecError) as caught:
        Decoder().feed(data)
    assert (caught.value.status, caught.value.fatal) == (status, False)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_raise_only_codec_errors(chunks: list[bytes]) -> None:
    decoder = Decoder(max_length=256)
    for chunk in chunks:
        for _ in range(len(chunk) + 2):  # drain: each call consumes or raises fatally
            try:
                decoder.feed(chunk)
            except CodecError as err:
                if err.fatal:
                    return
                chunk = b""
                continue
            break


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=120), st.sampled_from(sorted(int(c) for c in CommandId)))
def test_random_bodies_of_known_commands_raise_only_codec_errors(body: bytes, cid: int) -> None:
    data = (16 + len(body)).to_bytes(4, "big") + cid.to_bytes(4, "big") + bytes(8) + body
    try:
        pdus = Decoder().feed(data)
    except CodecError as err:
        assert not err.fatal
    else:
        assert len(pdus) == 1


# -- command_status ---------------------------------------------------------------------------


def test_describe_names_the_status() -> None:
    assert describe(0x58) == "ESME_RTHROTTLED (0x00000058)"
    assert describe(0) == "ESME_ROK (0x00000000)"
    assert describe(0x401) == "vendor-specific error (0x00000401)"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0x00, "ok"),
        (0x58, "throttled"),
        (0x14, "throttled"),
        (0x08, "retry"),
        (0x64, "retry"),
        (0xFF, "retry"),
        (0x0B, "permanent"),
        (0x0A, "permanent"),
        (0x65, "permanent"),
        (0x66, "permanent"),
        (0x0E, "permanent"),
        (0x450, "retry"),  # vendor-specific: a refused submit is safe to resend
        (0x1234, "retry"),
    ],
)
def test_kind_of_each_status(status: int, expected: str) -> None:
    assert kind(status) == expected


def test_the_table_covers_the_spec_and_credentials_are_permanent() -> None:
    assert len(STATUS) == 48
    assert all(name.startswith("ESME_R") for name, _ in STATUS.values())
    assert {kind(code) for code in BIND_CREDENTIAL_ERRORS} == {"permanent"}
    assert {code for code, (_, k) in STATUS.items() if k == "throttled"} == {0x14, 0x58}
