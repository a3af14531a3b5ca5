"""The ``twilio`` driver against the fake of Twilio's Messages API, on asyncio and trio."""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from engine.drivers import Inbound, OutboundMessage, Receipt
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from engine.plugins import load_plugins
from herald_twilio import TwilioConfig, TwilioDriver, signature
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, STATUS_CALLBACK, FakeTwilio, serve

pytestmark = pytest.mark.anyio

INBOUND_URL = STATUS_CALLBACK.replace("/dlr/", "/inbound/")


def messages(n: int, to: str = "+15558675310", text: str = "Your code is 1234") -> list[
        OutboundMessage]:
    return [OutboundMessage(f"m{i}", to, "+15017122661", text) for i in range(n)]


@contextlib.asynccontextmanager
async def twilio(fake: FakeTwilio, **options: Any) -> AsyncIterator[TwilioDriver]:
    config = msgspec.convert({"account_sid": fake.account_sid, "auth_token": fake.auth_token,
                              "base_url": fake.url, "status_callback": STATUS_CALLBACK,
                              **options}, TwilioConfig)
    driver = TwilioDriver(config, gateway="tw")
    try:
        yield driver
    finally:
        await driver.aclose()


def parser(**options: Any) -> TwilioDriver:
    config = msgspec.convert({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                              "status_callback": STATUS_CALLBACK, **options}, TwilioConfig)
    return TwilioDriver(config, gateway="tw")


# --- the request on the wire ------------------------------------------------------------


async def test_a_message_is_one_form_post_with_basic_auth_and_the_status_callback() -> None:
    text = "Привет, 世界 👋 & a=b+c"
    async with serve() as fake, twilio(fake) as driver:
        (result,) = await driver.send_batch(messages(1, text=text))
    (request,) = fake.received
    assert request.method == "POST"
    assert request.target == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    credentials = base64.b64decode(request.headers["authorization"].removeprefix("Basic "))
    assert credentials.decode() == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert request.form == {"To": "+15558675310", "From": "+15017122661", "Body": text,
                            "StatusCallback": STATUS_CALLBACK}
    assert "%D0%9F" in request.body.decode()  # UTF-8, percent-encoded
    assert result.status == "accepted"
    assert result.provider_id in fake.messages and result.provider_id.startswith("SM")


async def test_a_messaging_service_replaces_the_from_number() -> None:
    service = "MG" + "ab" * 16
    async with serve() as fake, twilio(fake, messaging_service_sid=service) as driver:
        (result,) = await driver.send_batch(messages(1))
    assert result.status == "accepted"
    form = fake.received[0].form
    assert form["MessagingServiceSid"] == service and "From" not in form


async def test_a_batch_goes_out_as_concurrent_single_message_requests() -> None:
    async with serve() as fake, twilio(fake, max_connections=4) as driver:
        assert driver.capabilities.max_batch == 4
        assert driver.capabilities.supports_dlr and not driver.capabilities.idempotent
        results = await driver.send_batch(messages(4))
    assert [r.status for r in results] == ["accepted"] * 4
    assert len({r.provider_id for r in results}) == 4
    assert len(fake.received) == 4


async def test_the_driver_registers_as_twilio() -> None:
    assert load_plugins().drivers["twilio"] is TwilioDriver


async def test_the_config_checks_the_account_sid() -> None:
    with pytest.raises(msgspec.ValidationError, match="account_sid"):
        msgspec.convert({"account_sid": "nope", "auth_token": "x"}, TwilioConfig)


# --- what the answers mean -------------------------------------------------------------


async def test_throttling_asks_for_the_retry_after_the_answer_gives() -> None:
    async with serve() as fake, twilio(fake) as driver:
        fake.throttle, fake.retry_after = 1, "7"
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
    assert caught.value.retry_after == 7.0 and caught.value.unsent
    assert "20429" in str(caught.value)


async def test_throttling_without_retry_after_still_slows_the_sender() -> None:
    async with serve() as fake, twilio(fake) as driver:
        fake.throttle = 1
        results = await driver.send_batch(messages(3))
    retry = [r for r in results if r.status == "retry"]
    assert len(retry) == 1 and retry[0].retry_after == 1.0
    assert sorted(r.status for r in results) == ["accepted", "accepted", "retry"]


async def test_a_server_error_is_worth_retrying() -> None:
    async with serve() as fake, twilio(fake) as driver:
        fake.fail = 1
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
    assert caught.value.ambiguous is None and caught.value.retry_after is None


async def test_a_refused_number_is_rejected_with_twilios_code() -> None:
    async with serve() as fake, twilio(fake) as driver:
        fake.reject["+15550000001"] = 21610  # the recipient replied STOP
        batch = [*messages(2), OutboundMessage("bad", "+15550000001", "+15017122661", "hi"),
                 OutboundMessage("invalid", "12345", "+15017122661", "hi")]
        results = {r.id: r for r in await driver.send_batch(batch)}
    assert results["bad"].status == "rejected" and results["bad"].error == "21610"
    assert results["invalid"].status == "rejected" and results["invalid"].error == "21211"
    assert results["m0"].status == results["m1"].status == "accepted"


async def test_wrong_credentials_fail_the_whole_call_for_good() -> None:
    async with serve() as fake, twilio(fake, auth_token="wrong-token") as driver:
        with pytest.raises(PermanentGatewayError) as caught:
            await driver.send_batch(messages(3))
    assert caught.value.code == "20003"
    assert "wrong-token" not in str(caught.value)


