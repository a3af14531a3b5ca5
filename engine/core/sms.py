"""SMS encoding, length and segment count (sans-I/O, on the per-message path).

A text is sent in the GSM 03.38 7-bit alphabet when every character is in its basic table or
its extension table; extension characters (``^ { } \\ [ ~ ] | €`` and form feed) take two
septets (escape + character). Otherwise it is sent as UCS-2 (UTF-16): one code unit per BMP
character, two for a character outside the BMP (most emoji).

One message holds 160 septets or 70 UCS-2 units; a concatenated message holds 153 septets or
67 units per segment (the rest of each segment is the concatenation header). Segments are
filled greedily and never split an extension pair or a surrogate pair, so a text of 306
septets can need three segments when an extension character straddles a boundary;
:func:`measure` and :func:`split` always agree on the count.

The escape character itself (0x1B) and national language shift tables are not used: a text
containing ``\\x1b`` is sent as UCS-2.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

__all__ = [
    "GSM7_MULTI",
    "GSM7_SINGLE",
    "UCS2_MULTI",
    "UCS2_SINGLE",
    "Encoding",
    "SmsInfo",
    "measure",
    "split",
]

Encoding = Literal["gsm7", "ucs2"]

GSM7_SINGLE: Final = 160
GSM7_MULTI: Final = 153
UCS2_SINGLE: Final = 70
UCS2_MULTI: Final = 67

GSM7_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ"  # 0x00-0x1A
    "ÆæßÉ"  # 0x1C-0x1F (0x1B is the escape to the extension table)
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 basic character set (one septet each)."""
GSM7_EXTENSION: Final = "\f^{}\\[~]|€"
"""The GSM 03.38 extension table characters (two septets each)."""

_EXTENSION: Final = re.compile("[" + re.escape(GSM7_EXTENSION) + "]")
_NOT_GSM7: Final = re.compile("[^" + re.escape(GSM7_BASIC + GSM7_EXTENSION) + "]")


def _byte_classes() -> bytes:
    """Byte -> 0x00 basic, 0x01 extension, 0x80 not GSM (for ASCII input)."""
    table = bytearray(256)
    for code in range(256):
        ch = chr(code)
        table[code] = 0x00 if ch in GSM7_BASIC else 0x01 if ch in GSM7_EXTENSION else 0x80
    return bytes(table)


def _extension_bytes() -> bytes:
    """Byte -> 0x01 for ASCII extension characters, else 0x00 (for UTF-8 input)."""
    return bytes(1 if code < 0x80 and chr(code) in GSM7_EXTENSION else 0 for code in range(256))


_ASCII_CLASSES: Final = _byte_classes()
_ASCII_EXTENSION: Final = _extension_bytes()


class SmsInfo(msgspec.Struct, frozen=True):
    """How a text goes over the air.

    ``length`` is in septets for ``gsm7`` (extension characters count 2) and in UTF-16 code
    units for ``ucs2``; ``segments`` is the number of messages it is sent as (1 for ``""``).
    """

    encoding: Encoding
    length: int
    segments: int


def _segments(length: int, single: int, multi: int) -> int:
    return 1 if length <= single else -(-length // multi)


def _septets(text: str) -> str:
    """``text`` with one character per septet: ESC before each extension character."""
    return _EXTENSION.sub("\x1b\\g<0>", text)


def _gsm7_cuts(septets: str) -> list[int]:
    """Greedy segment ends (in septets) for a concatenated GSM text."""
    cuts: list[int] = []
    start = 0
    while len(septets) - start > GSM7_MULTI:
        start += GSM7_MULTI
        if septets[start - 1] == "\x1b":  # keep ESC with its character
            start -= 1
        cuts.append(start)
    cuts.append(len(septets))
    return cuts


def _ucs2_cuts(data: bytes) -> list[int]:
    """Greedy segment ends (in code units) for a concatenated UTF-16-LE text."""
    cuts: list[int] = []
    units = len(data) // 2
    start = 0
    while units - start > UCS2_MULTI:
        start += UCS2_MULTI
        # The high byte of unit k is data[2k + 1]: a high surrogate ends, a low one starts?
        if 0xD8 <= data[2 * start - 1] <= 0xDB and 0xDC <= data[2 * start + 1] <= 0xDF:
            start -= 1
        cuts.append(start)
    cuts.append(units)
    return cuts


def measure(text: str) -> SmsInfo:
    """Encoding, length and segment count of ``text``."""
    if text.isascii():
        classes = text.encode().translate(_ASCII_CLASSES)
        if not classes.isascii():  # a 0x80: some character is not GSM
            return SmsInfo("ucs2", len(text), _segments(len(text), UCS2_SINGLE, UCS2_MULTI))
        length = len(text) + classes.count(1)
    elif _NOT_GSM7.search(text) is None:
        extension = text.encode().translate(_ASCII_EXTENSION).count(1) + text.count("€")
        length = len(text) + extension
    else:
        # "utf-16" (BOM + native order) has a fast path that "utf-16-le" lacks.
        units = len(text.encode("utf-16", "surrogatepass")) // 2 - 1
        if units != len(text) and units > UCS2_SINGLE:  # a pair may shift a boundary
            segments = len(_ucs2_cuts(text.encode("utf-16-le", "surrogatepass")))
            return SmsInfo("ucs2", units, segments)
        return SmsInfo("ucs2", units, _segments(units, UCS2_SINGLE, UCS2_MULTI))
    if length > GSM7_SINGLE and length != len(text):  # an ESC pair may shift a boundary
        return SmsInfo("gsm7", length, len(_gsm7_cuts(_septets(text))))
    return SmsInfo("gsm7", length, _segments(length, GSM7_SINGLE, GSM7_MULTI))


def split(text: str) -> list[str]:
    """The parts ``text`` is sent as: ``[text]`` when it fits one message, else segments of at
    most 153 septets / 67 UCS-2 units, never splitting an extension or surrogate pair.

    ``"".join(split(text)) == text`` (for UCS-2 text holding unpaired surrogates, the parts'
    UTF-16 encodings join to the text's).
    """
    if _NOT_GSM7.search(text) is None:
        septets = _septets(text)
        if len(septets) <= GSM7_SINGLE:
            return [text]
        parts: list[str] = []
        start = 0
        for end in _gsm7_cuts(septets):
            parts.append(septets[start:end].replace("\x1b", ""))
            start = end
        return parts
    data = text.encode("utf-16-le", "surrogatepass")
    if len(data) // 2 <= UCS2_SINGLE:
        return [text]
    if len(data) // 2 == len(text):
        return [text[i : i + UCS2_MULTI] for i in range(0, len(text), UCS2_MULTI)]
    parts = []
    start = 0
    for end in _ucs2_cuts(data):
        parts.append(data[2 * start : 2 * end].decode("utf-16-le", "surrogatepass"))
        start = end
    return parts
