"""The ``infobip`` driver against the fake of Infobip's SMS API v3, on asyncio and trio."""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from engine.drivers import Inbound, OutboundMessage, Receipt
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from engine.plugins import load_plugins
from herald_infobip import InfobipConfig, InfobipDriver
from tests.fakes.infobip import API_KEY, NOTIFY_URL, FakeInfobip, serve

pytestmark = pytest.mark.anyio

AT = datetime.datetime(2019, 11, 9, 16, 0, tzinfo=datetime.UTC).timestamp()


def messages(n: int, to: str = "+41793026727", text: str = "Your code is 1234",
             prefix: str = "m") -> list[OutboundMessage]:
    return [OutboundMessage(f"{prefix}{i}", to, "InfoSMS", f"{text} {i}") for i in range(n)]


@contextlib.asynccontextmanager
async def infobip(fake: FakeInfobip, **options: Any) -> AsyncIterator[InfobipDriver]:
    config = msgspec.convert({"api_key": fake.api_key, "base_url": fake.url,
                              "notify_url": NOTIFY_URL, **options}, InfobipConfig)
    driver = InfobipDriver(config, gateway="ib")
    try:
        yield driver
    finally:
        await driver.aclose()


def parser() -> InfobipDriver:
    return InfobipDriver(msgspec.convert({"api_key": API_KEY}, InfobipConfig), gateway="ib")


# --- the request on the wire ------------------------------------------------------------


async def test_a_batch_is_one_json_request_with_the_app_key() -> None:
    text = "Привет 👋 \"quoted\""
    async with serve() as fake, infobip(fake) as driver:
        results = await driver.send_batch(messages(3, text=text))
    (request,) = fake.received
    assert (request.method, request.target) == ("POST", "/sms/3/messages")
    assert request.headers["authorization"] == f"App {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["messages"][1] == {
        "sender": "InfoSMS", "destinations": [{"to": "41793026727", "messageId": "m1"}],
        "content": {"text": f"{text} 1"},
        "webhooks": {"delivery": {"url": NOTIFY_URL}, "contentType": "application/json"},
    }
    assert "Привет".encode() in request.body  # UTF-8 JSON, not escaped
    assert [(r.id, r.status, r.provider_id) for r in results] == [
        ("m0", "accepted", "m0"), ("m1", "accepted", "m1"), ("m2", "accepted", "m2")]


async def test_without_a_notify_url_no_webhooks_are_sent() -> None:
    async with serve() as fake, infobip(fake, notify_url="") as driver:
        await driver.send_batch(messages(1))
    assert "webhooks" not in json.loads(fake.received[0].body)["messages"][0]


async def test_big_batches_are_cut_into_concurrent_requests() -> None:
    async with serve() as fake, infobip(fake, batch_size=10, max_connections=3) as driver:
        assert driver.capabilities.max_batch == 30
        results = await driver.send_batch(messages(30))
    assert [r.id for r in results] == [f"m{i}" for i in range(30)]
    assert {r.status for r in results} == {"accepted"}
    assert sorted(len(json.loads(r.body)["messages"]) for r in fake.received) == [10, 10, 10]


async def test_idempotency_is_declared_only_when_configured() -> None:
    async with serve() as fake, infobip(fake) as plain, infobip(fake, idempotent=True) as idem:
        assert not plain.capabilities.idempotent and idem.capabilities.idempotent
        assert plain.capabilities.supports_dlr


async def test_where_infobip_dedupes_a_resent_message_goes_out_once() -> None:
    async with serve(dedupe=True) as fake, infobip(fake, idempotent=True) as driver:
        first = await driver.send_batch(messages(2))
        again = await driver.send_batch(messages(2))
    assert first == again
    assert [s["destinations"][0]["messageId"] for s in fake.sent] == ["m0", "m1"]


async def test_the_driver_registers_as_infobip() -> None:
    assert load_plugins().drivers["infobip"] is InfobipDriver


# --- what the answers mean -------------------------------------------------------------


