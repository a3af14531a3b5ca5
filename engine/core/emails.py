"""Email address normalisation (sans-I/O, on the per-message path).

An address is accepted when email-validator accepts it without asking DNS
(``check_deliverability=False``): one ``@``, a dot-atom local part (quoted local parts,
display names and ``[IP]`` literals are refused), a domain with a dot under a real-looking
top-level domain, not a special-use name (``.test``, ``.local``, ``localhost``...), at most
254 octets in all.

The normalised form is email-validator's: the local part as written (NFC-normalised; only
the RFC 2142 role names such as ``Postmaster`` are lowercased) and the domain lowercased and
IDNA-encoded to ASCII A-labels, so ``Ivan@Пример.РФ`` becomes ``Ivan@xn--e1afmkfd.xn--p1ai``.
Two spellings of one mailbox normalise to one string, which is what dedupe and suppression
compare.

email-validator costs 40 to 400 µs per address; the common case (ASCII, a plain dot-atom
local part, letter-digit-hyphen labels, no ``xn--``) takes a fast path that checks the same
rules with one regular expression (about 2 µs) and agrees with it exactly (a property test
compares the two). Anything else goes through email-validator, and its answers are cached.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from engine.errors import InputError

__all__ = ["email_domain", "normalise_domain", "normalise_email", "suppression_value"]

_ATEXT: Final = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_LABEL: Final = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
#: The whole of an address the fast path may answer for; the last label (the TLD) must end
#: with a letter, as email-validator requires.
_FAST: Final = re.compile(
    rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@((?:{_LABEL}\.)+"
    r"(?:[a-zA-Z0-9][a-zA-Z0-9-]{0,61})?[a-zA-Z])"
)
#: Top-level labels of the special-use names email-validator refuses (all of them are
#: single labels today; a dotted entry would send every address under its TLD the slow way).
_SPECIAL_TLDS: Final = frozenset(
    d.rsplit(".", 1)[-1] for d in email_validator.SPECIAL_USE_DOMAIN_NAMES
)
_ROLE_NAMES: Final = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_MAX_LENGTH: Final = 254
_SHOWN: Final = 80  # characters of a bad address an error message quotes
_WHITESPACE: Final = " \t\r\n\f\v"


def _fast(raw: str) -> str | None:
    """The normalised address, or None when email-validator must decide."""
    if len(raw) > _MAX_LENGTH or not raw.isascii():
        return None
    m = _FAST.fullmatch(raw)
    if m is None:
        return None
    local, domain = m.groups()
    domain = domain.lower()
    # "ab--" labels (R-LDH, punycode among them) need IDNA's rules: the slow path has them
    if "--" in domain or domain.rpartition(".")[2] in _SPECIAL_TLDS:
        return None
    if local.lower() in _ROLE_NAMES:
        local = local.lower()
    return f"{local}@{domain}"


@lru_cache(maxsize=16384)
def _slow(raw: str) -> str:
    """email-validator's normalised form; raises its EmailNotValidError."""
    valid = validate_email(raw, check_deliverability=False)
    return f"{valid.local_part}@{valid.ascii_domain}"


def _show(raw: str) -> str:
    return repr(raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "…")


def normalise_email(raw: str) -> str:
    """``raw`` (surrounding whitespace ignored) as one canonical address: the local part as
    written, the domain lowercased in ASCII (IDNA A-labels).

    Raises :class:`~engine.errors.InputError` quoting the address and saying what is wrong
    with it (``there must be something after the @-sign``...).
    """
    if raw[:1] in _WHITESPACE or raw[-1:] in _WHITESPACE:
        raw = raw.strip(_WHITESPACE)
    fast = _fast(raw)
    if fast is not None:
        return fast
    try:
        return _slow(raw)
    except EmailNotValidError as err:
        raise InputError(f"not an email address: {_show(raw)}: {err}") from None


def normalise_domain(raw: str) -> str:
    """A domain as :func:`normalise_email` writes it (``Пример.РФ`` -> ``xn--e1afmkfd.xn--p1ai``),
    for entries of a domain suppression list. A leading ``@`` is allowed (``@example.com``).

    Raises :class:`~engine.errors.InputError` when no address could be at that domain.
    """
    domain = raw.strip(_WHITESPACE).removeprefix("@")
    if not domain or "@" in domain:
        raise InputError(f"not an email domain: {_show(raw)}")
    addr = "x@" + domain
    try:
        normal = _fast(addr) or _slow(addr)
    except EmailNotValidError as err:
        raise InputError(f"not an email domain: {_show(raw)}: {err}") from None
    return normal[2:]


def email_domain(addr: str) -> str:
    """The domain of a normalised address (what a domain suppression list holds):
    ``email_domain("ivan@example.com") == "example.com"``."""
    at = addr.rfind("@")
    if at <= 0:
        raise InputError(f"not an email address: {_show(addr)}")
    return addr[at + 1 :]


def suppression_value(kind: str, value: str) -> str:
    """How a suppression list holds an entry of ``kind``: an email lowercased whole (an
    address is on a list whatever the case of its local part: the stores' lookups lower
    the address too), a domain as :func:`normalise_domain` writes it (lowercased where
    it is not one), a phone as given (E.164 already)."""
    if kind == "email":
        return value.strip(_WHITESPACE).lower()
    if kind == "domain":
        try:
            return normalise_domain(value)
        except InputError:
            return value.strip(_WHITESPACE).removeprefix("@").lower()
    return value
