"""The ``vonage`` driver against the fake of Vonage's SMS API, on asyncio and trio."""

from __future__ import annotations

import calendar
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest

from engine.drivers import Inbound, OutboundMessage, Receipt
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from engine.plugins import load_plugins
from herald_vonage import VonageConfig, VonageDriver, signature
from tests.fakes.vonage import API_KEY, API_SECRET, CALLBACK, FakeVonage, serve

pytestmark = pytest.mark.anyio

LONG = "A long text that needs two parts. " * 6  # 204 GSM-7 characters


def messages(n: int, to: str = "+447700900000", text: str = "Your code is 1234") -> list[
        OutboundMessage]:
    return [OutboundMessage(f"m{i}", to, "AcmeInc", text) for i in range(n)]


@contextlib.asynccontextmanager
async def vonage(fake: FakeVonage, **options: Any) -> AsyncIterator[VonageDriver]:
    config = msgspec.convert({"api_key": fake.api_key, "api_secret": fake.api_secret,
                              "base_url": fake.url, "callback": CALLBACK, **options},
                             VonageConfig)
    driver = VonageDriver(config, gateway="vg")
    try:
        yield driver
    finally:
        await driver.aclose()


def parser(**options: Any) -> VonageDriver:
    config = msgspec.convert({"api_key": API_KEY, "api_secret": API_SECRET, **options},
                             VonageConfig)
    return VonageDriver(config, gateway="vg")


# --- the request on the wire ------------------------------------------------------------


async def test_a_message_is_one_form_post_with_key_secret_and_client_ref() -> None:
    async with serve() as fake, vonage(fake) as driver:
        (result,) = await driver.send_batch(messages(1))
    (request,) = fake.received
    assert (request.method, request.target) == ("POST", "/sms/json")
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert request.form == {"api_key": API_KEY, "api_secret": API_SECRET, "from": "AcmeInc",
                            "to": "447700900000", "text": "Your code is 1234", "type": "text",
                            "client-ref": "m0", "callback": CALLBACK}
    assert result.status == "accepted" and result.provider_id in fake.parts


async def test_unicode_text_is_sent_as_type_unicode() -> None:
    text = "Привет 👋, your code is 1234"
    async with serve() as fake, vonage(fake) as driver:
        (result,) = await driver.send_batch(messages(1, text=text))
    form = fake.received[0].form
    assert form["type"] == "unicode" and form["text"] == text
    assert result.status == "accepted"


async def test_a_long_id_is_not_sent_as_client_ref() -> None:
    long_id = "x" * 41
    async with serve() as fake, vonage(fake) as driver:
        await driver.send_batch([OutboundMessage(long_id, "+447700900000", "AcmeInc", "hi")])
    assert "client-ref" not in fake.received[0].form


async def test_a_batch_goes_out_as_concurrent_single_message_requests() -> None:
    async with serve() as fake, vonage(fake, max_connections=3) as driver:
        caps = driver.capabilities
        assert (caps.max_batch, caps.supports_dlr, caps.idempotent) == (3, True, False)
        results = await driver.send_batch(messages(3))
    assert [r.status for r in results] == ["accepted"] * 3
    assert len(fake.received) == 3


async def test_the_driver_registers_as_vonage() -> None:
    assert load_plugins().drivers["vonage"] is VonageDriver


# --- what the answers mean -------------------------------------------------------------


async def test_a_long_text_is_accepted_under_its_first_parts_id() -> None:
    async with serve() as fake, vonage(fake) as driver:
        (result,) = await driver.send_batch(messages(1, text=LONG))
    first, second = fake.parts
    assert result.status == "accepted" and result.provider_id == first != second


async def test_a_text_whose_second_part_failed_is_rejected_not_resent() -> None:
    async with serve() as fake, vonage(fake) as driver:
        fake.partial["447700900000"] = 6
        (result,) = await driver.send_batch(messages(1, text=LONG))
    assert result.status == "rejected" and result.error == "6"
    assert result.provider_id in fake.parts


async def test_throttling_slows_the_sender() -> None:
    async with serve() as fake, vonage(fake) as driver:
        fake.throttle = 1
        (result,) = await driver.send_batch(messages(1))
    assert result.status == "retry" and result.retry_after == 1.0


@pytest.mark.parametrize("status", [5, 10])
async def test_internal_errors_are_worth_retrying(status: int) -> None:
    async with serve() as fake, vonage(fake) as driver:
        fake.reject["447700900000"] = status
        (result,) = await driver.send_batch(messages(1))
    assert result.status == "retry" and result.retry_after is None


@pytest.mark.parametrize("status", [3, 6, 7, 9, 15, 29, 33])
async def test_refusals_of_the_message_are_rejected_with_the_status(status: int) -> None:
    async with serve() as fake, vonage(fake) as driver:
        fake.reject["447700900001"] = status
        batch = [*messages(1), OutboundMessage("bad", "+447700900001", "AcmeInc", "hi")]
        results = await driver.send_batch(batch)
    assert [(r.status, r.error) for r in results] == [("accepted", None),
                                                       ("rejected", str(status))]


async def test_wrong_credentials_fail_the_whole_call_for_good() -> None:
    async with serve() as fake, vonage(fake, api_secret="wrong-secret") as driver:
        with pytest.raises(PermanentGatewayError) as caught:
            await driver.send_batch(messages(3))
    assert caught.value.code == "4" and "wrong-secret" not in str(caught.value)


