"""The ``mailgun`` driver against the fake of Mailgun's Messages API, on asyncio and trio;
its webhooks (bounces, complaints, receipts) parsed as Mailgun signs them."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.mime import MimeBuilder
from engine.drivers import Bounce, OutboundMessage, Receipt
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from engine.plugins import load_plugins
from herald_mailgun import MailgunConfig, MailgunDriver, signature
from tests.fakes.http import Answer, json_answer
from tests.fakes.mailgun import API_KEY, DOMAIN, SIGNING_KEY, FakeMailgun, serve

pytestmark = pytest.mark.anyio

NOW = 1_765_000_000.0
BUILDER = MimeBuilder(from_="News <news@example.com>", domain="example.com")


def messages(n: int, to: str = "reader@example.net", text: str = "Hello") -> list[
        OutboundMessage]:
    out = []
    for i in range(n):
        mime = BUILDER.build(to=to, subject="Новости 📰", html=f"<p>{text} {i}</p>",
                             text=f"{text} {i}", message_id=f"a1b2c3d4e5-{i}",
                             unsubscribe_url=None, now=NOW)
        out.append(OutboundMessage(f"a1b2c3d4e5-{i}", to,
                                   "bounce+a1b2c3d4e5@bounces.example.com", f"{text} {i}",
                                   mime=mime))
    return out


def config(**options: Any) -> MailgunConfig:
    return msgspec.convert({"domain": DOMAIN, "api_key": API_KEY,
                            "webhook_signing_key": SIGNING_KEY, **options}, MailgunConfig)


@contextlib.asynccontextmanager
async def mailgun(fake: FakeMailgun, **options: Any) -> AsyncIterator[MailgunDriver]:
    driver = MailgunDriver(msgspec.convert(fake.options(**options), MailgunConfig),
                           gateway="mg")
    try:
        yield driver
    finally:
        await driver.aclose()


def parser(now: float = NOW, **options: Any) -> MailgunDriver:
    return MailgunDriver(config(**options), gateway="mg", clock=lambda: now)


# --- the request on the wire ------------------------------------------------------------


async def test_a_message_is_its_mime_posted_as_a_form_with_basic_auth() -> None:
    (m,) = messages(1)
    async with serve() as fake, mailgun(fake) as driver:
        (result,) = await driver.send_batch([m])
    (request,) = fake.received
    assert request.method == "POST" and request.target == f"/v3/{DOMAIN}/messages.mime"
    user, _, key = base64.b64decode(
        request.headers["authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (user, key) == ("api", API_KEY)
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert result.status == "accepted" and result.id == m.id
    assert result.provider_id == f"{m.id}@example.com"  # the MIME's Message-ID, no <>
    sent = fake.messages[result.provider_id]
    assert sent.to == m.to
    assert sent.mime == m.mime  # byte for byte: a DKIM signature over it still holds
    assert sent.variables == {"herald-id": m.id}
    assert sent.options == {"tracking": "no"}


async def test_vendor_tracking_leaves_mailguns_tracking_to_the_domain_setting() -> None:
    async with serve() as fake, mailgun(fake, vendor_tracking=True) as driver:
        (result,) = await driver.send_batch(messages(1))
    assert fake.messages[result.provider_id or ""].options == {}


async def test_a_batch_goes_out_as_one_request_per_message() -> None:
    batch = messages(6)
    async with serve() as fake, mailgun(fake, max_connections=3) as driver:
        caps = driver.capabilities
        assert caps.channel == "email" and caps.max_batch == 3
        assert caps.supports_dlr and not caps.idempotent
        assert MailgunDriver.capabilities.channel == "email"
        results = await driver.send_batch(batch[:3])
        results += await driver.send_batch(batch[3:])
    assert [r.id for r in results] == [m.id for m in batch]
    assert {r.status for r in results} == {"accepted"}
    assert len(fake.received) == 6
    assert {s.variables["herald-id"] for s in fake.messages.values()} == {m.id for m in batch}


async def test_a_message_without_mime_is_rejected_and_the_others_still_go() -> None:
    sms = OutboundMessage("sms-1", "+15551234567", "ACME", "hi")
    first, second = messages(2)
    async with serve() as fake, mailgun(fake) as driver:
        results = await driver.send_batch([first, sms, second])
    assert [(r.id, r.status) for r in results] == [
        (first.id, "accepted"), ("sms-1", "rejected"), (second.id, "accepted")]
    assert "no MIME message" in (results[1].error or "")
    assert len(fake.received) == 2


async def test_a_message_holding_the_boundary_is_rejected_unsent() -> None:
    async with serve() as fake, mailgun(fake) as driver:
        (m,) = messages(1, text=f"--{driver.boundary}")
        (result,) = await driver.send_batch([m])
    assert result.status == "rejected" and "boundary" in (result.error or "")
    assert fake.received == []


# --- answers -----------------------------------------------------------------------------


async def test_throttling_is_a_retry_after_the_wait_mailgun_asks_for() -> None:
    async with serve() as fake, mailgun(fake) as driver:
        fake.throttle, fake.retry_after = 1, "7"
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
        assert caught.value.retry_after == 7 and caught.value.unsent
        fake.throttle, fake.retry_after = 1, None
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
        assert caught.value.retry_after == 1.0
        (result,) = await driver.send_batch(messages(1))
    assert result.status == "accepted"


async def test_a_server_error_is_transient() -> None:
    async with serve() as fake, mailgun(fake) as driver:
        fake.fail = 1
        with pytest.raises(TransientGatewayError, match="HTTP 500"):
            await driver.send_batch(messages(1))


@pytest.mark.parametrize(("options", "code"), [
    ({"api_key": "wrong-key"}, "401"),
    ({"domain": "other.example.com"}, "404"),
])
async def test_a_wrong_key_or_domain_fails_the_whole_call_for_good(
        options: dict[str, str], code: str) -> None:
    async with serve() as fake, mailgun(fake, **options) as driver:
        with pytest.raises(PermanentGatewayError) as caught:
            await driver.send_batch(messages(2))
    assert caught.value.code == code


async def test_a_refused_address_is_rejected_in_mailguns_words() -> None:
    async with serve() as fake, mailgun(fake) as driver:
        (m,) = messages(1)
        (bad,) = await driver.send_batch([msgspec.structs.replace(m, to="not-an-address")])
        fake.reject["blocked@example.net"] = "Sandbox subscribers only"
        (refused,) = await driver.send_batch(messages(1, to="blocked@example.net"))
    assert bad.status == "rejected"
    assert bad.error == "400: to parameter is not a valid address. please check documentation"
    assert refused.status == "rejected" and refused.error == "400: Sandbox subscribers only"


async def test_an_answer_without_an_id_is_unknown() -> None:
    async with serve() as fake, mailgun(fake) as driver:
        fake.answer_next(json_answer(200, {"message": "Queued. Thank you."}),
                         Answer(200, b"<html>proxy</html>", content_type="text/html"))
        results = await driver.send_batch(messages(1)) + await driver.send_batch(messages(1))
    assert [r.status for r in results] == ["unknown", "unknown"]
    assert all((r.error or "").startswith("connection_lost:") for r in results)


async def test_no_answer_in_time_is_ambiguous() -> None:
    async with serve() as fake, mailgun(fake, timeout=0.2) as driver:
        fake.hang = 1
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
    assert caught.value.ambiguous == "timeout"


# --- config ------------------------------------------------------------------------------


def test_the_config_hides_its_secrets_and_normalises_the_domain() -> None:
    cfg = config(domain="Почта.Пример.рф")
    assert cfg.domain == "xn--80a1acny.xn--e1afmkfd.xn--p1ai"
    shown = repr(cfg)
    assert API_KEY not in shown and SIGNING_KEY not in shown
    assert MailgunDriver(cfg).origin.target == f"/v3/{cfg.domain}/messages.mime"


def test_the_eu_region_is_a_base_url() -> None:
    driver = MailgunDriver(config(base_url="https://api.eu.mailgun.net"))
    assert (driver.origin.scheme, driver.origin.host) == ("https", "api.eu.mailgun.net")
    assert MailgunDriver(config()).origin.host == "api.mailgun.net"


@pytest.mark.parametrize("options", [{"domain": "not a domain"}, {"api_key": ""},
                                     {"webhook_max_age": -1}, {"base_url": "ftp://x"},
                                     {"no_such_option": 1}])
def test_a_bad_option_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        config(**options)


def test_the_driver_registers_through_the_plugin_registry() -> None:
    assert load_plugins().drivers["mailgun"] is MailgunDriver


# --- webhooks ----------------------------------------------------------------------------


async def test_a_bounce_webhook_finds_its_message_by_herald_id_and_provider_id() -> None:
    (m,) = messages(1)
    async with serve() as fake, mailgun(fake) as driver:
        (result,) = await driver.send_batch([m])
    provider_id = result.provider_id or ""
    hard = fake.webhook("failed", provider_id, severity="permanent", at=NOW - 5)
    soft = fake.webhook("failed", provider_id, severity="temporary", code=452,
                        text="4.2.2 Mailbox full", reason="generic", at=NOW - 5)
    complaint = fake.webhook("complained", provider_id, at=NOW - 5)
    p = parser()
    assert p.parse_bounces(*hard) == [Bounce(
        "hard", m.to, id=m.id, provider_id=provider_id, at=NOW - 5,
        error="bounce: 550 5.1.1 The email account that you tried to reach does not exist.")]
    assert p.parse_bounces(*soft) == [Bounce(
        "soft", m.to, id=m.id, provider_id=provider_id, at=NOW - 5,
        error="generic: 452 4.2.2 Mailbox full")]
    assert p.parse_bounces(*complaint) == [Bounce(
        "complaint", m.to, id=m.id, provider_id=provider_id, at=NOW - 5, error="complained")]


@pytest.mark.parametrize("event", ["delivered", "opened", "clicked", "accepted",
                                   "unsubscribed"])
def test_other_events_are_no_bounces(event: str) -> None:
    assert parser().parse_bounces(*FakeMailgun().webhook(event, "x@mg", at=NOW)) == []


def test_receipts_are_the_delivered_and_permanently_failed_events() -> None:
    fake, p = FakeMailgun(), parser()
    assert p.parse_receipts(*fake.webhook("delivered", "<id-1@mg>", at=NOW)) == [
        Receipt("id-1@mg", "delivered", at=NOW)]
    (failed,) = p.parse_receipts(*fake.webhook("failed", "id-2@mg", at=NOW))
    assert (failed.provider_id, failed.status) == ("id-2@mg", "undelivered")
    assert failed.error and failed.error.startswith("bounce: 550 5.1.1")
    assert p.parse_receipts(*fake.webhook("failed", "id-3@mg", severity="temporary",
                                          at=NOW)) == []
    assert p.parse_receipts(*fake.webhook("opened", "id-4@mg", at=NOW)) == []


def test_a_wrong_signature_is_refused() -> None:
    body, headers = FakeMailgun().webhook("failed", "x@mg", at=NOW, key="another key")
    with pytest.raises(InputError, match=r"^signature\.signature: wrong signature"):
        parser().parse_bounces(body, headers)


def test_a_signature_replayed_with_another_event_is_refused_a_redelivery_taken() -> None:
    # Mailgun signs the timestamp and token only: the event must be bound to the token
    p = parser()
    body, headers = FakeMailgun().webhook("failed", "x@mg", at=NOW)
    assert p.parse_bounces(body, headers)
    assert p.parse_bounces(body, headers)  # Mailgun delivering it again
    reordered = msgspec.json.decode(body)
    reordered["event-data"] = dict(reversed(reordered["event-data"].items()))
    assert p.parse_bounces(msgspec.json.encode(reordered), headers)  # the same event
    forged = body.replace(b"someone@example.com", b"victim@example.com")
    with pytest.raises(InputError, match=r"^signature\.token: already signed another"):
        p.parse_bounces(forged, headers)


def test_a_subaccounts_parent_signature_is_taken() -> None:
    body = msgspec.json.decode(FakeMailgun().webhook("complained", "x@mg", at=NOW,
                                                     key="subaccount key")[0])
    sig = body["signature"]
    sig["parent-signature"] = signature(SIGNING_KEY, sig["timestamp"], sig["token"])
    (bounce,) = parser().parse_bounces(msgspec.json.encode(body), {})
    assert bounce.kind == "complaint"


def test_an_old_or_future_signature_is_refused_unless_age_is_not_checked() -> None:
    fake = FakeMailgun()
    old = fake.webhook("failed", "x@mg", at=NOW - 10 * 3600)
    assert parser(now=NOW - 10 * 3600 + 60).parse_bounces(*old)  # fresh then
    with pytest.raises(InputError, match=r"^signature\.timestamp: signed 36000 s ago"):
        parser().parse_bounces(*old)
    assert parser(webhook_max_age=0).parse_bounces(*old)
    future = fake.webhook("failed", "x@mg", at=NOW + 3600)
    with pytest.raises(InputError, match=r"^signature\.timestamp: 3600 s in the future"):
        parser().parse_bounces(*future)


def test_without_a_signing_key_nothing_is_taken() -> None:
    body, headers = FakeMailgun().webhook("failed", "x@mg", at=NOW)
    with pytest.raises(InputError, match="webhook_signing_key"):
        parser(webhook_signing_key="").parse_bounces(body, headers)


def signed(event_data: dict[str, Any], timestamp: object = None) -> bytes:
    stamp = str(int(NOW)) if timestamp is None else timestamp
    token = "t" * 50
    return msgspec.json.encode({"signature": {
        "timestamp": stamp, "token": token,
        "signature": signature(SIGNING_KEY, str(stamp), token)}, "event-data": event_data})


@pytest.mark.parametrize(("body", "message"), [
    (b"event=failed&recipient=x", r"^body: not a Mailgun webhook \(JSON\)"),
    (b'{"event-data": {"event": "failed"}}', r"^signature: required field missing"),
    (signed({"recipient": "a@example.com"}), r"^event-data\.event: required field missing"),
    (signed({"event": "failed", "severity": "permanent"}), r"^event-data\.recipient: "),
    (signed({"event": "failed", "recipient": "a@example.com"}), r"^event-data\.severity: "),
    (signed({"event": "failed"}, timestamp="soon"), r"^signature\.timestamp: 'soon'"),
    (signed({"event": "failed"}, timestamp="nan"), r"^signature\.timestamp: 'nan'"),
])
def test_a_malformed_webhook_is_an_input_error_naming_the_field(body: bytes,
                                                                message: str) -> None:
    with pytest.raises(InputError, match=message):
        parser().parse_bounces(body, {})


def test_a_receipt_without_a_message_id_names_the_field() -> None:
    body = signed({"event": "delivered", "recipient": "a@example.com"})
    with pytest.raises(InputError, match=r"^event-data\.message\.headers\.message-id: "):
        parser().parse_receipts(body, {})


_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["event", "severity", "recipient", "timestamp", "message",
                         "headers", "message-id", "user-variables", "herald-id",
                         "delivery-status", "code", "reason", "x"]) | st.text(max_size=5),
        inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(data=_json, raw=st.binary(max_size=200))
def test_any_body_gives_bounces_or_an_input_error(data: Any, raw: bytes) -> None:
    p = parser(webhook_max_age=0)
    for body in (raw, signed(data), msgspec.json.encode(data)):
        for parse in (p.parse_bounces, p.parse_receipts):
            try:
                parsed = parse(body, {})
            except InputError:
                continue
            assert isinstance(parsed, list)


def test_the_clock_defaults_to_the_wall_clock() -> None:
    body, headers = FakeMailgun().webhook("failed", "x@mg")
    driver = MailgunDriver(config())
    assert abs(driver.clock() - time.time()) < 60
    assert driver.parse_bounces(body, headers)
