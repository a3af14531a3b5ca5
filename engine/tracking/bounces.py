"""Bounces and complaints that come back by mail (sans-I/O): RFC 3464 DSNs, RFC 5965 ARF
reports, and VERP return paths.

An email gateway that takes bounces by mail (the ``smtp`` driver) hands each message that
reached its bounce mailbox, as posted to ``POST /api/v1/inbound/{gateway}``, to
:func:`parse_report`, which gives one :class:`~engine.drivers.Bounce` per recipient the
report speaks of:

- **A DSN** (``multipart/report; report-type=delivery-status``, or RFC 6533's
  ``global-delivery-status``): one per-recipient group of its ``message/delivery-status``
  part each. ``Action: failed`` with a ``5.x.x`` ``Status`` is ``hard``; ``failed`` with
  ``4.x.x`` (an MTA that gave up retrying) or ``Action: delayed`` is ``soft``;
  ``delivered``, ``relayed`` and ``expanded`` give nothing. The address is the
  ``Original-Recipient`` (the address as Herald sent it, before any forwarding), else
  the ``Final-Recipient``; ``error`` is the status and the ``Diagnostic-Code``
  (``"5.1.10 smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; ..."``); ``at`` is the
  group's ``Last-Attempt-Date``, else the report's ``Arrival-Date``, else its ``Date``.
- **An ARF report** (``report-type=feedback-report``): a ``complaint`` for each
  ``Original-Rcpt-To``, else each address of the ``To`` of the returned message, when its
  ``Feedback-Type`` is ``abuse``, ``fraud``, ``virus``, ``other`` or a type this module
  does not know (our choice: a complaint missed costs more than one too many);
  ``not-spam`` and ``auth-failure`` (RFC 6591: an authentication failure, no person's
  complaint) give nothing. A feedback loop that redacts the recipient (AOL, Yahoo) leaves
  ``email`` ``""``: ``id`` then names the message, and so its recipient.
- **Anything else** (an autoreply, a plain message, a read receipt, a non-standard bounce)
  gives an empty list. A report that says it is one of the two but is not well formed (no
  status part, a group without ``Action`` or ``Status``, a status that is not a code, a
  report that cannot be matched to any recipient) is an ``InputError`` saying what is
  wrong; so is anything the stdlib's parser cannot read.

**Which message.** ``id`` is Herald's message id, found in this order: the VERP address
the report was delivered to (``envelope_to``, as the route passes it, see below); the
``X-Herald-Id`` header of the returned original (``message/rfc822``,
``text/rfc822-headers``, or RFC 6532's ``message/global`` and ``message/global-headers``);
the VERP address in the report's own ``X-Original-To``, ``Delivered-To``, ``Envelope-To``
(written by the MTA that delivered it to the bounce mailbox) or ``To`` (a DSN goes to the
return path). An ARF report goes to the feedback loop's address, not the return path, so
only its returned message is read: ``X-Herald-Id``, else the VERP address of its
``Return-Path``.

**VERP.** :func:`verp_address` makes the return path ``{local}+{message id}@{domain}``
(``bounce+3f2a9c1b7e-42@bounces.example.com``); :func:`verp_id` reads the id back from
the address a bounce was delivered to (``None`` for an address that is no VERP address).
A message id is ``[A-Za-z0-9._-]`` (Herald's ``{run uid}-{seq}`` is): no ``+``, ``=`` or
``@``, so the id is the part after the last ``+`` and needs no encoding.

The stdlib's ``email`` package (``policy.default``) parses the MIME structure; the
fields of a status or feedback part are read from the lines it splits, or, where it did
not split them (a ``message/global-delivery-status`` part, one sent base64 or
quoted-printable), by a small field-block reader here. The stdlib's parser is lenient (it
records defects instead of raising), but reading some malformed headers raises
(``IndexError``, ``AttributeError``... from ``email._header_value_parser``): any such
exception comes out as an ``InputError`` naming the body.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email
import email.errors
import email.message
import email.policy
import email.utils
import quopri
import re
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from engine.core.emails import normalise_domain
from engine.drivers import Bounce
from engine.errors import InputError

__all__ = ["ENVELOPE_HEADERS", "parse_report", "verp_address", "verp_id"]

#: Headers an MTA writes on delivery that hold the envelope recipient, most precise first
#: (Postfix: ``X-Original-To`` and ``Delivered-To``; Exim: ``Envelope-To``).
ENVELOPE_HEADERS: Final = ("X-Original-To", "Delivered-To", "Envelope-To")

#: What a Herald message id may hold to go into a VERP address as it is.
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LOCAL: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
#: An RFC 3463 status code at the start of a ``Status`` field (comments may follow).
_STATUS: Final = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_ACTIONS: Final = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_NOT_COMPLAINTS: Final = frozenset({"not-spam", "auth-failure"})
_ORIGINALS: Final = frozenset({"message/rfc822", "text/rfc822-headers", "message/global",
                               "message/global-headers", "message/rfc822-headers"})
_STATUS_PARTS: Final = ("message/delivery-status", "message/global-delivery-status")
_MAX_LOCAL: Final = 64  # octets of a local part (RFC 5321 4.5.3.1.1)
_MAX_ID: Final = 255
_SHOWN: Final = 60

Fields = dict[str, list[str]]


def verp_address(return_path_local: str, domain: str, message_id: str) -> str:
    """The VERP return path of message ``message_id``: ``{return_path_local}+{id}@{domain}``
    with the domain as Herald normalises one (lowercased, IDNA).

    ``InputError`` for a local part that is no dot-atom, a domain no address could be at,
    a message id with other characters than ``A-Z a-z 0-9 . _ -``, or a local part over
    64 octets."""
    if not _LOCAL.fullmatch(return_path_local):
        raise InputError(f"return path: {_show(return_path_local)} is not the local part"
                         " of an address")
    if not _ID.fullmatch(message_id):
        raise InputError(f"message id: {_show(message_id)} cannot go into a VERP address"
                         " (letters, digits, '.', '_' and '-' only)")
    local = f"{return_path_local}+{message_id}"
    if len(local) > _MAX_LOCAL:
        raise InputError(f"return path: {local!r} is {len(local)} octets, at most"
                         f" {_MAX_LOCAL}: use a shorter local part")
    return f"{local}@{normalise_domain(domain)}"


def verp_id(envelope_recipient: str) -> str | None:
    """The message id in a VERP address (``"bounce+3f2a-42@bounces.example.com"`` ->
    ``"3f2a-42"``), written bare, in angle brackets or as a header value
    (``"Bounces <bounce+3f2a-42@...>"``); None when it holds none."""
    _, addr = email.utils.parseaddr(envelope_recipient.strip())
    local, at, _domain = addr.rpartition("@")
    if not at:
        return None
    prefix, plus, tag = local.rpartition("+")
    if not plus or not prefix or not _ID.fullmatch(tag):
        return None
    return tag


def parse_report(raw: bytes, *, envelope_to: str | None = None) -> list[Bounce]:
    """The bounces or complaints in ``raw``, one mail message (see the module docstring).

    ``envelope_to``: the address the message was delivered to, where the route knows it
    (a VERP address names the message). An empty list for mail that is no DSN or ARF
    report; ``InputError`` saying what is wrong for one that is malformed."""
    try:
        return _parse(raw, envelope_to)
    except InputError:
        raise
    except Exception as err:  # the stdlib's header parser has crash bugs on odd input
        raise InputError(f"body: a header of the message cannot be read"
                         f" ({type(err).__name__}: {_show(str(err))})") from None


# -- the report ----------------------------------------------------------------------------


def _parse(raw: bytes, envelope_to: str | None) -> list[Bounce]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if not isinstance(message, email.message.EmailMessage):
        return []
    if message.get_content_type() != "multipart/report":
        return []
    parts = list(message.iter_parts())
    kind = str(message.get_param("report-type", "") or "").strip().lower()
    types = {p.get_content_type() for p in parts}
    if kind in ("delivery-status", "global-delivery-status") or (
            not kind and types & set(_STATUS_PARTS)):
        return _dsn(message, parts, envelope_to)
    if kind == "feedback-report" or (not kind and "message/feedback-report" in types):
        return _arf(message, parts)
    return []  # a read receipt (disposition-notification), a TLS report...


def _dsn(message: email.message.EmailMessage, parts: Sequence[email.message.MIMEPart],
         envelope_to: str | None) -> list[Bounce]:
    status = next((p for p in parts if p.get_content_type() in _STATUS_PARTS), None)
    if status is None:
        raise InputError("body: a delivery-status report without a"
                         " message/delivery-status part")
    groups = _status_groups(status)
    if not groups:
        raise InputError("body: the message/delivery-status part is empty")
    per_message: Fields = {}
    if not _is_recipient(groups[0]):
        per_message = groups.pop(0)
    if not groups:
        raise InputError("body: the delivery-status part has no per-recipient fields"
                         " (Final-Recipient, Action, Status)")
    message_id = _dsn_id(message, parts, envelope_to)
    report_at = _date(_first(per_message, "arrival-date")) or _date(message.get("Date"))
    bounces = []
    for n, group in enumerate(groups, 1):
        bounce = _recipient(group, n, message_id, report_at)
        if bounce is not None:
            bounces.append(bounce)
    return bounces


def _recipient(group: Fields, n: int, message_id: str | None,
               report_at: float | None) -> Bounce | None:
    """The bounce one per-recipient group amounts to (None for a delivered one)."""
    original = _first(group, "original-recipient")
    final = _first(group, "final-recipient")
    addr = _address_field(original) if original else ""
    if not addr or "@" not in addr:  # ORCPT may be absent, or "unknown"
        addr = _address_field(final) if final else ""
    where = f"delivery-status recipient {n}" + (f" ({addr})" if addr else "")
    if not final:
        raise InputError(f"body: {where}: Final-Recipient missing")
    if not addr:
        raise InputError(f"body: {where}: Final-Recipient has no address: {_show(final)}")
    action = (_first(group, "action") or "").strip().lower()
    if not action:
        raise InputError(f"body: {where}: Action missing")
    action = action.split()[0]
    if action not in _ACTIONS:
        raise InputError(f"body: {where}: Action {_show(action)} is none of failed,"
                         " delayed, delivered, relayed, expanded")
    code = _first(group, "status")
    if code is None:
        raise InputError(f"body: {where}: Status missing")
    m = _STATUS.match(code)
    if m is None:
        raise InputError(f"body: {where}: Status {_show(code)} is not a status code"
                         " (class.subject.detail, as 5.1.1)")
    if action not in ("failed", "delayed"):
        return None
    kind: Literal["hard", "soft"] = "hard"
    if action == "delayed" or m[1] != "5":
        kind = "soft"
    status = ".".join(m.groups())
    diagnostic = _first(group, "diagnostic-code")
    error = f"{status} {_one_line(diagnostic)}" if diagnostic else status
    at = _date(_first(group, "last-attempt-date")) or report_at
    return Bounce(kind, addr, id=message_id, error=error, at=at)


def _arf(message: email.message.EmailMessage,
         parts: Sequence[email.message.MIMEPart]) -> list[Bounce]:
    report = next((p for p in parts if p.get_content_type() == "message/feedback-report"),
                  None)
    if report is None:
        raise InputError("body: a feedback report without a message/feedback-report part")
    groups = _status_groups(report)
    fields: Fields = {}
    for group in groups:
        for name, values in group.items():
            fields.setdefault(name, []).extend(values)
    feedback = (_first(fields, "feedback-type") or "").strip().lower()
    if not feedback:
        raise InputError("body: message/feedback-report: Feedback-Type missing")
    if feedback in _NOT_COMPLAINTS:
        return []
    original = _original(parts)
    message_id = None
    if original is not None:
        message_id = _herald_id(original) or _verp_of(original.get_all("Return-Path") or [])
    recipients = [_address_field(v) for v in fields.get("original-rcpt-to", [])]
    recipients = [r for r in recipients if r]
    if not recipients and original is not None:
        recipients = [a for _, a in email.utils.getaddresses(
            [str(v) for v in original.get_all("To") or []]) if "@" in a]
    if not recipients:
        if message_id is None:
            raise InputError("body: the feedback report names no recipient"
                             " (Original-Rcpt-To, or the To of the returned message) and"
                             " no message (X-Herald-Id): it cannot be matched")
        recipients = [""]  # redacted by the feedback loop: the id says whose it is
    at = _date(_first(fields, "arrival-date") or _first(fields, "received-date")) or \
        _date(message.get("Date"))
    error = feedback
    agent = _first(fields, "user-agent")
    if agent:
        error += f" ({_one_line(agent)})"
    return [Bounce("complaint", r, id=message_id, error=error, at=at) for r in recipients]


# -- which message ----------------------------------------------------------------------


def _dsn_id(message: email.message.EmailMessage,
            parts: Sequence[email.message.MIMEPart], envelope_to: str | None) -> str | None:
    if envelope_to:
        found = verp_id(envelope_to)
        if found:
            return found
    original = _original(parts)
    if original is not None:
        found = _herald_id(original)
        if found:
            return found
    for name in (*ENVELOPE_HEADERS, "To"):
        found = _verp_of(message.get_all(name) or [])
        if found:
            return found
    return None


def _verp_of(values: Iterable[object]) -> str | None:
    for value in values:
        for _, addr in email.utils.getaddresses([str(value)]):
            found = verp_id(addr)
            if found:
                return found
    return None


def _original(parts: Sequence[email.message.MIMEPart]) -> email.message.Message | None:
    """The returned original message (its headers at least) of a report, if it has one."""
    part = next((p for p in parts if p.get_content_type() in _ORIGINALS), None)
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list):
        inner = payload[0] if payload else None
        return inner if isinstance(inner, email.message.Message) else None
    content = part.get_payload(decode=True)
    if not isinstance(content, bytes):
        return None
    # text/rfc822-headers: the headers alone, which the parser reads as a message
    return email.message_from_bytes(content, policy=email.policy.default)


def _herald_id(original: email.message.Message) -> str | None:
    value = original.get("X-Herald-Id")
    if value is None:
        return None
    found = str(value).strip()
    if not found:
        return None
    if len(found) > _MAX_ID or any(c.isspace() or not c.isprintable() for c in found):
        raise InputError(f"body: the returned message's X-Herald-Id {_show(found)} is not"
                         " a message id")
    return found


# -- fields ------------------------------------------------------------------------------


def _status_groups(part: email.message.MIMEPart) -> list[Fields]:
    """The field groups of a ``message/delivery-status`` (or feedback-report) part, names
    lowercased, each name's values in order."""
    payload = part.get_payload()
    cte = str(part.get("Content-Transfer-Encoding", "") or "").strip().lower()
    if isinstance(payload, list) and part.get_content_type() == "message/delivery-status" \
            and cte not in ("base64", "quoted-printable"):
        groups = []
        for sub in payload:
            if not isinstance(sub, email.message.Message):
                continue
            group: Fields = {}
            for name, value in sub.items():
                group.setdefault(name.strip().lower(), []).append(_one_line(str(value)))
            body = sub.get_payload()
            if isinstance(body, str) and body.strip():  # a line that is no field ends them
                raise InputError(f"body: {part.get_content_type()}: not a field:"
                                 f" {_show(body.strip().splitlines()[0])}")
            if group:
                groups.append(group)
        return groups
    return _field_groups(_part_text(part, payload, cte), part.get_content_type())


