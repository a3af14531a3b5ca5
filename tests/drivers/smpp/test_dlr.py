"""Delivery receipts as SMSCs send them: TLVs, the text form in its many spellings, both,
none; and message ids in hex, decimal, with leading zeros."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald_smpp.codec import (
    MESSAGE_PAYLOAD,
    MESSAGE_STATE,
    NETWORK_ERROR_CODE,
    RECEIPTED_MESSAGE_ID,
    DataSm,
    Decoder,
    DeliverSm,
    DeliveryReport,
    ReceiptError,
    convert_id,
    encode,
    is_receipt,
    normalise_id,
    parse_receipt,
)


def receipt(text: str = "", esm_class: int = 0x04, **tlvs: bytes) -> DeliverSm:
    tags = {"id": RECEIPTED_MESSAGE_ID, "state": MESSAGE_STATE, "error": NETWORK_ERROR_CODE}
    return DeliverSm(
        esm_class=esm_class,
        short_message=text.encode("latin-1"),
        tlvs={tags[key]: value for key, value in tlvs.items()},
    )


def utc(*fields: int) -> float:
    return float(calendar.timegm((*fields, 0, 0, 0)))


def test_is_receipt_reads_the_message_type_bits() -> None:
    assert is_receipt(receipt(esm_class=0x04))
    assert is_receipt(receipt(esm_class=0x44))  # UDHI set too
    assert is_receipt(receipt(esm_class=0x20))  # intermediate notification
    assert is_receipt(receipt(esm_class=0x08))  # SME delivery acknowledgement
    assert not is_receipt(receipt(esm_class=0x00))  # an inbound SMS
    assert not is_receipt(receipt(esm_class=0x40))
    assert not is_receipt(receipt(esm_class=0x10))  # manual/user acknowledgement


def test_tlv_form() -> None:
    report = parse_receipt(receipt(id=b"5F3A9B01\0", state=b"\x05", error=b"\x03\x00\x22"))
    assert report == DeliveryReport("5f3a9b01", "undelivered", "UNDELIV", "gsm:34", None)


@pytest.mark.parametrize(
    ("value", "stat", "state"),
    [
        (1, "ENROUTE", "enroute"),
        (2, "DELIVRD", "delivered"),
        (3, "EXPIRED", "undelivered"),
        (4, "DELETED", "undelivered"),
        (5, "UNDELIV", "undelivered"),
        (6, "ACCEPTD", "accepted"),
        (7, "UNKNOWN", "unknown"),
        (8, "REJECTD", "undelivered"),
        (9, "UNKNOWN", "unknown"),
    ],
)
def test_message_state_values(value: int, stat: str, state: str) -> None:
    report = parse_receipt(receipt(id=b"1", state=bytes((value,))))
    assert (report.stat, report.state) == (stat, state)


def test_text_form_as_appendix_b_writes_it() -> None:
    report = parse_receipt(receipt(
        "id:0123456789 sub:001 dlvrd:001 submit date:2411301200 done date:2411301205 "
        "stat:DELIVRD err:000 text:Your code is 1234"
    ))
    assert report == DeliveryReport("123456789", "delivered", "DELIVRD", None,
                                    utc(2024, 11, 30, 12, 5, 0))


def test_text_form_with_12_digit_dates_alphanumeric_err_and_odd_keys() -> None:
    report = parse_receipt(receipt(
        "ID:000A1B sub:001 DLVRD:000 Submit_Date:241130120000 DoneDate:241130120731 "
        "Stat:undeliv Err:X42 Text:hello"
    ))
    assert report == DeliveryReport("a1b", "undelivered", "UNDELIV", "X42",
                                    utc(2024, 11, 30, 12, 7, 31))


def test_text_form_fields_in_any_order_and_some_missing() -> None:
    report = parse_receipt(receipt("stat:REJECTD id:77 err:1"))
    assert report == DeliveryReport("77", "undelivered", "REJECTD", "1", None)
    assert parse_receipt(receipt("id:77")).state == "unknown"


def test_words_in_the_message_text_are_not_fields() -> None:
    report = parse_receipt(receipt(
        "id:9 sub:001 dlvrd:001 submit date:2411301200 done date:2411301200 stat:DELIVRD "
        "err:000 text:id:1 stat:UNDELIV"
    ))
    assert (report.message_id, report.stat) == ("9", "DELIVRD")


def test_long_stat_words_are_spelled_the_smpp_way() -> None:
    assert parse_receipt(receipt("id:1 stat:DELIVERED")).stat == "DELIVRD"
    assert parse_receipt(receipt("id:1 stat:ACCEPTED")).state == "accepted"
    assert parse_receipt(receipt("id:1 stat:WEIRD")).state == "unknown"


@pytest.mark.parametrize("date", ["0000000000", "000000000000", "24113012", "2413301200", "x"])
def test_bad_done_dates_are_none(date: str) -> None:
    assert parse_receipt(receipt(f"id:1 done date:{date} stat:DELIVRD")).done_at is None


def test_tlvs_win_where_both_are_given() -> None:
    report = parse_receipt(receipt(
        "id:111 stat:UNDELIV err:005 done date:2411301200",
        id=b"222\0", state=b"\x02", error=b"\x03\x00\x00",
    ))
    # Id, state and error from the TLVs; the done date only the text has.
    done = utc(2024, 11, 30, 12, 0, 0)
    assert report == DeliveryReport("222", "delivered", "DELIVRD", None, done)


def test_text_fills_in_what_the_tlvs_lack() -> None:
    report = parse_receipt(receipt("id:0042 stat:EXPIRED err:027", state=b"\x03"))
    assert report == DeliveryReport("42", "undelivered", "EXPIRED", "027", None)


def test_a_receipt_without_an_id_is_an_error() -> None:
    with pytest.raises(ReceiptError):
        parse_receipt(receipt("sub:001 stat:DELIVRD"))
    with pytest.raises(ValueError):
        parse_receipt(receipt("id: stat:DELIVRD", id=b"\0"))


def test_intermediate_notifications_are_enroute() -> None:
    report = parse_receipt(receipt("id:5 stat:DELIVRD", esm_class=0x20))
    assert report.state == "enroute"


def test_a_data_sm_receipt_in_message_payload() -> None:
    pdu = DataSm(esm_class=0x04, tlvs={MESSAGE_PAYLOAD: b"id:ab stat:DELIVRD err:000"})
    assert parse_receipt(pdu) == DeliveryReport("ab", "delivered", "DELIVRD")


def test_a_receipt_off_the_wire() -> None:
    pdu = receipt("id:00FF stat:DELIVRD", id=b"00FF\0")
    [decoded] = Decoder().feed(encode(pdu))
    assert isinstance(decoded, DeliverSm) and is_receipt(decoded)
    assert parse_receipt(decoded).message_id == "ff"


# -- Ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0042", "42"), (" AbC\0", "abc"), ("000", "0"), ("0", "0"), ("", ""), ("a b", "ab")],
)
def test_normalise_id(raw: str, expected: str) -> None:
    assert normalise_id(raw) == expected


def test_convert_id() -> None:
    assert convert_id("0255", "decimal") == "ff"  # receipt decimal, submit_sm_resp hex
    assert convert_id("00FF", "hex") == "255"
    assert convert_id("00FF", "same") == "ff"
    with pytest.raises(ValueError):
        convert_id("12ab", "decimal")
    with pytest.raises(ValueError):
        convert_id("xyz", "hex")
    with pytest.raises(ValueError):
        convert_id("", "hex")


@given(st.integers(0, 2**80))
def test_convert_id_matches_what_submit_sm_resp_said(number: int) -> None:
    as_hex, as_decimal = format(number, "X"), str(number)
    assert convert_id("00" + as_decimal, "decimal") == normalise_id(as_hex)
    assert convert_id(as_hex, "hex") == normalise_id(as_decimal)


@given(st.binary(max_size=200), st.dictionaries(st.sampled_from(
    [RECEIPTED_MESSAGE_ID, MESSAGE_STATE, NETWORK_ERROR_CODE]), st.binary(max_size=6)))
def test_any_receipt_parses_or_says_it_has_no_id(body: bytes, tlvs: dict[int, bytes]) -> None:
    try:
        report = parse_receipt(DeliverSm(esm_class=0x04, short_message=body, tlvs=tlvs))
    except ReceiptError:
        return
    assert report.message_id == normalise_id(report.message_id)
    assert report.message_id
