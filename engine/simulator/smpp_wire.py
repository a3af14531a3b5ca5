"""SMPP 3.4 as the simulated SMSC reads and writes it: framing, the few PDUs, GSM 03.38.

Written apart from Herald's own codec (``herald_smpp``) on purpose: the simulator is the
oracle the driver is checked against, so it must not share the driver's mistakes. It knows
only what an SMSC needs: the 16-byte header (length, command id, status, sequence), the
bind, submit_sm, deliver_sm, enquire_link, unbind and generic_nack bodies, TLVs, the UDH of
concatenated messages, and the GSM 03.38 default alphabet (one septet per octet, unpacked,
as SMPP carries it) with its extension table.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "BIND_RECEIVER",
    "BIND_TRANSCEIVER",
    "BIND_TRANSMITTER",
    "DELIVER_SM",
    "DELIVER_SM_RESP",
    "ENQUIRE_LINK",
    "ENQUIRE_LINK_RESP",
    "GENERIC_NACK",
    "HEADER",
    "RESP",
    "SUBMIT_SM",
    "SUBMIT_SM_RESP",
    "UNBIND",
    "UNBIND_RESP",
    "Bind",
    "Short",
    "Udh",
    "decode_gsm",
    "decode_text",
    "encode_gsm",
    "gsm_septets",
    "pdu",
    "read_bind",
    "read_short",
    "short_body",
    "split_udh",
    "tlv",
]

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
#: Set in the command id of every response.
RESP = 0x80000000
SUBMIT_SM_RESP = SUBMIT_SM | RESP
DELIVER_SM_RESP = DELIVER_SM | RESP
UNBIND_RESP = UNBIND | RESP
ENQUIRE_LINK_RESP = ENQUIRE_LINK | RESP

#: command_length, command_id, command_status, sequence_number: big-endian 32-bit each.
HEADER = struct.Struct(">IIII")

# TLV tags the SMSC reads or writes.
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_MESSAGE_STATE = 0x0427
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_SC_INTERFACE_VERSION = 0x0210

_TLV_HEAD = struct.Struct(">HH")

# GSM 03.38 default alphabet, septet value = index; 0x1B escapes to the extension table.
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[",
                  0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€"}
_ESC = 0x1B
assert len(_GSM_BASIC) == 128
_TO_GSM: dict[str, bytes] = {ch: bytes([i]) for i, ch in enumerate(_GSM_BASIC) if i != _ESC}
_TO_GSM.update({ch: bytes([_ESC, code]) for code, ch in _GSM_EXTENSION.items()})


def pdu(command_id: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    """One PDU: the header, then ``body``."""
    return HEADER.pack(16 + len(body), command_id, status, sequence) + body


def tlv(tag: int, value: bytes) -> bytes:
    """One optional parameter: tag, length, value."""
    return _TLV_HEAD.pack(tag, len(value)) + value


def _cstring(body: bytes, at: int) -> tuple[str, int]:
    end = body.index(0, at)  # ValueError when unterminated: the caller answers an error
    return body[at:end].decode("latin-1"), end + 1


class Bind(NamedTuple):
    """A bind request's credentials."""

    system_id: str
    password: str
    system_type: str
    interface_version: int


def read_bind(body: bytes) -> Bind:
    """The fields of a bind_transmitter/receiver/transceiver body (ValueError if cut)."""
    system_id, at = _cstring(body, 0)
    password, at = _cstring(body, at)
    system_type, at = _cstring(body, at)
    return Bind(system_id, password, system_type, body[at])


class Short(NamedTuple):
    """The fields of a submit_sm (or deliver_sm) body the SMSC looks at."""

    source_ton: int
    source_npi: int
    source: str
    dest_ton: int
    dest_npi: int
    destination: str
    esm_class: int
    registered_delivery: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]