async def test_a_rejected_number_is_rejected_with_the_status_name() -> None:
    async with serve() as fake, infobip(fake) as driver:
        fake.reject["41790000000"] = "REJECTED_DESTINATION"
        batch = [*messages(2), OutboundMessage("bad", "+41790000000", "InfoSMS", "hi")]
        results = {r.id: r for r in await driver.send_batch(batch)}
    assert (results["bad"].status, results["bad"].error) == ("rejected", "REJECTED_DESTINATION")
    assert results["m0"].status == results["m1"].status == "accepted"


async def test_throttling_asks_for_the_retry_after_the_answer_gives() -> None:
    async with serve() as fake, infobip(fake) as driver:
        fake.throttle, fake.retry_after = 1, "3"
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(2))
        assert caught.value.retry_after == 3.0 and caught.value.unsent
        assert "E429" in str(caught.value)
        fake.throttle, fake.retry_after = 1, None
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(2))
        assert caught.value.retry_after == 1.0


async def test_a_throttled_request_among_several_comes_back_retry() -> None:
    async with serve() as fake, infobip(fake, batch_size=2, max_connections=1) as driver:
        fake.throttle = 1
        results = await driver.send_batch(messages(4))
    assert [r.status for r in results] == ["retry", "retry", "accepted", "accepted"]
    assert results[0].retry_after == 1.0


async def test_a_server_error_is_worth_retrying() -> None:
    async with serve() as fake, infobip(fake) as driver:
        fake.fail = 1
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(2))
    assert caught.value.ambiguous is None and not caught.value.unsent


async def test_a_wrong_api_key_fails_for_good_without_showing_the_key() -> None:
    async with serve() as fake, infobip(fake, api_key="wrong-key-1234") as driver:
        with pytest.raises(PermanentGatewayError) as caught:
            await driver.send_batch(messages(2))
    assert caught.value.code == "E401" and "wrong-key-1234" not in str(caught.value)


async def test_a_malformed_request_names_infobips_violations() -> None:
    async with serve() as fake, infobip(fake) as driver:
        with pytest.raises(PermanentGatewayError) as caught:
            await driver.send_batch([OutboundMessage("m0", "+41793026727", "", "hi")])
    assert caught.value.code == "E400"
    assert "messages[0].sender: must not be blank" in str(caught.value)


async def test_no_answer_in_time_is_ambiguous() -> None:
    async with serve() as fake, infobip(fake, timeout=0.3) as driver:
        fake.hang = 1
        with pytest.raises(TransientGatewayError) as caught:
            await driver.send_batch(messages(2))
    assert caught.value.ambiguous == "timeout"


async def test_a_connection_lost_before_the_answer_leaves_that_request_unknown() -> None:
    async with serve() as fake, infobip(fake, batch_size=2, max_connections=1) as driver:
        fake.hang_up = 1
        results = await driver.send_batch(messages(4))
    assert [r.status for r in results] == ["unknown", "unknown", "accepted", "accepted"]
    assert results[0].error is not None and results[0].error.startswith("connection_lost")


# --- delivery reports -----------------------------------------------------------------

# The request sample of
# https://infobip.com/docs/api/channels/sms/sms-messaging/logs-and-status-reports/receive-outbound-sms-message-report
DOCUMENTED_REPORT = {"results": [
    {"bulkId": "BULK-ID-123-xyz", "messageId": "MESSAGE-ID-123-xyz", "to": "41793026727",
     "sentAt": "2019-11-09T16:00:00.000+0000", "doneAt": "2019-11-09T16:00:00.000+0000",
     "smsCount": 1, "callbackData": "callbackData",
     "price": {"pricePerMessage": 0.01, "currency": "EUR"},
     "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5,
                "name": "DELIVERED_TO_HANDSET", "description": "Message delivered to handset"},
     "error": {"groupId": 0, "groupName": "Ok", "id": 0, "name": "NO_ERROR",
               "description": "No Error", "permanent": False},
     "entityId": "promotional-traffic-entity",
     "applicationId": "marketing-automation-application"},
    {"bulkId": "BULK-ID-123-xyz", "messageId": "12db39c3-7822-4e72-a3ec-c87442c0ffc5",
     "to": "41793026834", "sentAt": "2019-11-09T17:00:00.000+0000",
     "doneAt": "2019-11-09T17:00:00.000+0000", "smsCount": 1,
     "price": {"pricePerMessage": 0.01, "currency": "EUR"},
     "status": {"groupId": 3, "groupName": "DELIVERED", "id": 5,
                "name": "DELIVERED_TO_HANDSET", "description": "Message delivered to handset"},
     "error": {"groupId": 0, "groupName": "Ok", "id": 0, "name": "NO_ERROR",
               "description": "No Error", "permanent": False}},
]}


