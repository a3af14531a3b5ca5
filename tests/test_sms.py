"""SMS encoding, length and segments, checked against a naive reference implementation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.sms import SmsInfo, measure, split

# GSM 03.38, written out row by row from the standard's table (0x1B, the escape, excluded).
REF_BASIC = set(
    "@Δ 0¡P¿p"
    "£_!1AQaq"
    '$Φ"2BRbr'
    "¥Γ#3CScs"
    "èΛ¤4DTdt"
    "éΩ%5EUeu"
    "ùΠ&6FVfv"
    "ìΨ'7GWgw"
    "òΣ(8HXhx"
    "ÇΘ)9IYiy"
    "\nΞ*:JZjz"
    "Ø+;KÄkä"
    "øÆ,<LÖlö"
    "\ræ-=MÑmñ"
    "Åß.>NÜnü"
    "åÉ/?O§oà"
)
REF_EXTENSION = set("\f^{}\\[]~|€")


def reference(text: str) -> tuple[str, int, list[str]]:
    """Encoding, length and parts, the slow obvious way."""
    if all(ch in REF_BASIC or ch in REF_EXTENSION for ch in text):
        encoding, single, multi = "gsm7", 160, 153
        widths = [2 if ch in REF_EXTENSION else 1 for ch in text]
    else:
        encoding, single, multi = "ucs2", 70, 67
        widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    length = sum(widths)
    if length <= single:
        return encoding, length, [text]
    parts, current, used = [], "", 0
    for ch, width in zip(text, widths, strict=True):
        if used + width > multi:
            parts.append(current)
            current, used = "", 0
        current += ch
        used += width
    parts.append(current)
    return encoding, length, parts


def test_reference_table_is_the_full_basic_set() -> None:
    assert len(REF_BASIC) == 127  # 128 positions minus the escape


@pytest.mark.parametrize(
    ("text", "encoding", "length", "segments"),
    [
        ("", "gsm7", 0, 1),
        ("Hello", "gsm7", 5, 1),
        ("a" * 160, "gsm7", 160, 1),
        ("a" * 161, "gsm7", 161, 2),
        ("a" * 306, "gsm7", 306, 2),
        ("a" * 307, "gsm7", 307, 3),
        ("€" * 80, "gsm7", 160, 1),
        ("€" * 81, "gsm7", 162, 2),
        ("[x]", "gsm7", 5, 1),
        ("^{}\\[~]|€\f", "gsm7", 20, 1),
        ("Ça coûte 5€", "ucs2", 11, 1),  # û is not GSM
        ("Çà va: 5€", "gsm7", 10, 1),
        ("ΔΦΓΛΩΠΨΣΘΞ", "gsm7", 10, 1),
        ("ç", "ucs2", 1, 1),  # only the capital Ç is in the table
        ("tab\there", "ucs2", 8, 1),
        ("`", "ucs2", 1, 1),
        ("\x1b", "ucs2", 1, 1),
        ("Привет", "ucs2", 6, 1),
        ("я" * 70, "ucs2", 70, 1),
        ("я" * 71, "ucs2", 71, 2),
        ("я" * 134, "ucs2", 134, 2),
        ("я" * 135, "ucs2", 135, 3),
        ("🎉", "ucs2", 2, 1),
        ("🎉" * 35, "ucs2", 70, 1),
        ("🎉" * 36, "ucs2", 72, 2),
    ],
)
def test_measure(text: str, encoding: str, length: int, segments: int) -> None:
    assert measure(text) == SmsInfo(encoding, length, segments)  # type: ignore[arg-type]


def test_extension_pair_is_never_split_across_segments() -> None:
    # 152 septets, then "[" (2 septets) would straddle the 153-septet boundary.
    text = "a" * 152 + "[" + "b" * 152
    assert measure(text) == SmsInfo("gsm7", 306, 3)  # 306 septets, but three segments
    assert split(text) == ["a" * 152, "[" + "b" * 151, "b"]


def test_surrogate_pair_is_never_split_across_segments() -> None:
    text = "я" * 66 + "🎉" + "я" * 67
    assert measure(text) == SmsInfo("ucs2", 135, 3)
    assert split(text) == ["я" * 66, "🎉" + "я" * 65, "яя"]


def test_split_of_a_single_message_is_the_text() -> None:
    assert split("") == [""]
    assert split("a" * 160) == ["a" * 160]
    assert split("a" * 161) == ["a" * 153, "a" * 8]


gsm_chars = st.sampled_from(sorted(REF_BASIC | REF_EXTENSION))
other_chars = st.sampled_from(["я", "Ж", "ç", "û", "`", "\t", "🎉", "😀", "中", "\U0001f600"])
texts = (
    st.text(gsm_chars, max_size=480)
    | st.text(st.sampled_from("a[€"), max_size=480)
    | st.lists(gsm_chars | other_chars, max_size=300).map("".join)
    | st.text(st.sampled_from("я🎉"), max_size=300)
    | st.text(max_size=300)
)


@given(texts)
def test_measure_and_split_agree_with_the_reference(text: str) -> None:
    encoding, length, parts = reference(text)
    assert measure(text) == SmsInfo(encoding, length, len(parts))  # type: ignore[arg-type]
    assert split(text) == parts


@given(texts)
def test_parts_fit_their_segments_and_rejoin(text: str) -> None:
    parts = split(text)
    assert "".join(parts) == text
    if len(parts) > 1:
        limit = 153 if measure(text).encoding == "gsm7" else 67
        assert all(reference(part)[1] <= limit for part in parts)
