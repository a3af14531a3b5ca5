"""Delivery receipts: a ``deliver_sm`` (or ``data_sm``) with the receipt flag, as one report.

A receipt names the message by the id ``submit_sm_resp`` gave, in the TLV
``receipted_message_id`` and/or in the text form SMPP 3.4 Appendix B suggests::

    id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
    err:E text:...

Both are read; TLVs win where both are present. The text form is read loosely, as SMSCs
write it: keys in any case and any order (``submit_date`` and ``submitdate`` too), missing
fields, 10- or 12-digit dates (UTC), alphanumeric ``err``. A key that appears again after
``text:`` is part of the text, not a field.

Ids are compared normalised (:func:`normalise_id`: no whitespace or NULs, lowercase, no
leading zeros); some SMSCs answer ``submit_sm_resp`` in hex and write receipts in decimal or
the reverse (:func:`convert_id`).

``parse_receipt`` raises ``ReceiptError`` (a ``ValueError``) for a receipt without any id.
"""

from __future__ import annotations

import calendar
import re
from typing import Final, Literal

import msgspec

from .commands import (
    ESM_INTERMEDIATE,
    ESM_RECEIPT,
    ESM_RECEIPT_MASK,
    ESM_SME_ACK,
    DataSm,
    DeliverSm,
)
from .tlv import MESSAGE_PAYLOAD, MESSAGE_STATE, NETWORK_ERROR_CODE, RECEIPTED_MESSAGE_ID

__all__ = [
    "DeliveryReport",
    "ReceiptError",
    "ReceiptState",
    "convert_id",
    "is_receipt",
    "normalise_id",
    "parse_receipt",
    "parse_receipt_text",
]

ReceiptState = Literal["delivered", "undelivered", "enroute", "accepted", "unknown"]


class ReceiptError(ValueError):
    """A ``deliver_sm`` flagged as a receipt that names no message."""


class DeliveryReport(msgspec.Struct, frozen=True):
    """What a receipt says about one submitted message (one part of a long one).

    ``message_id`` is normalised; ``stat`` is the SMPP word (``DELIVRD``, ``UNDELIV``...);
    ``error`` the network error (``"gsm:34"`` from the TLV: network type and code) or the text
    form's ``err`` as written, ``None`` when there is none or it is all zeros; ``done_at`` the
    ``done date`` in epoch seconds (UTC), ``None`` when absent or not a date.
    """

    message_id: str
    state: ReceiptState
    stat: str
    error: str | None = None
    done_at: float | None = None


#: message_state TLV value -> the text form's word.
_STATE_WORDS: Final = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
#: Words SMSCs write -> the SMPP word.
_WORDS: Final = {
    "DELIVRD": "DELIVRD",
    "DELIVERED": "DELIVRD",
    "UNDELIV": "UNDELIV",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIVERED": "UNDELIV",
    "EXPIRED": "EXPIRED",
    "DELETED": "DELETED",
    "REJECTD": "REJECTD",
    "REJECTED": "REJECTD",
    "ACCEPTD": "ACCEPTD",
    "ACCEPTED": "ACCEPTD",
    "UNKNOWN": "UNKNOWN",
    "ENROUTE": "ENROUTE",
}
_STATES: Final[dict[str, ReceiptState]] = {
    "DELIVRD": "delivered",
    "UNDELIV": "undelivered",
    "EXPIRED": "undelivered",
    "DELETED": "undelivered",
    "REJECTD": "undelivered",
    "ACCEPTD": "accepted",
    "ENROUTE": "enroute",
    "UNKNOWN": "unknown",
}
_NETWORK_TYPES: Final = {1: "ansi136", 2: "is95", 3: "gsm"}

_KEY: Final = re.compile(
    r"(?<!\S)(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:", re.IGNORECASE
)


def is_receipt(pdu: DeliverSm | DataSm) -> bool:
    """Whether ``pdu`` reports on a message Herald sent rather than bringing one in: an SMSC
    delivery receipt (esm_class type 0x04), an SME delivery acknowledgement (0x08) or an
    intermediate notification (0x20)."""
    return pdu.esm_class & ESM_RECEIPT_MASK in (ESM_RECEIPT, ESM_SME_ACK, ESM_INTERMEDIATE)


def normalise_id(raw: str) -> str:
    """A message id as Herald compares them: no whitespace or NULs, lowercase, no leading
    zeros (``"0"`` for all zeros)."""
    text = "".join(raw.replace("\0", "").split()).lower()
    stripped = text.lstrip("0")
    return stripped or ("0" if text else "")