def test_the_documented_report_is_two_delivered_receipts() -> None:
    receipts = parser().parse_receipts(json.dumps(DOCUMENTED_REPORT).encode(), {})
    assert receipts == [Receipt("MESSAGE-ID-123-xyz", "delivered", at=AT),
                        Receipt("12db39c3-7822-4e72-a3ec-c87442c0ffc5", "delivered",
                                at=AT + 3600)]


@pytest.mark.parametrize("group", ["UNDELIVERABLE", "EXPIRED", "REJECTED"])
def test_final_failures_are_undelivered_with_the_error_name(group: str) -> None:
    (receipt,) = parser().parse_receipts(FakeInfobip().report(("m0", group)), {})
    assert (receipt.provider_id, receipt.status, receipt.error) == (
        "m0", "undelivered", "EC_ABSENT_SUBSCRIBER")


def test_a_failure_without_an_error_says_its_status() -> None:
    body = json.dumps({"results": [{"messageId": "m0", "status": {
        "groupId": 5, "groupName": "REJECTED", "id": 12, "name": "REJECTED_NOT_ENOUGH_CREDITS"}}]})
    (receipt,) = parser().parse_receipts(body.encode(), {})
    assert (receipt.status, receipt.error) == ("undelivered", "REJECTED_NOT_ENOUGH_CREDITS")


def test_pending_reports_are_dropped() -> None:
    body = FakeInfobip().report(("m0", "PENDING"), ("m1", "DELIVERED"))
    assert [r.provider_id for r in parser().parse_receipts(body, {})] == ["m1"]


async def test_a_sent_message_is_matched_by_its_report() -> None:
    async with serve() as fake, infobip(fake) as driver:
        (result,) = await driver.send_batch(messages(1))
    assert result.provider_id is not None
    (receipt,) = driver.parse_receipts(fake.report((result.provider_id, "DELIVERED")), {})
    assert receipt.provider_id == result.provider_id == "m0"


def test_malformed_reports_name_the_field() -> None:
    with pytest.raises(InputError, match=r"^body: "):
        parser().parse_receipts(b"\x00 not a receipt", {})
    with pytest.raises(InputError, match=r"^results\[0\]\.messageId: required field missing"):
        parser().parse_receipts(b'{"results": [{"status": {"groupId": 3}}]}', {})
    with pytest.raises(InputError, match=r"^results: required field missing"):
        parser().parse_receipts(b"{}", {})


# --- inbound messages -----------------------------------------------------------------

# The request sample of
# https://www.infobip.com/docs/api/channels/sms/sms-messaging/inbound-sms/receive-inbound-sms-messages
DOCUMENTED_INBOUND = {"results": [
    {"messageId": "817790313235066447", "from": "385916242493", "to": "385921004026",
     "text": "QUIZ Correct answer is Paris", "cleanText": "Correct answer is Paris",
     "keyword": "QUIZ", "receivedAt": "2019-11-09T16:00:00.000+0000", "smsCount": 1,
     "price": {"pricePerMessage": 0, "currency": "EUR"}, "callbackData": "callbackData"}],
    "messageCount": 1, "pendingMessageCount": 0}


def test_forwarded_sms_become_replies() -> None:
    assert parser().parse_inbound(json.dumps(DOCUMENTED_INBOUND).encode(), {}) == [
        Inbound("385916242493", "QUIZ Correct answer is Paris", "385921004026", AT)]
    body = FakeInfobip().inbound("41793026727", "STOP", "InfoSMS")
    assert parser().parse_inbound(body, {})[0].text == "STOP"
    assert InfobipDriver.takes_inbound()


def test_a_forwarded_sms_without_the_sender_names_the_field() -> None:
    with pytest.raises(InputError, match=r"^results\[0\]\.from: required field missing"):
        parser().parse_inbound(b'{"results": [{"text": "STOP"}]}', {})