async def test_no_answer_in_time_is_ambiguous() -> None:
    async with serve() as fake, twilio(fake, timeout=0.3) as driver:
        fake.hang = 1
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
    assert caught.value.ambiguous == "timeout"


async def test_a_connection_lost_before_the_answer_leaves_that_message_unknown() -> None:
    async with serve() as fake, twilio(fake) as driver:
        fake.hang_up = 1
        results = await driver.send_batch(messages(3))
    unknown = [r for r in results if r.status == "unknown"]
    assert len(unknown) == 1 and unknown[0].error is not None
    assert unknown[0].error.startswith("connection_lost")


async def test_no_server_means_nothing_was_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = msgspec.convert({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                              "base_url": f"http://127.0.0.1:{port}"}, TwilioConfig)
    driver = TwilioDriver(config)
    try:
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
    finally:
        await driver.aclose()
    assert caught.value.unsent


# --- status callbacks -----------------------------------------------------------------


def test_the_signature_matches_twilios_documented_example() -> None:
    # https://www.twilio.com/docs/usage/security#validating-requests
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"),
              ("Digits", "1234"), ("From", "+12349013030"), ("To", "+18005551212")]
    assert signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params) \
        == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


# The fields of a status callback as the guide lists them (MessageSid, MessageStatus,
# ErrorCode besides the standard AccountSid, From, To, ApiVersion, SmsSid, SmsStatus):
# https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
SID = "SM" + "1" * 32


def test_delivered_and_undelivered_callbacks_become_receipts() -> None:
    fake = FakeTwilio()
    driver = parser()
    body, headers = fake.status_callback(SID, "delivered")
    assert driver.parse_receipts(body, headers) == [Receipt(SID, "delivered")]
    body, headers = fake.status_callback(SID, "undelivered", error_code="30003")
    assert driver.parse_receipts(body, headers) == [Receipt(SID, "undelivered", error="30003")]
    body, headers = fake.status_callback(SID, "failed", error_code="30008")
    assert driver.parse_receipts(body, headers) == [Receipt(SID, "undelivered", error="30008")]


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "accepted", "scheduled"])
def test_callbacks_that_are_not_final_are_dropped(status: str) -> None:
    body, headers = FakeTwilio().status_callback(SID, status)
    assert parser().parse_receipts(body, headers) == []


def test_a_callback_without_a_signature_is_refused_naming_the_header() -> None:
    body, headers = FakeTwilio().status_callback(SID, "delivered")
    with pytest.raises(InputError, match=r"^X-Twilio-Signature: header missing"):
        parser().parse_receipts(body, {"content-type": headers["content-type"]})


def test_a_callback_with_a_wrong_signature_is_refused() -> None:
    body, headers = FakeTwilio().status_callback(SID, "delivered")
    forged = body.replace(b"delivered", b"undelivered")
    with pytest.raises(InputError, match=r"^X-Twilio-Signature: wrong signature"):
        parser().parse_receipts(forged, headers)
    other = FakeTwilio(auth_token="another-token").status_callback(SID, "delivered")
    with pytest.raises(InputError, match="X-Twilio-Signature"):
        parser().parse_receipts(*other)
    moved = FakeTwilio().status_callback(SID, "delivered", url="https://elsewhere.example/")
    with pytest.raises(InputError, match="X-Twilio-Signature"):
        parser().parse_receipts(*moved)


def test_a_signed_callback_without_the_sid_names_the_field() -> None:
    fake = FakeTwilio()
    body, headers = fake.signed(STATUS_CALLBACK, {"MessageStatus": "delivered"})
    with pytest.raises(InputError, match=r"^MessageSid: required field missing"):
        parser().parse_receipts(body, headers)


def test_garbage_is_refused() -> None:
    with pytest.raises(InputError):
        parser().parse_receipts(b"\x00 not a receipt", {})
    with pytest.raises(InputError, match=r"^body: "):
        parser().parse_receipts(b"\xff\xfe", {"x-twilio-signature": "abc"})


def test_receipts_cannot_be_checked_without_the_callback_url() -> None:
    body, headers = FakeTwilio().status_callback(SID, "delivered")
    with pytest.raises(InputError, match="status_callback"):
        parser(status_callback="").parse_receipts(body, headers)


async def test_a_sent_message_is_matched_by_its_callback() -> None:
    async with serve() as fake, twilio(fake) as driver:
        (result,) = await driver.send_batch(messages(1))
    assert result.provider_id is not None
    body, headers = fake.status_callback(result.provider_id, "delivered")
    (receipt,) = driver.parse_receipts(body, headers)
    assert receipt.provider_id == result.provider_id


# --- incoming messages ------------------------------------------------------------------


def test_an_incoming_message_becomes_an_inbound_reply() -> None:
    body, headers = FakeTwilio().incoming("+15558675310", "STOP", "+15017122661", INBOUND_URL)
    assert parser().parse_inbound(body, headers) == [
        Inbound("+15558675310", "STOP", "+15017122661")]
    assert TwilioDriver.takes_inbound()


def test_an_incoming_message_is_checked_against_the_inbound_url() -> None:
    url = "https://herald.example.com/hooks/sms"
    body, headers = FakeTwilio().incoming("+15558675310", "STOP", "+15017122661", url)
    with pytest.raises(InputError, match="X-Twilio-Signature: wrong signature"):
        parser().parse_inbound(body, headers)
    assert parser(inbound_url=url).parse_inbound(body, headers)[0].text == "STOP"
