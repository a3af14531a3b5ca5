"""Phone normalisation: the fast path agrees with phonenumbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.phones import PhoneNormaliser


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+79161234567", None, "+79161234567"),
        ("+7 916 123-45-67", None, "+79161234567"),
        ("7 (916) 123 45 67", None, "+79161234567"),  # bare digits: international
        ("8 (916) 123-45-67", "RU", "+79161234567"),  # national trunk prefix
        ("89161234567", "RU", "+79161234567"),
        ("8 (916) 123-45-67", None, None),  # no region: 8... is no country code
        ("+44 20 7946 0958", "RU", "+442079460958"),
        ("+7916", None, None),
        ("+999 123 4567", None, None),  # no such country code
        ("phone", "RU", None),
        ("", "RU", None),
        ("+", None, None),
        ("+79161234567" + "0" * 80, "RU", None),
    ],
)
def test_normalise(raw: str, region: str | None, expected: str | None) -> None:
    assert PhoneNormaliser(region).normalise(raw) == expected


@given(st.text(alphabet="0123456789", min_size=1, max_size=16))
def test_fast_path_agrees_with_the_slow_path(digits: str) -> None:
    """Clean +digits input: the fast path accepts exactly what phonenumbers (plus our
    length rule) accepts unchanged. phonenumbers also rewrites some inputs (a trunk prefix
    after the country code); the fast path refuses those rather than guess."""
    normaliser = PhoneNormaliser()
    e164 = "+" + digits
    fast, slow = normaliser.normalise(e164), normaliser._parse(e164)
    assert fast in (None, e164, slow)
    assert (fast == e164) == (slow == e164)


@given(st.text(max_size=40))
def test_never_raises(raw: str) -> None:
    for region in (None, "RU", "US"):
        result = PhoneNormaliser(region).normalise(raw)
        assert result is None or (result.startswith("+") and result[1:].isdigit())