def convert_id(raw: str, base: Literal["same", "decimal", "hex"]) -> str:
    """The receipt's id ``raw`` as ``submit_sm_resp`` gave it, normalised.

    ``base`` says how the SMSC writes receipts: ``"same"`` as its ``submit_sm_resp``;
    ``"decimal"`` receipts in decimal for ids answered in hex (converted to hex);
    ``"hex"`` receipts in hex for ids answered in decimal (converted to decimal). Digits
    invalid for the base raise ``ValueError``.
    """
    text = normalise_id(raw)
    if base == "same":
        return text
    if base == "decimal":
        if not text or text.strip(_DECIMAL):
            raise ValueError(f"receipt id {raw!r} is not decimal")
        return format(int(text), "x")
    if base == "hex":
        if not text or text.strip(_HEX):
            raise ValueError(f"receipt id {raw!r} is not hexadecimal")
        return str(int(text, 16))
    raise ValueError(f"base must be 'same', 'decimal' or 'hex', not {base!r}")


_DECIMAL: Final = "0123456789"
_HEX: Final = "0123456789abcdef"


def parse_receipt_text(text: str) -> dict[str, str]:
    """The text form's fields, keys lowercased with spaces (``"done date"``), values stripped."""
    fields: dict[str, str] = {}
    matches = list(_KEY.finditer(text))
    in_text = False
    kept: list[tuple[str, int, int]] = []  # key, value start, key start
    for match in matches:
        key = re.sub(r"[ _]?date$", " date", match.group(1).lower())
        if in_text and (key in fields or key == "text"):
            continue  # a word in the message text
        fields[key] = ""
        kept.append((key, match.end(), match.start()))
        in_text = in_text or key == "text"
    for index, (key, start, _) in enumerate(kept):
        end = kept[index + 1][2] if index + 1 < len(kept) else len(text)
        fields[key] = text[start:end].strip()
    return fields


def _done_at(value: str) -> float | None:
    digits = value.strip()
    if not digits.isdecimal() or not digits.isascii():
        return None
    try:
        if len(digits) == 14:  # YYYYMMDDhhmmss, from a few SMSCs
            year, rest = int(digits[:4]), digits[4:]
        elif len(digits) in (10, 12):
            year, rest = 2000 + int(digits[:2]), digits[2:]
        else:
            return None
        month, day, hour, minute = (int(rest[i : i + 2]) for i in range(0, 8, 2))
        second = int(rest[8:10]) if len(rest) == 10 else 0
        if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
            return None
        if hour > 23 or minute > 59 or second > 59:
            return None
    except ValueError:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _network_error(raw: bytes) -> str | None:
    if len(raw) != 3:
        return raw.hex() if raw else None
    code = int.from_bytes(raw[1:], "big")
    if code == 0:
        return None
    return f"{_NETWORK_TYPES.get(raw[0], str(raw[0]))}:{code}"


def parse_receipt(pdu: DeliverSm | DataSm) -> DeliveryReport:
    """The report a receipt carries (TLVs first, then the text form); ``ReceiptError`` when
    it names no message. An intermediate notification or SME acknowledgement is ``enroute``
    whatever its ``stat``: only the SMSC's receipt settles a message."""
    tlvs = pdu.tlvs
    body = pdu.short_message if isinstance(pdu, DeliverSm) else b""
    if not body:
        body = tlvs.get(MESSAGE_PAYLOAD, b"")
    fields = parse_receipt_text(body.decode("latin-1")) if body else {}

    raw_id = tlvs.get(RECEIPTED_MESSAGE_ID)
    message_id = normalise_id(raw_id.decode("latin-1")) if raw_id else ""
    if not message_id:
        message_id = normalise_id(fields.get("id", ""))
    if not message_id:
        raise ReceiptError("a delivery receipt without a message id (no receipted_message_id, "
                           "no id: in its text)")

    state_value = tlvs.get(MESSAGE_STATE)
    if state_value:
        stat = _STATE_WORDS.get(state_value[0], "UNKNOWN")
    else:
        word = fields.get("stat", "").split()
        stat = _WORDS.get(word[0].upper(), word[0].upper()) if word else "UNKNOWN"
    if pdu.esm_class & ESM_RECEIPT_MASK in (ESM_INTERMEDIATE, ESM_SME_ACK):
        state: ReceiptState = "enroute"
    else:
        state = _STATES.get(stat, "unknown")

    error: str | None = None
    network = tlvs.get(NETWORK_ERROR_CODE)
    if network:
        error = _network_error(network)
    else:
        err = fields.get("err", "").split()
        if err and err[0].strip("0"):
            error = err[0]

    done = fields.get("done date")
    return DeliveryReport(message_id, state, stat, error, _done_at(done) if done else None)