async def test_http_errors_map_as_the_shared_stack_does() -> None:
    async with serve() as fake, vonage(fake) as driver:
        fake.http_fail = 1
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
        assert caught.value.retry_after is None
        fake.http_fail, fake.http_status = 1, 429
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
        assert caught.value.retry_after == 1.0 and caught.value.unsent


async def test_no_answer_in_time_is_ambiguous() -> None:
    async with serve() as fake, vonage(fake, timeout=0.3) as driver:
        fake.hang = 1
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(1))
    assert caught.value.ambiguous == "timeout"


async def test_a_connection_lost_before_the_answer_leaves_that_message_unknown() -> None:
    async with serve() as fake, vonage(fake) as driver:
        fake.hang_up = 1
        results = await driver.send_batch(messages(2))
    assert sorted(r.status for r in results) == ["accepted", "unknown"]


# --- delivery receipts ----------------------------------------------------------------

# The typical DLR of https://developer.vonage.com/messaging/sms/guides/delivery-receipts
DOCUMENTED_DLR = {
    "err-code": "0", "message-timestamp": "2018-10-25 12:10:29",
    "messageId": "0B00000127FDBC63", "msisdn": "447547232824", "network-code": "23410",
    "price": "0.03330000", "scts": "1810251310", "status": "delivered", "to": "Vonage APIs",
}


def test_the_documented_dlr_is_a_delivered_receipt_as_json_or_form() -> None:
    at = float(calendar.timegm((2018, 10, 25, 13, 10, 0)))
    expected = [Receipt("0B00000127FDBC63", "delivered", at=at)]
    assert parser().parse_receipts(json.dumps(DOCUMENTED_DLR).encode(), {}) == expected
    assert parser().parse_receipts(urlencode(DOCUMENTED_DLR).encode(), {}) == expected


@pytest.mark.parametrize("status", ["failed", "rejected", "expired"])
def test_final_failures_are_undelivered_with_the_err_code(status: str) -> None:
    body = json.dumps({**DOCUMENTED_DLR, "status": status, "err-code": "1"}).encode()
    (receipt,) = parser().parse_receipts(body, {})
    assert (receipt.status, receipt.error) == ("undelivered", "1")


@pytest.mark.parametrize("status", ["accepted", "buffered", "unknown"])
def test_intermediate_dlrs_are_dropped(status: str) -> None:
    body = json.dumps({**DOCUMENTED_DLR, "status": status}).encode()
    assert parser().parse_receipts(body, {}) == []


async def test_each_part_gets_its_receipt_and_the_first_one_matches_the_message() -> None:
    async with serve() as fake, vonage(fake) as driver:
        (result,) = await driver.send_batch(messages(1, text=LONG))
    receipts = [r for part in fake.parts
                for r in driver.parse_receipts(fake.receipt(part, "delivered"), {})]
    assert [r.provider_id for r in receipts] == list(fake.parts)
    assert receipts[0].provider_id == result.provider_id
    assert {r.id for r in receipts} == {"m0"}  # the client-ref, echoed


def test_malformed_receipts_name_the_field() -> None:
    with pytest.raises(InputError):
        parser().parse_receipts(b"\x00 not a receipt", {})
    with pytest.raises(InputError, match=r"^messageId: required field missing"):
        parser().parse_receipts(b'{"status": "delivered"}', {})
    with pytest.raises(InputError, match=r"^body: "):
        parser().parse_receipts(b'{"status": ', {})


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_signed_webhooks_are_checked_when_a_signature_secret_is_set(method: Any) -> None:
    fake = FakeVonage(signature_secret="sig-secret", signature_method=method)
    driver = parser(signature_secret="sig-secret", signature_method=method)
    body = fake.receipt("0B00000127FDBC63", "delivered", as_json=False)
    assert driver.parse_receipts(body, {})[0].status == "delivered"
    forged = body.replace(b"status=delivered", b"status=failed")
    with pytest.raises(InputError, match=r"^sig: wrong signature"):
        driver.parse_receipts(forged, {})
    with pytest.raises(InputError, match=r"^sig: missing"):
        driver.parse_receipts(json.dumps(DOCUMENTED_DLR).encode(), {})


def test_the_signature_replaces_ampersands_and_equals_in_values() -> None:
    plain = signature("s", "md5hash", {"text": "a_b_c"})
    assert signature("s", "md5hash", {"text": "a&b=c", "sig": "ignored"}) == plain


# --- inbound messages -----------------------------------------------------------------

# The inbound-SMS webhook's fields: https://developer.vonage.com/en/api/sms#inbound-sms
DOCUMENTED_INBOUND = {
    "msisdn": "447700900001", "to": "447700900000", "messageId": "0A0000000123ABCD1",
    "text": "Hello world", "type": "text", "keyword": "HELLO",
    "message-timestamp": "2020-01-01 12:00:00",
}


def test_an_inbound_sms_becomes_a_reply() -> None:
    at = float(calendar.timegm((2020, 1, 1, 12, 0, 0)))
    body = json.dumps({**DOCUMENTED_INBOUND, "text": "STOP"}).encode()
    assert parser().parse_inbound(body, {}) == [
        Inbound("447700900001", "STOP", "447700900000", at)]
    assert parser().parse_inbound(urlencode(DOCUMENTED_INBOUND).encode(), {})[0].text == \
        "Hello world"
    assert VonageDriver.takes_inbound()


def test_an_inbound_sms_without_the_sender_names_the_field() -> None:
    with pytest.raises(InputError, match=r"^msisdn: "):
        parser().parse_inbound(b'{"text": "STOP"}', {})
