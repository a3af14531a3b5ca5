"""SMPP 3.4 optional parameters (TLVs): the tags Herald uses, and their integer values.

A PDU keeps its TLVs as ``{tag: raw value}``; these helpers read and write the integer ones
(big-endian, of the size the spec gives each tag).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADDITIONAL_STATUS_INFO_TEXT",
    "DELIVERY_FAILURE_REASON",
    "DEST_PORT",
    "MESSAGE_PAYLOAD",
    "MESSAGE_STATE",
    "MORE_MESSAGES_TO_SEND",
    "NETWORK_ERROR_CODE",
    "RECEIPTED_MESSAGE_ID",
    "SAR_MSG_REF_NUM",
    "SAR_SEGMENT_SEQNUM",
    "SAR_TOTAL_SEGMENTS",
    "SC_INTERFACE_VERSION",
    "SOURCE_PORT",
    "USER_MESSAGE_REFERENCE",
    "int_value",
    "tlv_int",
]

ADDITIONAL_STATUS_INFO_TEXT: Final = 0x001D
RECEIPTED_MESSAGE_ID: Final = 0x001E
USER_MESSAGE_REFERENCE: Final = 0x0204
SOURCE_PORT: Final = 0x020A
DEST_PORT: Final = 0x020B
SAR_MSG_REF_NUM: Final = 0x020C
SAR_TOTAL_SEGMENTS: Final = 0x020E
SAR_SEGMENT_SEQNUM: Final = 0x020F
SC_INTERFACE_VERSION: Final = 0x0210
NETWORK_ERROR_CODE: Final = 0x0423
MESSAGE_PAYLOAD: Final = 0x0424
DELIVERY_FAILURE_REASON: Final = 0x0425
MORE_MESSAGES_TO_SEND: Final = 0x0426
MESSAGE_STATE: Final = 0x0427


def int_value(value: int, size: int) -> bytes:
    """``value`` as a TLV value of ``size`` octets (``ValueError`` when it does not fit)."""
    try:
        return value.to_bytes(size, "big")
    except OverflowError:
        raise ValueError(f"{value} does not fit a {size}-octet TLV value") from None


def tlv_int(tlvs: dict[int, bytes], tag: int) -> int | None:
    """The integer value of ``tag`` (any size, big-endian), or ``None`` when absent or empty."""
    raw = tlvs.get(tag)
    if not raw:
        return None
    return int.from_bytes(raw, "big")