def _part_text(part: email.message.MIMEPart, payload: object, cte: str) -> str:
    """The content of a status part the parser did not split, as text."""
    if isinstance(payload, list):  # a message/* subtype it parsed as a message
        data = b"\n\n".join(p.as_bytes() for p in payload
                            if isinstance(p, email.message.Message))
    elif isinstance(payload, str):
        data = payload.encode("utf-8", "surrogateescape")
    else:
        return ""
    if cte == "base64":
        try:  # the parser put the encoded lines in a group's body: join them
            data = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"body: {part.get_content_type()}: bad base64") from None
    elif cte == "quoted-printable":
        data = quopri.decodestring(data)
    return data.decode("utf-8", "replace")


def _field_groups(text: str, where: str) -> list[Fields]:
    """RFC 822-style field blocks separated by blank lines."""
    groups: list[Fields] = []
    group: Fields = {}
    last: tuple[str, int] | None = None
    for line in text.splitlines():
        if not line.strip():
            if group:
                groups.append(group)
            group, last = {}, None
            continue
        if line[0] in " \t":
            if last is None:
                raise InputError(f"body: {where}: a continuation line with no field:"
                                 f" {_show(line.strip())}")
            name, i = last
            group[name][i] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or any(c.isspace() or not c.isprintable() for c in name):
            raise InputError(f"body: {where}: not a field: {_show(line)}")
        values = group.setdefault(name, [])
        values.append(value.strip())
        last = (name, len(values) - 1)
    if group:
        groups.append(group)
    return groups


def _is_recipient(group: Fields) -> bool:
    return any(k in group for k in ("final-recipient", "original-recipient", "action"))


def _first(fields: Fields, name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _address_field(value: str) -> str:
    """The address of ``rfc822; bob@example.com`` (or ``utf-8;``, or a bare address)."""
    kind, sep, addr = value.partition(";")
    if not sep:
        addr = kind
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1].strip()
    return "" if addr.lower() == "unknown" else addr


def _date(value: object) -> float | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": the zone is unknown; RFC 5322 means UTC then
        when = when.replace(tzinfo=datetime.UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")