def read_short(body: bytes) -> Short:
    """Parse a submit_sm/deliver_sm body (ValueError or IndexError when malformed)."""
    _, at = _cstring(body, 0)  # service_type
    source_ton, source_npi = body[at], body[at + 1]
    source, at = _cstring(body, at + 2)
    dest_ton, dest_npi = body[at], body[at + 1]
    destination, at = _cstring(body, at + 2)
    esm_class = body[at]  # then protocol_id, priority_flag
    _, at = _cstring(body, at + 3)  # schedule_delivery_time
    _, at = _cstring(body, at)  # validity_period
    registered_delivery = body[at]  # then replace_if_present_flag
    data_coding = body[at + 2]  # then sm_default_msg_id
    length = body[at + 4]
    at += 5
    short_message = body[at:at + length]
    if len(short_message) != length:
        raise ValueError("short_message runs past the end of the PDU")
    at += length
    tlvs: dict[int, bytes] = {}
    end = len(body)
    while at < end:
        if at + 4 > end:
            raise ValueError("truncated TLV")
        tag, size = _TLV_HEAD.unpack_from(body, at)
        at += 4
        if at + size > end:
            raise ValueError("TLV runs past the end of the PDU")
        tlvs[tag] = body[at:at + size]
        at += size
    return Short(source_ton, source_npi, source, dest_ton, dest_npi, destination, esm_class,
                 registered_delivery, data_coding, short_message, tlvs)


def short_body(*, source: str, destination: str, esm_class: int, data_coding: int,
               short_message: bytes, source_ton: int = 1, source_npi: int = 1,
               dest_ton: int = 1, dest_npi: int = 1, tlvs: bytes = b"") -> bytes:
    """A deliver_sm body (also a submit_sm one: they share the layout)."""
    return b"".join((
        b"\0", bytes((source_ton, source_npi)), source.encode("latin-1"), b"\0",
        bytes((dest_ton, dest_npi)), destination.encode("latin-1"), b"\0",
        bytes((esm_class, 0, 0)), b"\0\0",  # protocol_id, priority; two empty times
        bytes((0, 0, data_coding, 0, len(short_message))), short_message, tlvs,
    ))


class Udh(NamedTuple):
    """A concatenation header (IE 0x00 with an 8-bit ref, or 0x08 with a 16-bit one)."""

    ref: int
    total: int
    seq: int


def split_udh(short_message: bytes) -> tuple[Udh | None, bytes]:
    """(the concatenation IE if any, the message after the whole UDH); ValueError if the
    UDH's length runs past the message."""
    length = short_message[0] if short_message else 0
    if len(short_message) < length + 1:
        raise ValueError("the UDH runs past the short message")
    udh, rest = short_message[1:length + 1], short_message[length + 1:]
    found = None
    at = 0
    while at + 2 <= len(udh):
        iei, size = udh[at], udh[at + 1]
        value = udh[at + 2:at + 2 + size]
        if iei == 0x00 and size == 3:
            found = Udh(value[0], value[1], value[2])
        elif iei == 0x08 and size == 4:
            found = Udh((value[0] << 8) | value[1], value[2], value[3])
        at += 2 + size
    return found, rest


def decode_gsm(septets: bytes) -> str:
    """Unpacked GSM 03.38 (one septet per octet) as text. A trailing lone escape, which a
    part that split an escape pair ends with, decodes to nothing."""
    out: list[str] = []
    escaped = False
    basic = _GSM_BASIC
    for septet in septets:
        if escaped:
            # 03.38: an escape code without an extension character shows the basic one
            out.append(_GSM_EXTENSION.get(septet) or basic[septet & 0x7F])
            escaped = False
        elif septet == _ESC:
            escaped = True
        else:
            out.append(basic[septet & 0x7F])
    return "".join(out)


def encode_gsm(text: str) -> bytes | None:
    """``text`` as unpacked GSM 03.38, or None if a character is not in the alphabet."""
    try:
        return b"".join(_TO_GSM[ch] for ch in text)
    except KeyError:
        return None


def gsm_septets(text: str) -> int | None:
    """How many septets ``text`` takes in GSM 03.38 (None if it does not fit)."""
    encoded = encode_gsm(text)
    return None if encoded is None else len(encoded)


def decode_text(data_coding: int, data: bytes) -> str:
    """The text of a message body by its ``data_coding``: 0 (and 1) GSM 03.38 unpacked,
    8 UCS-2 big-endian (lone surrogates kept), 3 Latin-1; anything else Latin-1 too."""
    if data_coding in (0, 1):
        return decode_gsm(data)
    if data_coding == 8:
        return data.decode("utf-16-be", "surrogatepass")
    return data.decode("latin-1")
