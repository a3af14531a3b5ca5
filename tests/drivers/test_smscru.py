"""The ``smscru`` driver against the fake of SMSC.ru's API (``tests/fakes/smscru.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import msgspec
import pytest

from engine.core.prepare import Message
from engine.core.submission import Submission
from engine.drivers import OutboundMessage, Receipt
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from herald_smscru import SmscConfig, SmscDriver, provider_id, smsc_id
from tests.fakes.http import Answer as FakeAnswer
from tests.fakes.http import json_answer
from tests.fakes.smscru import APIKEY, LOGIN, PSW, SmscFake, running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fake(anyio_backend: str) -> AsyncIterator[SmscFake]:
    async with running() as fake:
        yield fake


def make(fake: SmscFake, **options: Any) -> SmscDriver:
    return SmscDriver(msgspec.convert(fake.options(**options), SmscConfig), gateway="smsc")


@pytest.fixture
async def driver(fake: SmscFake) -> AsyncIterator[SmscDriver]:
    d = make(fake)
    yield d
    await d.aclose()


def msg(i: int = 0, to: str = "+79031234567", text: str = "hello") -> OutboundMessage:
    return OutboundMessage(f"run-{i}", to, "ACME", text)


async def test_the_request_is_the_documented_form_with_utf8_text(
    fake: SmscFake, driver: SmscDriver
) -> None:
    text = "Привет, Анна! Скидка 10% 👋"
    [result] = await driver.send_batch([msg(text=text)])
    [request] = fake.requests
    assert (request.method, request.target) == ("POST", "/sys/send.php")
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    form = {k: v for k, [v] in parse_qs(request.body.decode("ascii")).items()}
    assert form == {"login": LOGIN, "psw": PSW, "phones": "+79031234567", "mes": text,
                    "sender": "ACME", "id": str(smsc_id("run-0")), "fmt": "3",
                    "charset": "utf-8"}
    # UTF-8, percent-encoded: Cyrillic and the emoji's four bytes
    assert quote("П").encode() in request.body and b"%F0%9F%91%8B" in request.body
    assert fake.sent[0].text == text
    assert result.status == "accepted"
    assert result.provider_id == provider_id(smsc_id("run-0"), "+79031234567")
    assert result.provider_id == f"{smsc_id('run-0')}-79031234567"


async def test_the_smsc_id_is_stable_and_in_range() -> None:
    ids = {smsc_id(f"run-{i}") for i in range(10_000)}
    assert all(1 <= i <= 2**31 - 1 for i in ids) and len(ids) > 9_990
    assert smsc_id("abc-1") == smsc_id("abc-1")


async def test_an_api_key_replaces_login_and_password(fake: SmscFake) -> None:
    driver = SmscDriver(msgspec.convert({"apikey": APIKEY, "base_url": fake.url}, SmscConfig))
    try:
        [result] = await driver.send_batch([msg()])
    finally:
        await driver.aclose()
    assert result.status == "accepted"
    form = parse_qs(fake.requests[0].body.decode())
    assert form["apikey"] == [APIKEY] and "login" not in form and "psw" not in form


@pytest.mark.parametrize("options", [
    {"login": "a"}, {"psw": "b"}, {}, {"apikey": "k", "login": "a", "psw": "b"},
])
async def test_the_config_wants_one_way_to_log_in(options: dict[str, str]) -> None:
    with pytest.raises(msgspec.ValidationError, match="apikey"):
        msgspec.convert(options, SmscConfig)


async def test_a_wrong_password_fails_the_batch_for_good_without_showing_it(
    fake: SmscFake
) -> None:
    driver = make(fake, psw="wrong-password-123")
    try:
        with pytest.raises(PermanentGatewayError) as err:
            await driver.send_batch([msg(0), msg(1)])
    finally:
        await driver.aclose()
    assert err.value.code == "2"
    assert "wrong-password-123" not in str(err.value)


async def test_a_refused_number_is_rejected_with_the_code_and_others_go(
    fake: SmscFake, driver: SmscDriver
) -> None:
    fake.reject("+79030000007", 7)
    batch = [msg(0), msg(1, to="+79030000007"), msg(2)]
    results = await driver.send_batch(batch)
    assert [(r.id, r.status, r.error) for r in results] == [
        ("run-0", "accepted", None), ("run-1", "rejected", "7"), ("run-2", "accepted", None)]
    assert [m.phone for m in fake.sent] == ["+79031234567", "+79031234567"]


@pytest.mark.parametrize("code", [1, 5, 6, 8])
async def test_message_errors_are_rejections(
    fake: SmscFake, driver: SmscDriver, code: int
) -> None:
    fake.answer_next(SmscFake.error(code))
    [result] = await driver.send_batch([msg()])
    assert (result.status, result.error) == ("rejected", str(code))


async def test_no_funds_fails_the_batch_for_good(fake: SmscFake, driver: SmscDriver) -> None:
    fake.answer_next(SmscFake.error(3, "no money"))
    with pytest.raises(PermanentGatewayError) as err:
        await driver.send_batch([msg()])
    assert err.value.code == "3" and "no money" in str(err.value)


async def test_a_repeat_of_a_taken_request_throttles_the_sender(
    fake: SmscFake, driver: SmscDriver
) -> None:
    [first] = await driver.send_batch([msg()])
    assert first.status == "accepted"
    sub = Submission([Message(0, "run-0", 1, "+79031234567", "ACME", "hello", 1, "gsm7")],
                     "ACME")
    try:
        await driver.send_batch(sub.next_attempt())
    except TransientGatewayError as err:
        assert err.retry_after == 60 and not err.unsent  # SMSC.ru may have it: no failover
        sub.failed(err)
    else:
        pytest.fail("a repeat should be refused")
    assert sub.throttled and sub.retry_after == 60 and not sub.done
    assert len(fake.sent) == 1


async def test_a_blocked_ip_is_throttled_and_surely_unsent(
    fake: SmscFake, driver: SmscDriver
) -> None:
    fake.answer_next(SmscFake.error(4, "IP blocked"))
    with pytest.raises(TransientGatewayError) as err:
        await driver.send_batch([msg()])
    assert err.value.retry_after == 60 and err.value.unsent


async def test_throttling_of_some_requests_comes_back_per_message(
    fake: SmscFake, driver: SmscDriver
) -> None:
    fake.answer_next(SmscFake.error(9, "too many requests"))
    results = await driver.send_batch([msg(0), msg(1), msg(2)])
    assert sorted(r.status for r in results) == ["accepted", "accepted", "retry"]
    [retry] = [r for r in results if r.status == "retry"]
    assert retry.retry_after == 60


async def test_http_429_and_500(fake: SmscFake, driver: SmscDriver) -> None:
    fake.answer_next(FakeAnswer(429, b"slow down", (("retry-after", "7"),), "text/plain"))
    with pytest.raises(TransientGatewayError) as err:
        await driver.send_batch([msg()])
    assert err.value.retry_after == 7 and err.value.unsent
    fake.answer_next(FakeAnswer(500, b"oops", content_type="text/plain"))
    with pytest.raises(TransientGatewayError) as err:
        await driver.send_batch([msg()])
    assert err.value.ambiguous is None and not err.value.unsent


async def test_a_2xx_answer_without_id_or_error_is_left_unknown(
    fake: SmscFake, driver: SmscDriver
) -> None:
    fake.answer_next(json_answer(200, {"cnt": 1}), FakeAnswer(200, b"OK - 1 SMS", (),
                                                              "text/plain"))
    assert await driver.send_batch([msg(0)]) == []
    assert await driver.send_batch([msg(1)]) == []


async def test_capabilities(driver: SmscDriver) -> None:
    caps = driver.capabilities
    assert (caps.max_batch, caps.supports_dlr, caps.idempotent) == (8, True, False)


# -- receipts ------------------------------------------------------------------------------
# SMSC.ru posts one status per form-encoded POST to the handler address of the account's
# settings: id, phone, status, err and the time (https://smscentre.com/api/http/
# miscellaneous/callback/); the status codes are those of
# https://smsc.ru/api/http/status_messages/ (1 delivered, 3 expired, 20 undeliverable,
# 22 invalid number, 23 prohibited, 24 no funds, 25 unavailable, -1 queued, 0 sent to
# operator). The values below are made up in that shape.

FORM = {"content-type": "application/x-www-form-urlencoded"}


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def parse(driver: SmscDriver, **fields: str) -> list[Receipt]:
    return driver.parse_receipts(form(**fields), FORM)


async def test_a_delivered_status_matches_what_sending_returned(
    fake: SmscFake, driver: SmscDriver
) -> None:
    [sent] = await driver.send_batch([msg()])
    [receipt] = parse(driver, id=str(smsc_id("run-0")), phone="79031234567", status="1",
                      err="0", ts="1760000000")
    assert receipt.provider_id == sent.provider_id
    assert (receipt.status, receipt.error, receipt.at) == ("delivered", None, 1760000000.0)


@pytest.mark.parametrize(("status", "err", "error"), [
    ("3", "0", "3 expired"),
    ("20", "1", "20 undeliverable (err 1)"),
    ("22", "0", "22 invalid number"),
    ("23", "0", "23 prohibited"),
    ("24", "0", "24 no funds"),
    ("25", "0", "25 unavailable number"),
])
async def test_final_failures_are_undelivered_with_the_reason(
    driver: SmscDriver, status: str, err: str, error: str
) -> None:
    [receipt] = parse(driver, id="77", phone="+7 903 123-45-67", status=status, err=err)
    assert (receipt.provider_id, receipt.status, receipt.error) == (
        "77-79031234567", "undelivered", error)


@pytest.mark.parametrize("status", ["-3", "-1", "0"])
async def test_states_that_are_not_final_are_dropped(driver: SmscDriver, status: str) -> None:
    assert parse(driver, id="77", phone="79031234567", status=status) == []


async def test_a_time_in_smscs_format_is_moscow_time(driver: SmscDriver) -> None:
    [receipt] = parse(driver, id="1", phone="79031234567", status="1",
                      time="10.10.2025 15:00:00")
    assert receipt.at == 1760097600.0  # 12:00 UTC


async def test_a_json_callback_is_read_too(driver: SmscDriver) -> None:
    body = b'{"id": 5, "phone": "79031234567", "status": 22, "err": 0}'
    [receipt] = driver.parse_receipts(body, {"content-type": "application/json"})
    assert (receipt.provider_id, receipt.status) == ("5-79031234567", "undelivered")


@pytest.mark.parametrize(("body", "field"), [
    (form(phone="79031234567", status="1"), "body.id"),
    (form(id="1", status="1"), "body.phone"),
    (form(id="1", phone="79031234567", status="delivered"), "body.status"),
    (form(id="1", phone="79031234567"), "body.status"),
    (b"\x00 not a receipt", "body"),
    (b"", "body"),
    (b'{"id": ', "body"),
])
async def test_malformed_callbacks_name_the_field(
    driver: SmscDriver, body: bytes, field: str
) -> None:
    with pytest.raises(InputError, match=rf"^{field}[:.]"):
        driver.parse_receipts(body, FORM)


# -- inbound -------------------------------------------------------------------------------

async def test_an_incoming_stop_in_windows_1251_is_read(driver: SmscDriver) -> None:
    body = urlencode({"phone": "79031234567", "mes": "СТОП", "to": "79001112233",
                      "time": "1760000000"}, encoding="cp1251").encode()
    [reply] = driver.parse_inbound(body, FORM)
    assert (reply.phone, reply.text, reply.to, reply.at) == (
        "79031234567", "СТОП", "79001112233", 1760000000.0)
    assert driver.parse_receipts(body, FORM) == []  # the same address carries both


async def test_a_status_posted_to_the_inbound_route_gives_no_messages(
    driver: SmscDriver
) -> None:
    assert driver.parse_inbound(form(id="1", phone="79031234567", status="1"), FORM) == []
    with pytest.raises(InputError, match=r"^body\.phone"):
        driver.parse_inbound(form(mes="STOP"), FORM)
