"""A text as the ``submit_sm`` parts it is sent in: ``data_coding``, ``esm_class``, octets, TLVs.

The encoding and the cut are Herald's own (:mod:`engine.core.sms`): ``data_coding`` is 0x00
(SMSC default alphabet, GSM 03.38) when ``measure(text).encoding == "gsm7"``, else 0x08
(UCS-2); a text that fits one message is one part; a longer one is ``split(text)``, so the
parts never cut an escape pair or a surrogate pair and there are exactly
``measure(text).segments`` of them.

Three ways to send a long text (``long_messages`` in the driver's config):

- ``"udh"``: each part starts with the concatenation header ``05 00 03 ref total seq`` and
  has ``esm_class`` UDHI (0x40). The 8-bit reference is always used (``reference & 0xFF``):
  Herald's segment sizes (153 septets, 67 UCS-2 units) are those of the 6-octet header, and
  the 7-octet 16-bit form (``06 08 04``) would leave a full part one septet or octet over
  the 140 octets a message holds over the air;
- ``"sar"``: no header; the SAR TLVs carry a 16-bit reference, the total and the sequence
  number, and the SMSC builds the header;
- ``"payload"``: one ``submit_sm`` with the whole text in ``message_payload`` and an empty
  ``short_message``; the SMSC cuts it.

Sizes. SMPP 3.4 allows 254 octets of ``short_message``; what limits a part is the 140 octets
of one message over the air. UCS-2 parts and packed GSM-7 parts are at most 140 octets as
they stand. Unpacked GSM-7 (``packed=False``, what SMSCs expect with ``data_coding = 0``)
carries one septet per octet: a 160-septet text is 160 octets, a part 6 + 153 = 159; the SMSC
packs them into 140 (the header takes 7 septets with one fill bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

import msgspec

from engine.core.sms import measure, split

from .commands import DATA_CODING_DEFAULT, DATA_CODING_UCS2, ESM_UDHI
from .gsm import decode_gsm7, decode_ucs2, encode_gsm7, encode_ucs2, pack7, unpack7
from .tlv import MESSAGE_PAYLOAD, SAR_MSG_REF_NUM, SAR_SEGMENT_SEQNUM, SAR_TOTAL_SEGMENTS

__all__ = [
    "Concat",
    "LongMode",
    "Part",
    "concatenation",
    "decode_text",
    "message_parts",
    "reassemble",
    "split_udh",
]

LongMode = Literal["udh", "sar", "payload"]

_UDH_FILL_BITS: Final = 1
"""Bits that align GSM-7 septets after the 6-octet UDH (48 bits, the next septet at 49)."""


class Part(msgspec.Struct, frozen=True):
    """One ``submit_sm``'s worth of a text (``text`` is the part's own text, for logs)."""

    data_coding: int
    esm_class: int
    short_message: bytes
    tlvs: dict[int, bytes] = msgspec.field(default_factory=dict)
    text: str = ""


class Concat(NamedTuple):
    """Where a part sits in a concatenated message (``seq`` counts from 1)."""

    reference: int
    total: int
    seq: int


def _octets(text: str, gsm: bool, packed: bool, fill_bits: int = 0) -> bytes:
    if not gsm:
        return encode_ucs2(text)
    septets = encode_gsm7(text)
    assert septets is not None  # measure() said gsm7: the alphabets are the same
    return pack7(septets, fill_bits) if packed else septets


def message_parts(
    text: str, *, mode: LongMode = "udh", reference: int = 0, packed: bool = False
) -> list[Part]:
    """The ``submit_sm`` parts of ``text``: one when it fits one message, else
    ``measure(text).segments`` of them, concatenated the ``mode`` way (see the module doc).

    ``reference`` ties the parts of one message together (keep it different for messages to
    the same recipient in flight): its low 8 bits go in a UDH, its low 16 in SAR TLVs.
    ``packed`` sends GSM-7 packed (for the few SMSCs that want it with ``data_coding = 0``).
    """
    if mode not in ("udh", "sar", "payload"):
        raise ValueError(f"mode must be 'udh', 'sar' or 'payload', not {mode!r}")
    if reference < 0:
        raise ValueError(f"reference must not be negative: {reference}")
    info = measure(text)
    gsm = info.encoding == "gsm7"
    coding = DATA_CODING_DEFAULT if gsm else DATA_CODING_UCS2
    if info.segments == 1:
        return [Part(coding, 0, _octets(text, gsm, packed), {}, text)]
    if mode == "payload":
        return [Part(coding, 0, b"", {MESSAGE_PAYLOAD: _octets(text, gsm, packed)}, text)]
    texts = split(text)
    total = len(texts)
    if total > 255:
        raise ValueError(f"a text of {total} parts is too long to concatenate (255 at most)")
    parts: list[Part] = []
    if mode == "udh":
        ref = reference & 0xFF
        fill = _UDH_FILL_BITS if packed else 0
        for seq, piece in enumerate(texts, 1):
            udh = bytes((0x05, 0x00, 0x03, ref, total, seq))
            parts.append(Part(coding, ESM_UDHI, udh + _octets(piece, gsm, packed, fill), {}, piece))
    else:
        ref_octets = (reference & 0xFFFF).to_bytes(2, "big")
        total_octet = bytes((total,))
        for seq, piece in enumerate(texts, 1):
            tlvs = {
                SAR_MSG_REF_NUM: ref_octets,
                SAR_TOTAL_SEGMENTS: total_octet,
                SAR_SEGMENT_SEQNUM: bytes((seq,)),
            }
            parts.append(Part(coding, 0, _octets(piece, gsm, packed), tlvs, piece))
    return parts


def split_udh(data: bytes) -> tuple[Concat | None, bytes, int]:
    """A ``short_message`` sent with UDHI: its concatenation info (``None`` when the header
    has none), the user data after the header, and the header's length in octets.

    A header that does not parse leaves the data whole (``None``, ``data``, 0).
    """
    if not data or data[0] + 1 > len(data):
        return None, data, 0
    header_end = data[0] + 1
    concat: Concat | None = None
    pos = 1
    while pos + 2 <= header_end:
        iei, length = data[pos], data[pos + 1]
        value = data[pos + 2 : pos + 2 + length]
        if pos + 2 + length > header_end:
            return None, data, 0
        if iei == 0x00 and length == 3:
            concat = Concat(value[0], value[1], value[2])
        elif iei == 0x08 and length == 4:
            concat = Concat(int.from_bytes(value[:2], "big"), value[2], value[3])
        pos += 2 + length
    return concat, data[header_end:], header_end


def concatenation(
    esm_class: int, short_message: bytes, tlvs: dict[int, bytes]
) -> tuple[Concat | None, bytes]:
    """Where a received part sits (UDH or SAR TLVs; ``None`` for a whole message) and its
    user data without the header."""
    if esm_class & ESM_UDHI:
        concat, data, _ = split_udh(short_message)
        return concat, data
    ref, total, seq = (tlvs.get(SAR_MSG_REF_NUM), tlvs.get(SAR_TOTAL_SEGMENTS),
                       tlvs.get(SAR_SEGMENT_SEQNUM))
    if ref and total and seq:
        concat = Concat(int.from_bytes(ref, "big"), total[0], seq[0])
        return concat, short_message
    return None, short_message


def decode_text(data_coding: int, data: bytes, *, packed: bool = False, fill_bits: int = 0) -> str:
    """User data as text, by ``data_coding``: 0x00 (and 0xF0-0xF3) GSM-7, unpacked unless
    ``packed``; 0x01 IA5/ASCII; 0x08 UCS-2; anything else as Latin-1 (every octet decodes).
    """
    if data_coding == 0x00 or 0xF0 <= data_coding <= 0xF3:
        if packed:
            count = (len(data) * 8 - fill_bits) // 7
            septets = unpack7(data, count, fill_bits)
            if (len(data) * 8 - fill_bits) % 7 == 0 and septets.endswith(b"\r"):
                septets = septets[:-1]  # the CR that pads 7 spare bits (GSM 03.38 6.1.2.3.1)
            return decode_gsm7(septets)
        return decode_gsm7(data)
    if data_coding == 0x01:
        return data.decode("ascii", "replace")
    if data_coding == DATA_CODING_UCS2:
        return decode_ucs2(data)
    return data.decode("latin-1")


def reassemble(parts: Sequence[Part], *, packed: bool = False) -> str:
    """The text back from its parts, in any order (for tests and the simulator)."""
    pieces: list[tuple[int, bytes, int]] = []
    for part in parts:
        payload = part.tlvs.get(MESSAGE_PAYLOAD)
        if payload is not None and not part.short_message:
            pieces.append((0, payload, 0))
            continue
        if part.esm_class & ESM_UDHI:
            concat, data, header = split_udh(part.short_message)
            fill = (7 - header * 8 % 7) % 7 if header else 0
        else:
            concat, data = concatenation(part.esm_class, part.short_message, part.tlvs)
            fill = 0
        pieces.append((concat.seq if concat else 0, data, fill))
    pieces.sort(key=lambda piece: piece[0])
    coding = parts[0].data_coding if parts else DATA_CODING_DEFAULT
    return "".join(
        decode_text(coding, data, packed=packed, fill_bits=fill) for _, data, fill in pieces
    )
