"""The ``exolve`` driver against the fake of MTS Exolve's SMS API (``tests/fakes/exolve.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from engine.drivers import OutboundMessage
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from herald_exolve import ExolveConfig, ExolveDriver
from tests.fakes.exolve import API_KEY, ExolveFake, running
from tests.fakes.http import Answer, json_answer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fake(anyio_backend: str) -> AsyncIterator[ExolveFake]:
    async with running() as fake:
        yield fake


def make(fake: ExolveFake, **options: Any) -> ExolveDriver:
    return ExolveDriver(msgspec.convert(fake.options(**options), ExolveConfig), gateway="ex")


@pytest.fixture
async def driver(fake: ExolveFake) -> AsyncIterator[ExolveDriver]:
    d = make(fake)
    yield d
    await d.aclose()


def msg(i: int = 0, to: str = "+79031234567", text: str = "hello") -> OutboundMessage:
    return OutboundMessage(f"run-{i}", to, "ACME", text)


async def test_the_request_is_the_documented_json_and_number_is_the_sender(
    fake: ExolveFake, driver: ExolveDriver
) -> None:
    text = "Ваш код: 1234 🔐"
    [result] = await driver.send_batch([msg(text=text)])
    [request] = fake.requests
    assert (request.method, request.target) == ("POST", "/messaging/v1/SendSMS")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    # https://docs.exolve.ru/docs/ru/api-reference/sms-api/sending-sms: number is the
    # sender (alpha name or the account's number), destination the recipient
    assert msgspec.json.decode(request.body) == {
        "number": "ACME", "destination": "79031234567", "text": text}
    assert text.encode() in request.body
    assert (result.status, result.provider_id) == ("accepted", "412000000001")


async def test_one_request_per_message(fake: ExolveFake, driver: ExolveDriver) -> None:
    batch = [msg(i, to=f"+7903{i:07d}") for i in range(driver.capabilities.max_batch)]
    results = await driver.send_batch(batch)
    assert [r.id for r in results] == [m.id for m in batch]
    assert {r.status for r in results} == {"accepted"}
    assert len(fake.requests) == len(batch) == 16
    caps = driver.capabilities
    assert (caps.supports_dlr, caps.idempotent) == (True, False)


async def test_a_refused_destination_is_rejected_with_exolves_code(
    fake: ExolveFake, driver: ExolveDriver
) -> None:
    fake.reject("79030000007")
    results = await driver.send_batch([msg(0), msg(1, to="+79030000007"), msg(2)])
    assert [(r.status, r.error) for r in results] == [
        ("accepted", None), ("rejected", "3"), ("accepted", None)]


async def test_a_wrong_key_fails_for_good_without_showing_the_key(fake: ExolveFake) -> None:
    driver = make(fake, api_key="wrong-key-987654")
    try:
        with pytest.raises(PermanentGatewayError) as err:
            await driver.send_batch([msg()])
    finally:
        await driver.aclose()
    assert err.value.code == "401" and "unauthorized" in str(err.value)
    assert "wrong-key-987654" not in str(err.value)


async def test_throttling_and_server_errors(fake: ExolveFake, driver: ExolveDriver) -> None:
    fake.answer_next(json_answer(429, {"error": {"code": 429, "message": "rate limit"}},
                                 [("retry-after", "2")]))
    with pytest.raises(TransientGatewayError) as err:
        await driver.send_batch([msg()])
    assert err.value.retry_after == 2 and err.value.unsent
    fake.answer_next(Answer(500, b"oops", content_type="text/plain"))
    with pytest.raises(TransientGatewayError, match="500"):
        await driver.send_batch([msg()])


async def test_a_2xx_without_message_id_is_left_unknown(
    fake: ExolveFake, driver: ExolveDriver
) -> None:
    fake.answer_next(json_answer(200, {}))
    assert await driver.send_batch([msg()]) == []


async def test_the_key_is_required() -> None:
    with pytest.raises(msgspec.ValidationError, match="api_key"):
        msgspec.convert({}, ExolveConfig)


# -- callbacks -----------------------------------------------------------------------------
# The stored copy of Exolve's docs shows no callback body: these use the field names
# Exolve's SMS API uses elsewhere (message_id, sender, receiver, text), as the driver's
# docstring says.

async def test_final_statuses_become_receipts(driver: ExolveDriver) -> None:
    body = msgspec.json.encode([
        {"message_id": "412000000001", "status": "DELIVERED", "date": "2025-10-09T08:53:20Z"},
        {"message_id": "412000000002", "status": "undelivered", "error": "absent"},
        {"message_id": 412000000003, "status": "EXPIRED"},
        {"message_id": "412000000004", "status": "SENT"},
    ])
    assert [(r.provider_id, r.status, r.error, r.at) for r in
            driver.parse_receipts(body, {})] == [
        ("412000000001", "delivered", None, 1760000000.0),
        ("412000000002", "undelivered", "absent", None),
        ("412000000003", "undelivered", "EXPIRED", None),
    ]


async def test_an_incoming_message_is_inbound_not_a_receipt(driver: ExolveDriver) -> None:
    body = b'{"sender": "79031234567", "receiver": "79001112233", "text": "STOP"}'
    assert driver.parse_receipts(body, {}) == []
    [reply] = driver.parse_inbound(body, {})
    assert (reply.phone, reply.text, reply.to) == ("79031234567", "STOP", "79001112233")
    status = b'{"message_id": "1", "status": "DELIVERED"}'
    assert driver.parse_inbound(status, {}) == []


@pytest.mark.parametrize(("body", "field"), [
    (b'{"message_id": "1"}', "body.status"),
    (b'[{"status": "DELIVERED"}]', "body[0].message_id"),
    (b'{"message_id": "1", "status": 3}', "body.status"),
    (b"\x00 not a receipt", "body"),
    (b"", "body"),
    (b'"x"', "body"),
])
async def test_malformed_callbacks_name_the_field(
    driver: ExolveDriver, body: bytes, field: str
) -> None:
    with pytest.raises(InputError) as err:
        driver.parse_receipts(body, {})
    assert str(err.value).startswith(f"{field}: ")


async def test_an_inbound_message_needs_its_sender(driver: ExolveDriver) -> None:
    with pytest.raises(InputError) as err:
        driver.parse_inbound(b'{"text": "STOP"}', {})
    assert str(err.value).startswith("body.sender: ")
