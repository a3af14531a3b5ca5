"""STOP replies: the herald-json inbound body, the stop-word match, and the route
``POST /api/v1/inbound/{gateway}`` with its rule (a STOP to a gateway unsubscribes the
phone from the resources that send through that gateway, and from no other)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.api import TokenStore, create_app
from engine.drivers import Driver, Inbound
from engine.errors import InputError
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.service import MailingService
from engine.testing import FakeGateway, write_config
from engine.tracking.inbound import is_stop, stop_words
from herald_http.wire import parse_inbound
from tests.test_tracking_routes import Site, herald_serve, serve_broadcast

pytestmark = pytest.mark.anyio

SECRET = "inbound-secret-0123456789"
PHONES = ["+447911000001", "+447911000002"]

#: A second gateway, with its own sender and resource; ``news`` sends through ``gw`` only.
SECOND_GATEWAY = """
[gateways.gw2]
driver = "fake"

[senders.s2]
gateway = "gw2"
caller_id = "ALERTS"

[virtual_senders.v2]
rules = [{ senders = [{ sender = "s2", percent = 100 }] }]

[resources.alerts]
virtual_sender = "v2"

[gateways.files]
driver = "file"
path = "sent.jsonl"
"""


# -- the body and the match ---------------------------------------------------------------


def test_herald_json_inbound_messages() -> None:
    body = (b'{"inbound": [{"from": "+447911000001", "text": "STOP", "to": "ACME",'
            b' "at": 1760000000}, {"from": "07911 000002", "text": "thanks", "id": "m-9"}]}')
    assert parse_inbound(body) == [
        Inbound("+447911000001", "STOP", "ACME", 1_760_000_000.0),
        Inbound("07911 000002", "thanks"),
    ]
    assert parse_inbound(b'{"inbound": []}') == []


@pytest.mark.parametrize(("body", "error"), [
    (b"", "inbound messages: the body is empty"),
    (b'{"inbound": [{"text": "STOP"}]}',
     "malformed inbound messages: $.inbound[0].from: required field missing"),
    (b'{"inbound": [{"from": 7, "text": "STOP"}]}',
     "malformed inbound messages: $.inbound[0].from: Expected `str`, got `int`"),
    (b'{"messages": []}', "malformed inbound messages: $.inbound: required field missing"),
    (b'{"inbound": [', "inbound messages are not JSON: Input data was truncated"),
])
def test_a_malformed_body_names_what_is_wrong(body: bytes, error: str) -> None:
    with pytest.raises(InputError) as err:
        parse_inbound(body)
    assert str(err.value) == error


@pytest.mark.parametrize(("text", "stop"), [
    ("STOP", True), ("stop", True), ("  Stop\n", True), ("СТОП", True), ("стоп", True),
    ("Unsubscribe", True), ("отписка", True), ("ОТПИСКА ", True),
    ("STOP!", False), ("stop please", False), ("please stop", False), ("", False),
    ("S T O P", False), ("STOPP", False),
])
def test_a_stop_is_a_stop_word_alone_whatever_its_case(text: str, stop: bool) -> None:
    words = stop_words(["STOP", "СТОП", "UNSUBSCRIBE", "ОТПИСКА"])
    assert is_stop(text, words) is stop


def test_the_stop_words_are_configurable() -> None:
    words = stop_words(["  Halt ", "ΤΕΛΟΣ"])
    assert is_stop("halt", words) and is_stop("τέλος".replace("έ", "ε"), words)
    assert not is_stop("STOP", words)


# -- the route ----------------------------------------------------------------------------


class InboundGateway(FakeGateway):
    """The fake gateway, its driver also parsing herald-json inbound messages."""

    def driver_class(self) -> type[Driver]:
        base = super().driver_class()

        class WithInbound(base):  # type: ignore[valid-type,misc]
            def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
                return parse_inbound(body)

        return WithInbound


@pytest.fixture
async def site(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
               any_store: str) -> AsyncIterator[Site]:
    for gateway in ("GW", "GW2", "FILES"):
        monkeypatch.setenv(f"HERALD_DLR_SECRET_{gateway}", SECRET)
    gateway = InboundGateway()
    config = write_config(tmp_path, extra=SECOND_GATEWAY, default_region="GB")
    async with await Herald.open(config, plugins=load_plugins(gateway.plugin())) as herald, \
            MailingService.running(herald) as service:
        admin = (await TokenStore(herald.store).create("admin"))[1]
        app = create_app(herald, service)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield Site(client, herald, gateway, app, admin)


def inbound(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"inbound": list(messages)}


async def post(site: Site, body: Any, gateway: str = "gw", *,
               secret: str | None = SECRET, **kw: Any) -> httpx.Response:
    headers = {"X-Herald-Secret": secret} if secret is not None else {}
    return await site.client.post(f"/api/v1/inbound/{gateway}", json=body, headers=headers,
                                  **kw)


async def test_a_stop_unsubscribes_the_phone_from_the_gateways_resources_only(
    site: Site,
) -> None:
    await site.import_phones(PHONES)
    await site.import_phones(PHONES, resource="alerts")
    sent = await site.broadcast()
    assert sorted(sent.values()) == PHONES
    r = await post(site, inbound({"from": "07911 000001", "text": " Stop ", "at": 1.76e9},
                                 {"from": "+447911000002", "text": "thanks!"}))
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 2, "stops": 1, "unsubscribed": 1, "ignored": 1}
    assert await site.statuses(PHONES[0]) == ["unsubscribed"]
    assert await site.statuses(PHONES[1]) == ["subscribed"]
    assert await site.statuses(PHONES[0], "alerts") == ["subscribed"]  # sent through gw2
    [event] = await site.events("unsub_sms")
    assert (event.phone, event.at) == (PHONES[0], 1.76e9)
    again = await site.broadcast()
    assert list(again.values()) == [PHONES[1]]

    # a STOP to gw2 reaches alerts; a second STOP changes nothing more
    r = await post(site, inbound({"from": PHONES[0], "text": "СТОП"}), "gw2")
    assert r.json() == {"received": 1, "stops": 1, "unsubscribed": 1, "ignored": 0}
    assert await site.statuses(PHONES[0], "alerts") == ["unsubscribed"]
    r = await post(site, inbound({"from": PHONES[0], "text": "stop"}))
    assert r.json() == {"received": 1, "stops": 1, "unsubscribed": 0, "ignored": 0}


async def test_a_stop_reaches_every_profile_with_the_phone(site: Site) -> None:
    await site.import_phones(PHONES[:1])
    r = await site.client.post("/api/v1/profiles/import", headers=site.auth(), json={
        "database": "other", "matching": "phone", "resource": "news",
        "profiles": [{"phone": PHONES[0]}]})
    assert r.status_code == 200, r.text
    assert await site.statuses(PHONES[0]) == ["subscribed", "subscribed"]
    r = await post(site, inbound({"from": PHONES[0], "text": "UNSUBSCRIBE"}))
    assert r.json()["unsubscribed"] == 2
    assert await site.statuses(PHONES[0]) == ["unsubscribed", "unsubscribed"]


async def test_other_replies_and_senders_that_are_no_phone_change_nothing(site: Site) -> None:
    await site.import_phones(PHONES)
    r = await post(site, inbound({"from": PHONES[0], "text": "STOP it"},
                                 {"from": "ACME", "text": "STOP"},
                                 {"from": PHONES[1], "text": ""}))
    assert r.json() == {"received": 3, "stops": 0, "unsubscribed": 0, "ignored": 3}
    assert [await site.statuses(p) for p in PHONES] == [["subscribed"], ["subscribed"]]
    assert await site.events("unsub_sms") == []


async def test_the_route_is_authenticated_like_receipts(site: Site) -> None:
    await site.import_phones(PHONES[:1])
    body = inbound({"from": PHONES[0], "text": "STOP"})
    refused = [
        (await post(site, body, secret=None), 401, None),
        (await post(site, body, secret="wrong-secret-0000000000"), 401, None),
        (await post(site, body, secret="x" * 2000), 400, "header_secret"),
        (await post(site, body, "nope"), 404, "gateway"),
        (await post(site, body, "files"), 400, "gateway"),  # its driver takes no replies
        (await post(site, {"inbound": [{"text": "STOP"}]}), 400, "body"),
        (await site.client.post("/api/v1/inbound/gw", content=b"[", headers={
            "X-Herald-Secret": SECRET}), 400, "body"),
    ]
    for r, status, field in refused:
        assert (r.status_code, r.json().get("field")) == (status, field), r.json()
    assert "$.inbound[0].from" in refused[5][0].json()["error"]
    assert await site.statuses(PHONES[0]) == ["subscribed"]
    r = await site.client.post(f"/api/v1/inbound/gw?secret={SECRET}", json=body)
    assert r.json()["unsubscribed"] == 1


async def test_a_gateway_without_a_secret_takes_no_replies(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HERALD_DLR_SECRET_GW")
    r = await post(site, inbound({"from": PHONES[0], "text": "STOP"}))
    assert (r.status_code, r.json()["field"]) == (403, "gateway")


# -- from the simulator to `herald serve` --------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_simulator_posts_a_stop_reply_that_herald_serve_applies(
    tmp_path: Path, any_store: str
) -> None:
    async with herald_serve(tmp_path) as (client, simulator, _, _):
        await serve_broadcast(client, PHONES)
        assert await simulator.send_inbound(PHONES[0], "STOP", to="ACME") == 200
        assert await simulator.send_inbound(PHONES[1], "ok, thanks") == 200
        # and as `herald simulate` takes them: POST /inbound to the simulator
        async with httpx.AsyncClient(trust_env=False) as raw:
            r = await raw.post(f"{simulator.url}/inbound", json=inbound(
                {"from": PHONES[1], "text": "Отписка"}))
        assert r.json() == {"status": 200}
        stats = simulator.statistics()
        assert (stats.inbound_sent, stats.inbound_failed) == (3, 0)
        r = await client.get("/api/v1/resources/news/subscriptions",
                             params={"phone": PHONES[0]})
        assert [s["status"] for s in r.json()["subscriptions"]] == ["unsubscribed"]
        r = await client.get("/api/v1/resources/news/subscriptions",
                             params={"phone": PHONES[1]})
        assert [s["status"] for s in r.json()["subscriptions"]] == ["unsubscribed"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_reply_refused_by_herald_is_counted_as_failed(tmp_path: Path) -> None:
    async with herald_serve(tmp_path) as (_, simulator, _, _):
        simulator.configure(inbound_url=simulator.options.inbound_url.replace(  # type: ignore[union-attr]
            "secret=", "secret=wrong"))
        assert await simulator.send_inbound(PHONES[0], "STOP") == 401
        assert simulator.statistics().inbound_failed == 1
