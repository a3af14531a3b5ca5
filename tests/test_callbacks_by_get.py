"""Gateways that call back with ``GET`` (Vonage's default webhook method): the query
string, but ``secret``, is the receipt or the reply, parsed by the gateway's driver as the
form body of a ``POST`` would be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.api import create_app
from engine.runner import Herald
from engine.service import MailingService
from engine.testing import write_config
from tests.test_pipeline import add_profiles

pytestmark = pytest.mark.anyio

SECRET = "vonage-callbacks-0123456789"
PHONE = "+447911000001"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Herald]]:
    config = write_config(tmp_path, driver="vonage")
    text = config.read_text(encoding="utf-8").replace(
        'driver = "vonage"\n',
        f'driver = "vonage"\napi_key = "key1"\napi_secret = "s3cret"\n'
        f'receipt_secret = "{SECRET}"\n')
    config.write_text(text, encoding="utf-8")
    async with await Herald.open(config) as herald, \
            MailingService.running(herald) as service:
        transport = httpx.ASGITransport(create_app(herald, service))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield client, herald


async def test_a_receipt_by_get_is_a_receipt(site: tuple[httpx.AsyncClient, Herald]) -> None:
    client, _ = site
    params: dict[str, Any] = {"secret": SECRET, "messageId": "0A0000001234", "status":
                              "delivered", "msisdn": PHONE[1:], "to": "ACME", "err-code": "0"}
    r = await client.get("/api/v1/dlr/gw", params=params)
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 0, "pending": 1, "ignored": 0}  # kept for its message
    # as POST, the secret is checked first, and a body its driver cannot read is a 400
    r = await client.get("/api/v1/dlr/gw", params={**params, "secret": "wrong"})
    assert r.status_code == 401
    r = await client.get("/api/v1/dlr/gw", params={"secret": SECRET, "status": "delivered"})
    assert r.status_code == 400 and "messageId" in r.text


async def test_a_stop_by_get_unsubscribes(site: tuple[httpx.AsyncClient, Herald]) -> None:
    client, herald = site
    ids = await add_profiles(herald, [PHONE])
    r = await client.get("/api/v1/inbound/gw", params={
        "secret": SECRET, "msisdn": PHONE[1:], "to": "ACME", "text": "STOP",
        "messageId": "0B00000001", "type": "text"})
    assert r.status_code == 200, r.text
    assert r.json()["unsubscribed"] == 1
    row = herald.store.conn.execute(  # type: ignore[attr-defined]
        "SELECT status FROM subscriptions WHERE profile_id = ?", (ids[0],)).fetchone()
    assert row[0] == "unsubscribed"
