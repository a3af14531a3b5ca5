"""GSM 03.38 default alphabet (basic table + basic extension table), 7-bit packing and UCS-2.

The alphabet is :mod:`engine.core.sms`'s own (``GSM7_BASIC``, ``GSM7_EXTENSION``): the text
that Herald counts as GSM-7 is exactly the text :func:`encode_gsm7` can encode, so the
choice of ``data_coding`` and the segment count can never disagree.

SMPP carries GSM-7 text with ``data_coding = 0`` *unpacked*: one septet per octet, an
extension character as the escape ``0x1B`` followed by its code. Some gateways want the
septets packed as they go over the air (eight septets in seven octets); :func:`pack7` and
:func:`unpack7` do that, with ``fill_bits`` for the padding that aligns septets after a UDH.
"""

from __future__ import annotations

from typing import Final

from engine.core.sms import GSM7_BASIC, GSM7_EXTENSION

__all__ = [
    "ESCAPE",
    "decode_gsm7",
    "decode_ucs2",
    "encode_gsm7",
    "encode_ucs2",
    "pack7",
    "septet_count",
    "unpack7",
]

ESCAPE: Final = 0x1B
"""The escape to the extension table (it is not a character of its own)."""

#: The basic table in code order: engine.core.sms leaves out the escape at 0x1B.
_BASIC: Final = GSM7_BASIC[:ESCAPE] + "\x1b" + GSM7_BASIC[ESCAPE:]
assert len(_BASIC) == 128

#: The basic extension table (GSM 03.38 6.2.1.1): character -> code after the escape.
_EXTENSION_CODES: Final = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
assert set(_EXTENSION_CODES) == set(GSM7_EXTENSION)

_ENCODE: Final[dict[int, str]] = {ord(ch): chr(code) for code, ch in enumerate(_BASIC)}
del _ENCODE[ESCAPE]  # a text holding ESC itself is not GSM-7 (engine.core.sms sends it as UCS-2)
_ENCODE.update({ord(ch): "\x1b" + chr(code) for ch, code in _EXTENSION_CODES.items()})
_GSM_CHARS: Final = frozenset(GSM7_BASIC + GSM7_EXTENSION)

#: Septet -> character for decoding (octets over 0x7F are not septets: U+FFFD).
_DECODE: Final = _BASIC + "\ufffd" * 128
_DECODE_EXTENSION: Final = {code: ch for ch, code in _EXTENSION_CODES.items()}


def encode_gsm7(text: str) -> bytes | None:
    """``text`` as unpacked septets (one per octet, ``0x1B`` before an extension character),
    or ``None`` when a character is not in the GSM 03.38 default alphabet."""
    if not _GSM_CHARS.issuperset(text):
        return None
    return text.translate(_ENCODE).encode("latin-1")


def septet_count(text: str) -> int:
    """The number of septets ``text`` takes in GSM-7 (extension characters count 2)."""
    return len(text) + sum(text.count(ch) for ch in GSM7_EXTENSION)


def decode_gsm7(data: bytes) -> str:
    """Unpacked septets back to text.

    An escape followed by a code the extension table lacks shows the basic table's character
    for that code (GSM 03.38 6.2.1.1); ``ESC ESC`` (reserved for a further table) shows a
    space; a lone escape at the end, or an octet over ``0x7F``, shows U+FFFD.
    """
    text = data.decode("latin-1")
    if ESCAPE not in data:
        return text.translate(_DECODE)
    out: list[str] = []
    i, end = 0, len(data)
    while i < end:
        code = data[i]
        if code != ESCAPE:
            out.append(_DECODE[code])
            i += 1
            continue
        if i + 1 == end:
            out.append("\ufffd")
            break
        nxt = data[i + 1]
        if nxt == ESCAPE:
            out.append(" ")
        else:
            out.append(_DECODE_EXTENSION.get(nxt) or _DECODE[nxt])
        i += 2
    return "".join(out)


def pack7(septets: bytes, fill_bits: int = 0) -> bytes:
    """Septets packed as over the air: bit 0 of the first septet at bit ``fill_bits`` of the
    first octet (``fill_bits`` zero bits come first, 0-6, to align after a UDH).

    When the last octet has 7 bits to spare they hold CR, not ``@`` (GSM 03.38 6.1.2.3.1),
    so a receiver that counts septets from the octets does not show a stray ``@``.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0-6, not {fill_bits}")
    acc = 0
    for index, septet in enumerate(septets):
        acc |= (septet & 0x7F) << (7 * index)
    nbits = fill_bits + 7 * len(septets)
    if nbits % 8 == 1:
        acc |= 0x0D << (7 * len(septets))
        nbits += 7
    return (acc << fill_bits).to_bytes((nbits + 7) // 8, "little")


def unpack7(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """The first ``count`` septets of packed ``data`` (after ``fill_bits`` padding bits).

    ``count`` comes from the sender (``sm_length`` of a packed message counts septets when
    it is known; else ``(len(data) * 8 - fill_bits) // 7``); asking for more septets than
    ``data`` holds raises ``ValueError``.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0-6, not {fill_bits}")
    if count < 0 or fill_bits + 7 * count > 8 * len(data):
        raise ValueError(f"{len(data)} octets do not hold {count} septets")
    acc = int.from_bytes(data, "little") >> fill_bits
    return bytes((acc >> (7 * index)) & 0x7F for index in range(count))


def encode_ucs2(text: str) -> bytes:
    """``text`` in UTF-16-BE (what SMPP calls UCS-2, ``data_coding = 8``): a character outside
    the BMP is its surrogate pair, as handsets expect."""
    return text.encode("utf-16-be", "surrogatepass")


def decode_ucs2(data: bytes) -> str:
    """UTF-16-BE back to text; a lone surrogate or a dangling odd octet shows U+FFFD."""
    return data.decode("utf-16-be", "replace")
