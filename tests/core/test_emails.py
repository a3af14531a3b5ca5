"""Email address normalisation: one canonical form per mailbox, InputError for the rest."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError
from hypothesis import given
from hypothesis import strategies as st

from engine.core.emails import _fast, _slow, email_domain, normalise_domain, normalise_email
from engine.errors import InputError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ivan.petrov@example.com", "ivan.petrov@example.com"),
        ("Ivan.Petrov+news@Example.COM", "Ivan.Petrov+news@example.com"),  # local part kept
        ("  ivan@example.com\t", "ivan@example.com"),
        ("Ivan@Пример.РФ", "Ivan@xn--e1afmkfd.xn--p1ai"),  # IDNA A-labels
        ("ivan@xn--e1afmkfd.xn--p1ai", "ivan@xn--e1afmkfd.xn--p1ai"),
        ("ДОМ@почта.рф", "ДОМ@xn--80a1acny.xn--p1ai"),  # SMTPUTF8 local part, as written
        ("Postmaster@Example.com", "postmaster@example.com"),  # RFC 2142 role name
        ("o'brien@mail.example.co.uk", "o'brien@mail.example.co.uk"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "@-sign"),
        ("ivan", "@-sign"),
        ("ivan@", "after the @-sign"),
        ("@example.com", "before the @-sign"),
        ("ivan@localhost", "period"),
        ("ivan@example.test", "special-use"),
        ("iv..an@example.com", "two periods"),
        ("ivan@exa_mple.com", "invalid characters"),
        ("ivan@example.1", "top-level domain"),
        ("Ivan <ivan@example.com>", "display name"),
        ('"ivan petrov"@example.com', "Quoting"),
        ("a" * 250 + "@example.com", "too long"),
    ],
)
def test_bad_address_says_what_is_wrong(raw: str, reason: str) -> None:
    with pytest.raises(InputError) as err:
        normalise_email(raw)
    assert repr(raw[:80])[:-1] in str(err.value)
    assert reason.lower() in str(err.value).lower()


def test_domain() -> None:
    assert email_domain(normalise_email("Ivan@Пример.РФ")) == "xn--e1afmkfd.xn--p1ai"
    assert normalise_domain("@Пример.РФ") == "xn--e1afmkfd.xn--p1ai"
    assert normalise_domain("Mail.Example.COM") == "mail.example.com"
    for bad in ("", "a@b.com", "localhost", "-x.com"):
        with pytest.raises(InputError, match="not an email domain"):
            normalise_domain(bad)
    with pytest.raises(InputError):
        email_domain("no-at-sign")


_ASCII_PARTS = st.text(alphabet="aZ09.-_+'!#@xn", min_size=0, max_size=12)


@given(_ASCII_PARTS, _ASCII_PARTS, st.sampled_from(["com", "ru", "TEST", "local", "c0m", "1"]))
def test_fast_path_agrees_with_email_validator(local: str, host: str, tld: str) -> None:
    raw = f"{local}@{host}.{tld}"
    fast = _fast(raw)
    try:
        slow: str | None = _slow(raw)
    except EmailNotValidError:
        slow = None
    assert fast is None or fast == slow


@given(st.text(max_size=300))
def test_never_raises_anything_but_input_error(raw: str) -> None:
    try:
        addr = normalise_email(raw)
    except InputError:
        return
    assert "@" in addr and email_domain(addr).isascii()
    assert normalise_email(addr) == addr  # normal form is a fixed point


@given(st.emails())
def test_valid_addresses_normalise(raw: str) -> None:
    try:
        addr = normalise_email(raw)
    except InputError:
        return  # hypothesis' addresses include special-use and numeric TLDs
    assert email_domain(addr) == email_domain(addr).lower()
