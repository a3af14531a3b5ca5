"""GSM 03.38 encoding, 7-bit packing, and a text's submit_sm parts: they agree with Herald's
own segment count and never cut an escape pair or a surrogate pair."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.core.sms import GSM7_BASIC, GSM7_EXTENSION, measure, split
from herald_smpp.codec import (
    ESM_UDHI,
    MESSAGE_PAYLOAD,
    SAR_MSG_REF_NUM,
    SAR_SEGMENT_SEQNUM,
    SAR_TOTAL_SEGMENTS,
    Decoder,
    Part,
    SubmitSm,
    concatenation,
    decode_gsm7,
    decode_text,
    decode_ucs2,
    encode,
    encode_gsm7,
    encode_ucs2,
    message_parts,
    pack7,
    reassemble,
    unpack7,
)

# -- GSM 03.38 --------------------------------------------------------------------------------


def test_basic_table_codes_follow_the_standard() -> None:
    assert encode_gsm7("@£$¥") == b"\x00\x01\x02\x03"
    assert encode_gsm7("\n\r") == b"\x0a\x0d"
    assert encode_gsm7("ÆæßÉ") == b"\x1c\x1d\x1e\x1f"
    assert encode_gsm7(" ¤¡A§¿aà") == b"\x20\x24\x40\x41\x5f\x60\x61\x7f"
    assert encode_gsm7("Hello") == b"Hello"  # ASCII letters keep their codes


def test_extension_characters_are_escape_pairs() -> None:
    assert encode_gsm7("€") == b"\x1b\x65"
    assert encode_gsm7("^{}\\[~]|\f") == bytes.fromhex(
        "1b14 1b28 1b29 1b2f 1b3c 1b3d 1b3e 1b40 1b0a"
    )


@pytest.mark.parametrize("text", ["`", "\x1b", "ж", "😀", "ä`"])
def test_characters_outside_the_alphabet_are_none(text: str) -> None:
    assert encode_gsm7(text) is None
    assert measure(text).encoding == "ucs2"


def test_the_alphabet_is_herald_s() -> None:
    everything = GSM7_BASIC + GSM7_EXTENSION
    septets = encode_gsm7(everything)
    assert septets is not None
    assert len(septets) == measure(everything).length
    assert decode_gsm7(septets) == everything


@given(st.text())
def test_gsm7_is_chosen_exactly_when_herald_counts_gsm7(text: str) -> None:
    septets = encode_gsm7(text)
    assert (septets is not None) == (measure(text).encoding == "gsm7")
    if septets is not None:
        assert len(septets) == measure(text).length
        assert decode_gsm7(septets) == text


def test_unknown_escapes_show_the_basic_character() -> None:
    assert decode_gsm7(b"\x1bA") == "A"  # no extension at 0x41: the basic table's
    assert decode_gsm7(b"a\x1b\x1bb") == "a b"  # reserved escape-escape: a space
    assert decode_gsm7(b"ab\x1b") == "ab\ufffd"  # a lone escape at the end
    assert decode_gsm7(b"\x80\xff") == "\ufffd\ufffd"  # not septets


def test_pack7_matches_the_03_38_examples() -> None:
    assert pack7(b"hello") == bytes.fromhex("e8329bfd06")
    # 7 septets leave 7 bits spare in the 7th octet: they hold CR, not @.
    assert pack7(b"1234567") == bytes.fromhex("31d98c56b3dd1a")
    assert pack7(b"12345678") == bytes.fromhex("31d98c56b3dd70")


@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack7_round_trips(septets: bytes, fill: int) -> None:
    packed = pack7(septets, fill)
    assert len(packed) * 8 - (fill + 7 * len(septets)) in range(8)
    assert unpack7(packed, len(septets), fill) == septets


def test_packed_text_loses_a_final_cr_only_where_03_38_makes_it_padding() -> None:
    assert decode_text(0, pack7(b"1234567"), packed=True) == "1234567"  # the pad CR goes
    assert decode_text(0, pack7(b"123456\r"), packed=True) == "123456\r"
    assert decode_text(0, pack7(b"1234567\r"), packed=True) == "1234567"  # ambiguous


def test_unpack7_refuses_more_septets_than_there_are() -> None:
    with pytest.raises(ValueError):
        unpack7(b"\x00", 2)


@given(st.text())
def test_ucs2_round_trips_with_surrogate_pairs(text: str) -> None:
    data = encode_ucs2(text)
    assert len(data) == 2 * len(text) + 2 * sum(ord(ch) > 0xFFFF for ch in text)
    assert decode_ucs2(data) == text


def test_ucs2_writes_astral_characters_as_pairs() -> None:
    assert encode_ucs2("a😀") == bytes.fromhex("0061 d83d de00")
    assert decode_ucs2(bytes.fromhex("d83d 0061")) == "\ufffda"  # a lone surrogate


# -- Parts ------------------------------------------------------------------------------------

gsm_text = st.text(st.sampled_from(GSM7_BASIC + GSM7_EXTENSION), max_size=700)
mixed_text = st.text(
    st.one_of(
        st.sampled_from("€[]{}^~|\\\fAbc 1é"),
        st.sampled_from("жЖ中文😀👍🏽🇬🇧ا"),
        st.characters(max_codepoint=0xD7FF),  # any character but a lone surrogate
        st.characters(min_codepoint=0xE000),
    ),
    max_size=400,
)
any_text = st.one_of(gsm_text, mixed_text, st.text(st.sampled_from("a€"), max_size=500))


def septets_on_air(part: Part, packed: bool) -> int:
    """Septets of user data (header included) an unpacked GSM-7 part takes over the air."""
    assert not packed
    if part.esm_class & ESM_UDHI:
        header = part.short_message[0] + 1
        return (header * 8 + 6) // 7 + len(part.short_message) - header
    return len(part.short_message)


@settings(max_examples=500)
@given(any_text, st.sampled_from(["udh", "sar"]), st.booleans(), st.integers(0, 70000))
def test_parts_agree_with_herald_s_segments(
    text: str, mode: str, packed: bool, reference: int
) -> None:
    info = measure(text)
    parts = message_parts(text, mode=mode, reference=reference, packed=packed)  # type: ignore[arg-type]
    # Packed septets have no count: a final CR on an octet boundary reads as padding.
    assume(not (packed and any(p.text.endswith("\r") for p in parts)))
    assert len(parts) == info.segments
    assert {p.data_coding for p in parts} == {0x00 if info.encoding == "gsm7" else 0x08}
    assert reassemble(parts, packed=packed) == text
    if len(parts) == 1:
        assert parts[0].esm_class == 0 and parts[0].tlvs == {}
        return
    assert [p.text for p in parts] == split(text)
    for seq, part in enumerate(parts, 1):
        body = part.short_message
        assert len(body) <= 254
        if info.encoding == "ucs2" or packed:
            assert len(body) <= 140  # one message over the air
        else:
            assert septets_on_air(part, packed) <= 160
        concat, data = concatenation(part.esm_class, body, part.tlvs)
        assert concat == ((reference & 0xFF) if mode == "udh" else (reference & 0xFFFF),
                          len(parts), seq)
        # No part cuts a pair: each decodes on its own to its own text.
        if info.encoding == "ucs2":
            assert decode_ucs2(data) == part.text
        elif not packed:
            assert not data.endswith(b"\x1b")
            assert decode_gsm7(data) == part.text


@given(any_text)
def test_payload_mode_sends_the_whole_text_at_once(text: str) -> None:
    parts = message_parts(text, mode="payload")
    assert len(parts) == 1
    if measure(text).segments == 1:
        assert MESSAGE_PAYLOAD not in parts[0].tlvs
    else:
        assert parts[0].short_message == b""
        coding = parts[0].data_coding
        assert decode_text(coding, parts[0].tlvs[MESSAGE_PAYLOAD]) == text


def test_a_three_part_gsm_message_has_the_udh_herald_promises() -> None:
    text = "x" * 152 + "€" + "y" * 200  # the euro would straddle the first boundary
    parts = message_parts(text, reference=0x1A7)
    assert len(parts) == measure(text).segments == 3
    assert [p.short_message[:6] for p in parts] == [
        bytes.fromhex("050003a70301"),
        bytes.fromhex("050003a70302"),
        bytes.fromhex("050003a70303"),
    ]
    assert all(p.esm_class == ESM_UDHI for p in parts)
    assert parts[0].short_message[6:] == b"x" * 152  # the euro moved to the second part
    assert parts[1].short_message[6:8] == b"\x1b\x65"


def test_a_long_ucs2_message_keeps_emoji_whole() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10  # the emoji's pair would straddle unit 67
    parts = message_parts(text, mode="sar", reference=0x1234)
    assert len(parts) == measure(text).segments == 2
    assert parts[0].data_coding == 0x08
    assert parts[0].short_message == encode_ucs2("ж" * 66)
    assert parts[0].tlvs == {
        SAR_MSG_REF_NUM: b"\x12\x34",
        SAR_TOTAL_SEGMENTS: b"\x02",
        SAR_SEGMENT_SEQNUM: b"\x01",
    }


def test_packed_parts_align_septets_after_the_header() -> None:
    parts = message_parts("a" * 200, packed=True)
    first = parts[0].short_message
    assert len(first) == 140  # 6 + 153 septets with one fill bit
    assert unpack7(first[6:], 153, 1) == b"a" * 153


def test_parts_fit_a_submit_sm() -> None:
    for part in message_parts("€" * 500) + message_parts("😀" * 100, mode="sar"):
        pdu = SubmitSm(data_coding=part.data_coding, esm_class=part.esm_class,
                       short_message=part.short_message, tlvs=part.tlvs)
        assert Decoder().feed(encode(pdu)) == [pdu]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        message_parts("x", mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference"):
        message_parts("x", reference=-1)
