"""The ``devino`` driver against the fake of Devino's SMS API (``tests/fakes/devino.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from engine.drivers import OutboundMessage
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from herald_devino import DevinoConfig, DevinoDriver
from tests.fakes.devino import API_KEY, DevinoFake, running
from tests.fakes.http import Answer, json_answer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fake(anyio_backend: str) -> AsyncIterator[DevinoFake]:
    async with running() as fake:
        yield fake


def make(fake: DevinoFake, **options: Any) -> DevinoDriver:
    return DevinoDriver(msgspec.convert(fake.options(**options), DevinoConfig), gateway="dv")


@pytest.fixture
async def driver(fake: DevinoFake) -> AsyncIterator[DevinoDriver]:
    d = make(fake)
    yield d
    await d.aclose()


def msg(i: int = 0, to: str = "+79031234567", text: str = "hello") -> OutboundMessage:
    return OutboundMessage(f"run-{i}", to, "MyCompany", text)


async def test_the_request_is_the_documented_json_with_utf8_text(fake: DevinoFake) -> None:
    callback = "https://herald.example/api/v1/dlr/dv?secret=abc"
    driver = make(fake, callback_url=callback, validity=3600, priority="HIGH")
    text = "Код: 1234 — Привет 👋"
    try:
        [result] = await driver.send_batch([msg(text=text)])
    finally:
        await driver.aclose()
    [request] = fake.requests
    assert (request.method, request.target) == ("POST", "/sms/messages")
    assert request.headers["authorization"] == f"Key {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert msgspec.json.decode(request.body) == {"messages": [{
        "from": "MyCompany", "to": "79031234567", "text": text, "validity": 3600,
        "priority": "HIGH", "callbackUrl": callback, "options": {"heraldId": "run-0"}}]}
    assert text.encode() in request.body  # raw UTF-8, not \u escapes
    assert result.status == "accepted" and result.provider_id == "3482512350952730368"


async def test_optional_fields_are_left_out(fake: DevinoFake, driver: DevinoDriver) -> None:
    await driver.send_batch([msg()])
    [sent] = msgspec.json.decode(fake.requests[0].body)["messages"]
    assert set(sent) == {"from", "to", "text", "options"}


async def test_the_documented_answer_gives_the_message_id(
    fake: DevinoFake, driver: DevinoDriver
) -> None:
    # https://docs.devino.online/en/http/sms/ "Response example"
    fake.answer_next(json_answer(200, {"result": [
        {"code": "OK", "messageId": "3482512350952730368"}]}))
    [result] = await driver.send_batch([msg()])
    assert (result.id, result.status, result.provider_id) == (
        "run-0", "accepted", "3482512350952730368")


async def test_a_big_batch_goes_in_requests_of_batch_size(fake: DevinoFake) -> None:
    driver = make(fake, batch_size=100)
    batch = [msg(i, to=f"+7903{i:07d}") for i in range(250)]
    try:
        results = await driver.send_batch(batch)
    finally:
        await driver.aclose()
    assert [r.id for r in results] == [m.id for m in batch]
    assert {r.status for r in results} == {"accepted"}
    assert len({r.provider_id for r in results}) == 250
    assert sorted(len(msgspec.json.decode(r.body)["messages"]) for r in fake.requests) == [
        50, 100, 100]
    assert driver.capabilities.max_batch == 100 * 16


async def test_a_rejected_message_keeps_devinos_reason(
    fake: DevinoFake, driver: DevinoDriver
) -> None:
    fake.reject("79030000007", "INVALID_PHONE")
    results = await driver.send_batch([msg(0), msg(1, to="+79030000007"), msg(2)])
    assert [(r.status, r.error) for r in results] == [
        ("accepted", None), ("rejected", "INVALID_PHONE"), ("accepted", None)]
    assert len(fake.sent) == 2


async def test_a_rejection_without_reasons_keeps_the_description(
    fake: DevinoFake, driver: DevinoDriver
) -> None:
    fake.answer_next(json_answer(200, {"result": [
        {"code": "REJECTED", "description": "sender not approved"}, {"code": "WEIRD"}]}))
    results = await driver.send_batch([msg(0), msg(1)])
    # the unknown code and the message the answer left out have no result: unknown
    assert [(r.id, r.status, r.error) for r in results] == [
        ("run-0", "rejected", "sender not approved")]


async def test_a_wrong_key_fails_for_good_without_showing_the_key(fake: DevinoFake) -> None:
    driver = make(fake, api_key="wrong-key-987654")
    try:
        with pytest.raises(PermanentGatewayError) as err:
            await driver.send_batch([msg()])
    finally:
        await driver.aclose()
    assert err.value.code == "UNAUTHORIZED" and "401" in str(err.value)
    assert "wrong-key-987654" not in str(err.value)


async def test_throttling_slows_the_whole_call(fake: DevinoFake, driver: DevinoDriver) -> None:
    fake.answer_next(json_answer(429, {"code": "TOO_MANY_REQUESTS"}, [("retry-after", "3")]))
    with pytest.raises(TransientGatewayError) as err:
        await driver.send_batch([msg()])
    assert err.value.retry_after == 3 and err.value.unsent


async def test_a_server_error_is_transient(fake: DevinoFake, driver: DevinoDriver) -> None:
    fake.answer_next(Answer(502, b"bad gateway", content_type="text/plain"))
    with pytest.raises(TransientGatewayError, match="502"):
        await driver.send_batch([msg()])


async def test_a_2xx_that_is_not_results_leaves_the_batch_unknown(
    fake: DevinoFake, driver: DevinoDriver
) -> None:
    fake.answer_next(Answer(200, b"<html>ok</html>", content_type="text/html"))
    assert await driver.send_batch([msg(0), msg(1)]) == []


@pytest.mark.parametrize("options", [{"api_key": ""}, {"api_key": "k", "batch_size": 40000},
                                     {"api_key": "k", "callback_url": "ftp://x"},
                                     {"api_key": "k", "priority": "URGENT"}])
async def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(options, DevinoConfig)


# -- receipts ------------------------------------------------------------------------------
# The stored copy of Devino's docs shows no callback body (the driver's docstring says
# which shapes it takes); the message id is the one of the documented send answer
# (https://docs.devino.online/en/http/sms/), options what the driver sent.

async def test_final_statuses_become_receipts(driver: DevinoDriver) -> None:
    body = msgspec.json.encode({"result": [
        {"messageId": "3482512350952730368", "status": "DELIVERED",
         "ts": "2025-10-09T08:53:20Z", "options": {"heraldId": "run-0"}},
        {"messageId": "3482512350952730369", "status": "UNDELIVERED",
         "description": "subscriber absent"},
        {"messageId": "3482512350952730370", "status": "EXPIRED", "ts": 1760000000000},
        {"messageId": "3482512350952730371", "status": "SENT"},
        {"messageId": "3482512350952730372", "status": "CLICKED"},
    ]})
    receipts = driver.parse_receipts(body, {})
    assert [(r.provider_id, r.status, r.id, r.error, r.at) for r in receipts] == [
        ("3482512350952730368", "delivered", "run-0", None, 1759999999.0 + 1),
        ("3482512350952730369", "undelivered", None, "subscriber absent", None),
        ("3482512350952730370", "undelivered", None, "EXPIRED", 1760000000.0),
    ]


async def test_one_status_or_a_list_of_them(driver: DevinoDriver) -> None:
    one = b'{"messageId": 42, "status": "delivered"}'
    assert [r.provider_id for r in driver.parse_receipts(one, {})] == ["42"]
    many = b'[{"messageId": "1", "status": "REJECTED"}, {"messageId": "2", "status": "SENT"}]'
    assert [(r.provider_id, r.error) for r in driver.parse_receipts(many, {})] == [
        ("1", "REJECTED")]


@pytest.mark.parametrize(("body", "field"), [
    (b'{"result": [{"messageId": "1"}]}', "body.result[0].status"),
    (b'{"result": [{"status": "DELIVERED"}]}', "body.result[0].messageId"),
    (b'[{"messageId": "1", "status": 5}]', "body[0].status"),
    (b'{"status": "DELIVERED"}', "body.messageId"),
    (b'{"result": 3}', "body.result"),
    (b"\x00 not a receipt", "body"),
    (b"", "body"),
    (b"7", "body"),
])
async def test_malformed_callbacks_name_the_field(
    driver: DevinoDriver, body: bytes, field: str
) -> None:
    with pytest.raises(InputError) as err:
        driver.parse_receipts(body, {})
    assert str(err.value).startswith(f"{field}: ")
