"""Bounces and complaints by mail (``engine.tracking.bounces``): DSNs and ARF reports
written after the RFCs' examples and real MTAs' output (``tests/fixtures/bounces``), VERP,
and any bytes giving bounces or an ``InputError``."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.drivers import Bounce
from engine.errors import InputError
from engine.tracking.bounces import parse_report, verp_address, verp_id

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"


def fixture(name: str, crlf: bool = False) -> bytes:
    raw = (FIXTURES / name).read_bytes()
    return raw.replace(b"\n", b"\r\n") if crlf else raw


# --- DSNs (RFC 3464) ---------------------------------------------------------------------


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize(("name", "expected"), [
    ("postfix_user_unknown.eml", Bounce(
        "hard", "nobody@example.net", id="a1b2c3d4e5-7", at=1764583201.0,
        error="5.1.1 smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected:"
              " User unknown in virtual mailbox table")),
    ("postfix_delayed.eml", Bounce(
        "soft", "slow@example.org", id="a1b2c3d4e5-8", at=1764583202.0,
        error="4.4.1 X-Postfix; connect to mx.example.org[198.51.100.7]:25: Connection"
              " timed out")),
    ("exim_failed.eml", Bounce(
        "hard", "gone@example.de", id="0c9d8e7f6a-3", at=1764659742.0,
        error="5.0.0 smtp; 550 Requested action not taken: mailbox unavailable")),
    ("microsoft_recipient_not_found.eml", Bounce(
        "hard", "ghost@contoso.com", id="5c6d7e8f90-15", at=1764849601.0,
        error="5.1.10 smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found"
              " by SMTP address lookup")),
    ("global_dsn.eml", Bounce("hard", "用户@例子.广告", id="1122334455-9",
                              error="5.1.1 smtp; 550 5.1.1 mailbox unavailable")),
])
def test_a_dsn_gives_its_recipients_bounce(name: str, expected: Bounce, crlf: bool) -> None:
    assert parse_report(fixture(name, crlf)) == [expected]


def test_gmails_folded_diagnostic_is_kept_on_one_line() -> None:
    (bounce,) = parse_report(fixture("gmail_no_such_user.eml"))
    assert (bounce.kind, bounce.email, bounce.id) == (
        "hard", "no.such.user.4711@gmail.com", "77aa88bb99-1204")
    assert bounce.error is not None and bounce.error.startswith(
        "5.1.1 smtp; 550-5.1.1 The email account that you tried to reach does not exist.")
    assert "\n" not in bounce.error and "  " not in bounce.error
    assert bounce.at == 1764752523.0  # Last-Attempt-Date, not the Arrival-Date


def test_each_recipient_of_a_dsn_is_its_own_and_delivered_ones_give_nothing() -> None:
    bounces = parse_report(fixture("sendmail_several_recipients.eml"))
    assert [(b.kind, b.email, b.error) for b in bounces] == [
        ("hard", "full@example.edu", "5.2.2 SMTP; 552 5.2.2 Mailbox full"),
        ("soft", "later@example.edu", "4.2.1"),  # delayed
        # failed, but a 4.x.x status: the MTA gave up, the mailbox may well exist
        ("soft", "old@example.edu", "4.4.7 X-Unix; message expired after 5 days in the queue"),
    ]
    # the address Herald sent to (Original-Recipient), not where it was forwarded
    assert "old-mailbox@internal.example.edu" not in {b.email for b in bounces}
    assert {b.id for b in bounces} == {None}  # no VERP, no X-Herald-Id
    assert bounces[0].at == 1764934199.0 and bounces[1].at == 1764932400.0


def test_the_envelope_address_names_the_message_first() -> None:
    raw = fixture("postfix_user_unknown.eml")
    (bounce,) = parse_report(raw, envelope_to="bounce+ffeeddccbb-1@bounces.example.com")
    assert bounce.id == "ffeeddccbb-1"
    (bounce,) = parse_report(raw, envelope_to="bounces@example.com")  # no VERP: next clue
    assert bounce.id == "a1b2c3d4e5-7"


def test_without_x_herald_id_the_verp_address_the_report_was_delivered_to_names_it() -> None:
    raw = fixture("postfix_user_unknown.eml").replace(b"X-Herald-Id: a1b2c3d4e5-7\n", b"")
    for header in (b"X-Original-To", b"Delivered-To"):
        raw = raw.replace(header + b": bounce+a1b2c3d4e5-7", header + b": bounce+0000000000-1")
    (bounce,) = parse_report(raw)
    assert bounce.id == "0000000000-1"
    (bounce,) = parse_report(fixture("exim_failed.eml").replace(b"X-Herald-Id", b"X-Other"))
    assert bounce.id == "0c9d8e7f6a-3"  # Exim's Envelope-to


# --- ARF (RFC 5965) ----------------------------------------------------------------------


def test_an_arf_report_is_a_complaint_about_its_original_recipient() -> None:
    assert parse_report(fixture("arf_yahoo.eml")) == [Bounce(
        "complaint", "reader@yahoo.com", id="a1b2c3d4e5-99", at=1765011900.0,
        error="abuse (Yahoo!-Mail-Feedback/2.0)")]


def test_without_original_rcpt_to_the_returned_messages_to_is_the_recipient() -> None:
    (bounce,) = parse_report(fixture("arf_mailru.eml"))
    assert (bounce.kind, bounce.email) == ("complaint", "ivan.petrov@mail.ru")
    assert bounce.id == "fe01dc23ba-5"  # no X-Herald-Id: the VERP Return-Path
    assert bounce.at == 1765079400.0


def test_a_redacted_report_names_the_message_and_leaves_the_address_empty() -> None:
    assert parse_report(fixture("arf_redacted.eml")) == [Bounce(
        "complaint", "", id="a1b2c3d4e5-314", at=1765223700.0, error="abuse (AOL SComp)")]
    unmatched = fixture("arf_redacted.eml").replace(b"X-Herald-Id", b"X-Other")
    with pytest.raises(InputError, match="cannot be matched"):
        parse_report(unmatched)


@pytest.mark.parametrize(("feedback", "complaint"), [
    ("abuse", True), ("fraud", True), ("virus", True), ("other", True),
    ("some-future-type", True), ("not-spam", False), ("auth-failure", False),
])
def test_which_feedback_types_are_complaints(feedback: str, complaint: bool) -> None:
    raw = fixture("arf_yahoo.eml").replace(b"Feedback-Type: abuse",
                                           f"Feedback-Type: {feedback}".encode())
    assert [b.kind for b in parse_report(raw)] == (["complaint"] if complaint else [])


# --- not a report, or a malformed one ----------------------------------------------------


@pytest.mark.parametrize("name", ["autoreply.eml", "read_receipt.eml"])
def test_mail_that_is_no_bounce_gives_nothing(name: str) -> None:
    assert parse_report(fixture(name)) == []


def dsn(recipient: str, per_message: str = "Reporting-MTA: dns; mx.example.org\n\n") -> bytes:
    return (b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            b"--b\nContent-Type: text/plain\n\nsorry\n--b\n"
            b"Content-Type: message/delivery-status\n\n" + per_message.encode()
            + recipient.encode() + b"\n--b--\n")


@pytest.mark.parametrize(("raw", "message"), [
    (fixture("dsn_without_status.eml"), "without a message/delivery-status part"),
    (dsn("", per_message=""), "the message/delivery-status part is empty"),
    (dsn(""), "no per-recipient fields"),
    (dsn("Action: failed\nStatus: 5.1.1"), "recipient 1: Final-Recipient missing"),
    (dsn("Final-Recipient: rfc822; a@example.com\nStatus: 5.1.1"),
     r"recipient 1 \(a@example.com\): Action missing"),
    (dsn("Final-Recipient: rfc822; a@example.com\nAction: bounced\nStatus: 5.1.1"),
     "Action 'bounced' is none of"),
    (dsn("Final-Recipient: rfc822; a@example.com\nAction: failed"), "Status missing"),
    (dsn("Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 550"),
     "Status '550' is not a status code"),
    (dsn("Final-Recipient: rfc822; \nAction: failed\nStatus: 5.1.1"),
     "Final-Recipient has no address"),
])
def test_a_malformed_dsn_is_an_input_error_saying_what(raw: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_report(raw)


def test_a_status_part_sent_base64_is_read() -> None:
    fields = base64.encodebytes(b"Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822;"
                                b" a@example.com\nAction: failed\nStatus: 5.7.1 (blocked)\n")
    raw = (b"To: bounce+abcdef0123-5@bounces.example.com\nContent-Type: multipart/report;"
           b' report-type=delivery-status; boundary="b"\n\n--b\n'
           b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
           + fields + b"--b--\n")
    assert parse_report(raw) == [
        Bounce("hard", "a@example.com", id="abcdef0123-5", error="5.7.1")]


# --- VERP ----------------------------------------------------------------------------


def test_a_verp_address_carries_the_message_id_and_gives_it_back() -> None:
    addr = verp_address("bounce", "Bounces.Пример.рф", "a1b2c3d4e5-42")
    assert addr == "bounce+a1b2c3d4e5-42@bounces.xn--e1afmkfd.xn--p1ai"
    assert verp_id(addr) == "a1b2c3d4e5-42"
    assert verp_id(f"<{addr}>") == verp_id(f"Bounces <{addr}>") == "a1b2c3d4e5-42"
    assert verp_id(verp_address("bounces+herald", "example.com", "x.y_z-1")) == "x.y_z-1"


@pytest.mark.parametrize("addr", ["bounces@example.com", "+id@example.com", "bounce+@x.com",
                                  "bounce+a=b@example.com", "no address", ""])
def test_an_address_that_is_no_verp_address_has_no_id(addr: str) -> None:
    assert verp_id(addr) is None


@pytest.mark.parametrize(("local", "domain", "message_id", "message"), [
    ("bounce", "example.com", "a+b", "cannot go into a VERP address"),
    ("bounce", "example.com", "a@b", "cannot go into a VERP address"),
    ("bo unce", "example.com", "a1", "is not the local part"),
    ("bounce", "no_domain", "a1", "not an email domain"),
    ("b" * 60, "example.com", "a1b2c3", "at most 64"),
])
def test_a_verp_address_that_cannot_be_written_is_an_input_error(
        local: str, domain: str, message_id: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        verp_address(local, domain, message_id)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True))
def test_any_message_id_comes_back_from_its_verp_address(message_id: str) -> None:
    assert verp_id(verp_address("bounce", "bounces.example.com", message_id)) == message_id


# --- any bytes -------------------------------------------------------------------------


_HEADS = [
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n"
    b"Content-Type: message/delivery-status\n\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n--b\n"
    b"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\n\n--b\n"
    b"Content-Type: message/rfc822\n\n",
    b"Content-Type: multipart/report; report-type=global-delivery-status; boundary=b\n\n"
    b"--b\nContent-Type: message/global-delivery-status\n\n",
    b"",
]
_LINES = st.sampled_from([
    b"Final-Recipient: rfc822; a@example.com", b"Original-Recipient: utf-8; \xff@x",
    b"Action: failed", b"Action: delayed", b"Status: 5.1.1", b"Status: 4.", b"",
    b"--b", b"--b--", b"Content-Type: text/rfc822-headers", b"X-Herald-Id: x y",
    b"To: =?utf-8?q?=FF?= <@>", b"Original-Rcpt-To: <>", b"Last-Attempt-Date: Mon, 99",
    b"Content-Transfer-Encoding: base64", b" folded", b"no colon", b"To: a@(b",
])


@settings(max_examples=500, deadline=None)
@given(head=st.sampled_from(_HEADS), lines=st.lists(_LINES | st.binary(max_size=30),
                                                      max_size=25),
       envelope=st.none() | st.text(max_size=30))
def test_any_bytes_give_bounces_or_an_input_error(head: bytes, lines: list[bytes],
                                                  envelope: str | None) -> None:
    raw = head + b"\n".join(lines)
    try:
        bounces = parse_report(raw, envelope_to=envelope)
    except InputError:
        return
    assert all(isinstance(b, Bounce) for b in bounces)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.eml"))),
       cut=st.integers(min_value=0), noise=st.binary(max_size=20))
def test_a_cut_or_spliced_fixture_gives_bounces_or_an_input_error(name: str, cut: int,
                                                                  noise: bytes) -> None:
    raw = fixture(name)
    at = cut % (len(raw) + 1)
    for mangled in (raw[:at], raw[:at] + noise + raw[at:]):
        try:
            bounces = parse_report(mangled)
        except InputError:
            continue
        assert all(isinstance(b, Bounce) for b in bounces)
