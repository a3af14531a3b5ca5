"""The Altcraft-compatible API (``/api/v1.1``) in-process, on asyncio and trio, against a
real MailingService and a fake gateway: called with Altcraft's field names, it imports
profiles with their subscriptions, starts triggers and reads the log; failures come in
Altcraft's envelope with HTTP 200."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from engine.api import TokenStore, create_app
from engine.api.altcraft.log import log_rows
from engine.mailing_log import MailingLog
from engine.runner import Herald
from engine.service import MailingService
from engine.store.base import ORIGIN
from engine.store.models import Run
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

OK = {"error": 0, "error_text": "Successful operation"}
PHONES = ["+79161234501", "+79161234502", "+79161234503"]


@dataclass
class Api:
    client: httpx.AsyncClient
    herald: Herald
    service: MailingService
    gateway: FakeGateway
    sender: str
    viewer: str

    async def call(self, method: str, body: dict[str, Any], role: str | None = "sender",
                   **kw: Any) -> dict[str, Any]:
        """An Altcraft call, the token in the body; its envelope (always HTTP 200)."""
        if role is not None:
            body = {"token": getattr(self, role), **body}
        r = await self.client.post(f"/api/v1.1/{method}", json=body, **kw)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    async def v1(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.post(url, json=body,
                                   headers={"Authorization": f"Bearer {self.sender}"})
        assert r.status_code < 300, r.text
        answer: dict[str, Any] = r.json()
        return answer

    async def trigger_mailing(self, template: str = "Hi {lead._fname}") -> int:
        await self.herald.store.database_id("main", create=True)
        made = await self.v1("/api/v1/mailings", {
            "name": "t", "kind": "trigger", "resource": "news", "database": "main",
            "template": template})
        return int(made["id"])

    async def db_id(self) -> int:
        return await self.herald.store.database_id("main")

    async def resource_id(self) -> int:
        return await self.herald.store.resource_id("news")

    async def sent(self, count: int) -> None:
        with anyio.fail_after(20):
            while True:
                if len(self.gateway.texts) >= count:
                    return
                await anyio.sleep(0.01)


@pytest.fixture
async def api(open_herald: Callable[..., Any]) -> AsyncIterator[Api]:
    gateway = FakeGateway()
    # [databases.main] declares a field type
    extra = '\n[databases.main]\nfields = { tier = "int" }\n'
    async with await open_herald(gateway, default_region="RU", extra=extra) as herald, \
            MailingService.running(herald) as service:
        tokens = TokenStore(herald.store)
        secrets = {role: (await tokens.create(role))[1] for role in ("sender", "viewer")}
        transport = httpx.ASGITransport(create_app(herald, service))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield Api(client, herald, service, gateway, **secrets)


async def _seed(api: Api) -> list[int]:
    """Three profiles of ``main`` subscribed to ``news``, by Altcraft's import_batch."""
    rid = await api.resource_id()
    answer = await api.call("profiles/import_batch", {
        "db_id": "main", "matching": "phone", "data": [
            {"phone": p, "_fname": f"P{i}", "email": f"p{i}@example.com", "crm": f"c{i}",
             "subscriptions": [{"resource_id": rid, "channel": "sms", "status":
                                "subscribed", "priority": 0}]}
            for i, p in enumerate(PHONES)]})
    assert answer["error"] == 0, answer
    return [item["profile_id"] for item in answer["result"]]


# -- triggers -----------------------------------------------------------------------------


async def test_start_sends_through_the_gateway_and_answers_the_message_id(api: Api) -> None:
    ids = await _seed(api)
    mid = await api.trigger_mailing("Code {apicontent.code} for {lead._fname}")
    answer = await api.call("campaigns/triggers/start", {
        "id": mid, "matching": "email", "email": "P1@example.com",
        "content": {"code": "4711"}, "resource_id": await api.resource_id()})
    assert {k: answer[k] for k in OK} == OK, answer
    data = answer["data"]
    assert data["profile_id"] == ids[1] and data["duplicate"] is False
    await api.sent(1)
    sent = api.gateway.texts[data["message_id"]]
    assert (sent.to, sent.text) == (PHONES[1], "Code 4711 for P1")


async def test_every_matching_finds_its_profile(api: Api) -> None:
    ids = await _seed(api)
    mid = await api.trigger_mailing()
    cases = [
        ({"email": "p0@example.com"}, ids[0]),  # matching defaults to email
        ({"matching": "phone", "phone": "8 916 123-45-02"}, ids[1]),
        ({"matching": "profile_id", "profile_id": str(ids[2])}, ids[2]),
        ({"matching": "custom", "field_name": "crm", "field_value": "c1"}, ids[1]),
    ]
    for fields, pid in cases:
        answer = await api.call("campaigns/triggers/start", {"id": mid, **fields})
        assert answer["error"] == 0 and answer["data"]["profile_id"] == pid, (fields, answer)
    await api.sent(4)
    assert sorted(s.to for s in api.gateway.texts.values()) == sorted(
        [PHONES[0], PHONES[1], PHONES[2], PHONES[1]])


async def test_the_bearer_header_and_idempotency_key(api: Api) -> None:
    await _seed(api)
    mid = await api.trigger_mailing()
    auth = {"Authorization": f"Bearer {api.sender}"}
    first = await api.call("campaigns/triggers/start", {
        "id": mid, "matching": "phone", "phone": PHONES[0], "idempotency_key": "order-1"},
        role=None, headers=auth)
    again = await api.call("campaigns/triggers/start", {
        "id": mid, "matching": "phone", "phone": PHONES[0]},
        headers={"Idempotency-Key": "order-1"})
    assert first["error"] == 0 and again["data"] == {**first["data"], "duplicate": True}
    await api.sent(1)
    await anyio.sleep(0.05)
    assert len(api.gateway.texts) == 1


async def test_custom_data_is_kept_for_the_hooks(api: Api) -> None:
    await _seed(api)
    mid = await api.trigger_mailing()
    answer = await api.call("campaigns/triggers/start", {
        "id": mid, "email": "p2@example.com", "custom_data": {"order": 42}})
    message_id = answer["data"]["message_id"]
    await api.sent(1)
    with anyio.fail_after(10):
        while True:
            events = await api.herald.store.hook_events(ORIGIN, 1000)
            mine = [e for e in events if e.message_id == message_id]
            if mine:
                break
            await anyio.sleep(0.01)
    assert all(msgspec.json.decode(e.custom_data or b"null") == {"order": 42} for e in mine)


async def test_start_batch_answers_profile_ids_in_order(api: Api) -> None:
    ids = await _seed(api)
    mid = await api.trigger_mailing("{apicontent.greeting} {lead._fname}")
    answer = await api.call("campaigns/triggers/start_batch", {
        "trigger_id": mid, "matching": "email", "content": {"greeting": "Hello"},
        "data": [{"email": "p2@example.com"}, {"email": "nobody@example.com"},
                 {"email": "p0@example.com", "content": {"greeting": "Hi"}}, {"phone": "1"}]})
    assert answer["error"] == 0, answer
    assert answer["result"] == [ids[2], None, ids[0], None]
    items = answer["items"]
    assert [i["error"] for i in items] == [0, 404, 0, 400]
    assert items[1]["error_text"].startswith("data[1].email:")
    assert items[3]["error_text"].startswith("data[3].email:")
    await api.sent(2)
    texts = {m.to: m.text for m in api.gateway.texts.values()}
    assert texts == {PHONES[2]: "Hello P2", PHONES[0]: "Hi P0"}
    assert {items[0]["message_id"], items[2]["message_id"]} == set(api.gateway.texts)


async def test_resource_id_and_subscription_filter(api: Api) -> None:
    await _seed(api)
    mid = await api.trigger_mailing()
    wrong = await api.call("campaigns/triggers/start", {
        "id": mid, "email": "p0@example.com", "resource_id": 999})
    assert wrong["error"] == 404 and wrong["error_text"].startswith("resource_id:")
    other = await api.call("campaigns/triggers/start", {
        "id": mid, "email": "p0@example.com", "subscription_filter": {"phone": PHONES[1]}})
    assert other["error"] == 404 and other["error_text"].startswith("subscription_filter")
    lenient = await api.call("campaigns/triggers/start", {
        "id": mid, "email": "p0@example.com",
        "subscription_filter": {"phone": PHONES[1], "not_strict": True}})
    matching = await api.call("campaigns/triggers/start", {
        "id": mid, "email": "p1@example.com",
        "subscription_filter": {"phone": PHONES[1], "email": "ignored"}})
    assert lenient["error"] == 0 and matching["error"] == 0
    await api.sent(2)
    assert sorted(m.to for m in api.gateway.texts.values()) == [PHONES[0], PHONES[1]]


# -- profiles -----------------------------------------------------------------------------


async def test_import_adds_then_updates_with_subscriptions(api: Api) -> None:
    rid, db = await api.resource_id(), await _make_db(api)
    added = await api.call("profiles/import", {
        "db_id": db, "matching": "email", "email": "Ann@Example.com",
        "data": {"_fname": "Ann", "phone": "+79161234509", "tier": "3",
                 "subscriptions": [{"resource_id": rid, "channel": "sms",
                                    "status": "subscribed", "priority": 1}]},
        "skip_triggers": True})
    assert {k: added[k] for k in OK} == OK and added["profile_id"] > 0, added
    pid = added["profile_id"]
    subs = await api.herald.store.find_subscriptions(rid, profile_id=pid)
    assert [(s.phone, s.status) for s in subs] == [("+79161234509", "subscribed")]
    updated = await api.call("profiles/import", {
        "db_id": "main", "matching": "email", "data": {
            "email": "ann@example.com", "_city": "Omsk",
            "subscriptions": [{"resource_id": "news", "status": "unsubscribed"}]}})
    assert updated["profile_id"] == pid, updated
    subs = await api.herald.store.find_subscriptions(rid, profile_id=pid)
    assert [s.status for s in subs] == ["unsubscribed"]
    # the custom field's declared type applies; the profile keeps both updates
    mid = await api.trigger_mailing("{lead._fname} {lead._city} {lead.tier}")
    await api.call("profiles/import", {"db_id": "main", "email": "ann@example.com", "data": {
        "subscriptions": [{"resource_id": rid, "phone": "+79161234509"}]}})
    answer = await api.call("campaigns/triggers/start", {"id": mid, "email": "ann@example.com"})
    await api.sent(1)
    assert api.gateway.texts[answer["data"]["message_id"]].text == "Ann Omsk 3"


async def _make_db(api: Api) -> int:
    """``main``'s numeric id (the database is created by a first import by name)."""
    await api.call("profiles/import", {"db_id": "main", "matching": "phone",
                                       "data": {"phone": "+79161234599"}})
    return await api.db_id()


async def test_db_id_is_any_database_by_its_number(api: Api) -> None:
    """A database the config does not name is found by its number too."""
    await api.call("profiles/import", {"db_id": "other", "matching": "phone",
                                       "data": {"phone": "+79161234598"}})
    other = await api.herald.store.database_id("other")
    answer = await api.call("profiles/import", {"db_id": other, "matching": "phone",
                                                "data": {"phone": "+79161234597"}})
    assert answer["error"] == 0, answer
    assert await api.herald.store.profile_ids_in(other, [answer["profile_id"]]) == {
        answer["profile_id"]}


async def test_import_batch_answers_each_profile(api: Api) -> None:
    db = await _make_db(api)
    rid = await api.resource_id()
    answer = await api.call("profiles/import_batch", {"db_id": db, "matching": "phone", "data": [
        {"phone": "+79161234511", "subscriptions": [{"resource_id": rid}]},
        {"phone": "not a phone"},
        {"phone": "+79161234512", "data": {"_fname": "Wrapped"}},
        {"phone": "+79161234513", "subscriptions": [{"resource_id": rid, "channel": "email"}]},
        {"phone": "+79161234511", "_fname": "Again"},
    ]})
    assert answer["error"] == 0, answer
    result = answer["result"]
    assert [r["error"] for r in result] == [0, 400, 0, 400, 0]
    assert result[1]["error_text"].startswith("data[1].phone:")
    assert result[3]["error_text"].startswith("data[3].subscriptions[0].channel:")
    assert result[0]["profile_id"] == result[4]["profile_id"]
    assert result[1]["profile_id"] is None and result[2]["profile_id"] > 0
    subs = await api.herald.store.find_subscriptions(rid, profile_id=result[0]["profile_id"])
    assert [s.phone for s in subs] == ["+79161234511"]
    events = [e for e in await api.herald.store.hook_events(ORIGIN, 1000)
              if e.kind == "import_api"]
    data = msgspec.json.decode(events[-1].data or b"{}")
    assert (data["db_id"], data["added"], data["updated"], data["errors"]) == (db, 2, 1, 2)


async def test_import_matching_custom_and_profile_id(api: Api) -> None:
    first = await api.call("profiles/import_batch", {
        "db_id": "main", "matching": "custom", "field_name": "crm",
        "data": [{"crm": "A-1", "phone": "+79161234521"}, {"field_value": "A-2", "data": {}},
                 {"crm": "A-1", "_fname": "Same"}]})
    result = first["result"]
    assert [r["error"] for r in result] == [0, 0, 0], first
    assert result[0]["profile_id"] == result[2]["profile_id"] != result[1]["profile_id"]
    pid = result[1]["profile_id"]
    again = await api.call("profiles/import", {
        "db_id": "main", "matching": "profile_id", "profile_id": str(pid),
        "data": {"phone": "+79161234522", "subscriptions": [{"resource_id": "news"}]}})
    assert again == {**OK, "profile_id": pid}
    by_crm = await api.call("profiles/import", {
        "db_id": "main", "matching": "custom", "field_name": "crm", "field_value": "A-2",
        "data": {"_fname": "Two"}})
    assert by_crm["profile_id"] == pid
    mid = await api.trigger_mailing()
    sent = await api.call("campaigns/triggers/start", {
        "id": mid, "matching": "custom", "field_name": "crm", "field_value": "A-2"})
    await api.sent(1)
    message = api.gateway.texts[sent["data"]["message_id"]]
    assert (message.to, message.text) == ("+79161234522", "Hi Two")


async def test_import_refusals_name_the_field(api: Api) -> None:
    await _make_db(api)
    cases = [
        ({"matching": "phone", "data": {"phone": "+79161234501"}}, 400, "db_id:"),
        ({"db_id": 999, "data": {}}, 404, "db_id:"),
        ({"db_id": "main", "data": {"_fname": "x"}}, 400, "data.email:"),
        ({"db_id": "main", "data": {"email": "nope"}}, 400, "data.email:"),
        ({"db_id": "main", "matching": "emial", "data": {}}, 400, "matching:"),
        ({"db_id": "main", "email": "a@b.cc", "data": {"subscriptions": [
            {"resource_id": "nope"}]}}, 404, "data.subscriptions[0].resource_id:"),
        ({"db_id": "main", "email": "a@b.cc", "data": {}, "extra": 1}, 400, "extra:"),
    ]
    for body, error, field in cases:
        answer = await api.call("profiles/import", body)
        assert (answer["error"], answer["error_text"][:len(field)]) == (error, field), answer
    big = await api.call("profiles/import_batch", {"db_id": "main", "data": [{}] * 10_001})
    assert big["error"] == 400 and big["error_text"].startswith("data:")
    wide = {f"f{i}": i for i in range(api.herald.config.limits.profile_fields + 1)}
    for method, data in (("profiles/import", wide), ("profiles/import_batch", [{}, wide])):
        answer = await api.call(method, {"db_id": "main", "matching": "phone", "data": data})
        assert answer["error"] == 422 and "profile_fields" in answer["error_text"], answer
    for depth, where in ((100, "data:"), (5000, "body:")):  # past json_depth; past msgspec's
        deep = await api.client.post("/api/v1.1/profiles/import", content=(
            b'{"db_id": "main", "data": {"a": ' + b"[" * depth + b"]" * depth + b"}}"),
            headers={"Authorization": f"Bearer {api.sender}"})
        assert (deep.json()["error"], deep.json()["error_text"][:5]) == (400, where)


# -- the log --------------------------------------------------------------------------------


async def test_log_v2_rows_from_the_mailing_log(api: Api) -> None:
    await _seed(api)
    mid = await api.trigger_mailing()
    await api.call("campaigns/triggers/start", {"id": mid, "email": "p0@example.com"})
    await api.sent(1)
    with anyio.fail_after(10):
        while True:
            answer = await api.call("campaigns/log_v2", {"id": mid}, role="viewer")
            assert answer["error"] == 0, answer
            rows = {r["message"]: r for r in answer["data"]}
            if rows.get("Sent", {}).get("value") == 1:
                break
            await anyio.sleep(0.02)
    assert rows["Mailing started"]["state"] == "started"
    assert rows["Sent"]["state"] == "running" and rows["Sent"]["level"] == "info"
    assert answer["total_count"] == len(answer["data"])
    one = await api.call("campaigns/log_v2", {"id": mid, "limit": 1}, role="viewer")
    assert len(one["data"]) == 1 and one["total_count"] == answer["total_count"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    none = await api.call("campaigns/log_v2", {"id": mid, "from_time": later}, role="viewer")
    assert none["data"] == [] and none["total_count"] == 0
    missing = await api.call("campaigns/log_v2", {"id": 404}, role="viewer")
    assert missing["error"] == 404 and "data" not in missing


def test_log_rows_of_a_finished_run() -> None:
    run = Run(id=7, uid="r7", mailing_id=1, status="failed", started_at=1000.0,
              finished_at=1060.0)
    log = msgspec.convert({
        "run_id": 7, "mailing_id": 1, "mailing_name": "m", "status": "failed",
        "mailing_started": "", "limit": None, "audience_source": "list", "database_id": 1,
        "segment_id": None, "cursor_ms": None, "subscribers_received": 10,
        "subscribers_found": 10, "duplicate_phones": 0, "recipients": 9,
        "mailing_finished": None, "total_time_s": 60.0, "suppressed": 0,
        "invalid_phones": 1, "empty": 0, "too_long": 0, "policy": 0, "control": 0,
        "other_share": 0, "sent": 8, "delivered": 0, "undelivered": 0, "failed": 1,
        "failed_reasons": {}, "unknown": 0, "unknown_reasons": {}, "cancelled": 0,
        "pending": 0, "messages_per_s": None, "stage_busy_s": {}, "error": "gateway down",
    }, MailingLog)
    rows = log_rows([(run, log)], now=5000.0)
    assert [(r.message, r.level, r.value) for r in rows] == [
        ("Mailing started", "info", 7), ("Subscribers received", "info", 10),
        ("Subscribers found", "info", 10), ("Invalid phones", "warning", 1),
        ("Recipients", "info", 9), ("Sent", "info", 8), ("Failed", "warning", 1),
        ("Error", "error", "gateway down"), ("Mailing finished", "error", 60.0)]
    assert rows[0].time == "1970-01-01T00:16:40.000+00:00" and rows[1].state == "failed"
    later = log_rows([(run, log)], now=5000.0, since=1001.0)
    assert later[0].message == "Subscribers received" and len(later) == len(rows) - 1


# -- tokens and bodies --------------------------------------------------------------------


async def test_tokens_and_roles_in_the_envelope(api: Api) -> None:
    mid = await api.trigger_mailing()
    body = {"id": mid, "email": "p0@example.com"}
    missing = await api.call("campaigns/triggers/start", body, role=None)
    assert missing["error"] == 401 and "data" not in missing
    wrong = await api.call("campaigns/triggers/start", {**body, "token": "hrld_nope"},
                           role=None)
    assert wrong["error"] == 401
    viewer = await api.call("campaigns/triggers/start", body, role="viewer")
    assert viewer["error"] == 403 and "sender" in viewer["error_text"]
    header = await api.call("profiles/import", {"db_id": "main", "data": {}}, role=None,
                            headers={"Authorization": f"Bearer {api.viewer}"})
    assert header["error"] == 403
    state = api.client._transport.app.state.api  # type: ignore[attr-defined]
    assert state.auth_failures.total == 1  # the unknown token, not the missing one


METHODS = {"campaigns/triggers/start": "sender", "campaigns/triggers/start_batch": "sender",
           "profiles/import": "sender", "profiles/import_batch": "sender",
           "campaigns/log_v2": "viewer"}


async def test_every_route_needs_its_role(api: Api) -> None:
    for method, role in METHODS.items():
        assert (await api.call(method, {}, role=None))["error"] == 401, method
        by_viewer = await api.call(method, {"id": 404}, role="viewer")
        assert by_viewer["error"] == (403 if role == "sender" else 404), (method, by_viewer)


async def test_repeated_bad_tokens_get_429(api: Api) -> None:
    state = api.client._transport.app.state.api  # type: ignore[attr-defined]
    for _ in range(state.auth_failures.per_minute):
        answer = await api.call("campaigns/log_v2", {"id": 1, "token": "hrld_guess"},
                                role=None)
        assert answer["error"] == 401
    r = await api.client.post("/api/v1.1/campaigns/log_v2", json={"id": 1, "token": api.viewer})
    assert (r.status_code, r.json()["error"]) == (200, 429)
    assert int(r.headers["retry-after"]) > 0


async def test_a_body_over_10_mb_is_refused(api: Api) -> None:
    body = b'{"db_id": "main", "data": {"x": "' + b"x" * 10_000_001 + b'"}}'
    for headers in ({"Authorization": f"Bearer {api.sender}"}, {}):
        r = await api.client.post("/api/v1.1/profiles/import", content=body, headers=headers)
        assert (r.status_code, r.json()["error"]) == (200, 413), headers


async def test_bad_bodies_name_the_field(api: Api) -> None:
    mid = await api.trigger_mailing()
    cases = [
        ("campaigns/triggers/start", {"id": "x"}, "id:"),
        ("campaigns/triggers/start", {"email": "a@b.cc"}, "id:"),
        ("campaigns/triggers/start", {"id": mid, "matching": "custom"}, "field_name:"),
        ("campaigns/triggers/start", {"id": mid, "phone": "+79161234501"}, "email:"),
        ("campaigns/triggers/start", {"id": mid, "email": "a@b.cc", "content": 1},
         "content:"),
        ("campaigns/triggers/start_batch", {"trigger_id": mid, "data": []}, "data:"),
        ("campaigns/triggers/start_batch", {"trigger_id": mid, "data": [{"e": 1}]},
         "data[0].e:"),
        ("campaigns/log_v2", {"id": mid, "from_time": "yesterday"}, "from_time:"),
        ("campaigns/log_v2", {"id": mid, "limit": 0}, "limit:"),
    ]
    for method, body, field in cases:
        answer = await api.call(method, body)
        assert (answer["error"], answer["error_text"][:len(field)]) == (400, field), answer
    r = await api.client.post("/api/v1.1/campaigns/log_v2", content=b"not json",
                              headers={"Authorization": f"Bearer {api.viewer}"})
    assert r.status_code == 200 and r.json()["error"] == 400


async def test_routes_are_in_the_openapi_document(api: Api) -> None:
    r = await api.client.get("/openapi.json", headers={"Authorization": f"Bearer {api.viewer}"})
    doc = r.json()
    for method in ("campaigns/triggers/start", "campaigns/triggers/start_batch",
                   "profiles/import", "profiles/import_batch", "campaigns/log_v2"):
        op = doc["paths"][f"/api/v1.1/{method}"]["post"]
        assert "requestBody" in op and "200" in op["responses"], method
    start = doc["components"]["schemas"]["StartBody"]["properties"]
    assert {"id", "matching", "content", "custom_data", "subscription_filter"} <= set(start)


EMAIL_EXTRA = """
[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
security = "none"
[senders.m1]
gateway = "mail"
from = "News <news@example.com>"
[virtual_senders.vm]
rules = [{ senders = [{ sender = "m1" }] }]
[resources.letters]
channel = "email"
virtual_sender = "vm"
"""


async def test_an_email_subscription_subscribes_the_address_to_an_email_resource(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(FakeGateway(), default_region="RU",
                                 extra=EMAIL_EXTRA) as herald, \
            MailingService.running(herald) as service:
        tokens = TokenStore(herald.store)
        secrets = {role: (await tokens.create(role))[1] for role in ("sender", "viewer")}
        transport = httpx.ASGITransport(create_app(herald, service))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            api = Api(client, herald, service, FakeGateway(), **secrets)
            answer = await api.call("profiles/import_batch", {
                "db_id": "main", "matching": "email", "data": [
                    {"email": "ann@example.com",
                     "subscriptions": [{"resource_id": "letters", "channel": "email"}]},
                    {"email": "bob@example.com", "subscriptions": [
                        {"resource_id": "letters", "channel": "email",
                         "email": "Bob.Work@Example.COM"}]},
                    {"email": "cy@example.com",
                     "subscriptions": [{"resource_id": "letters", "channel": "sms"}]},
                    {"email": "di@example.com", "subscriptions": [
                        {"resource_id": "letters", "channel": "email", "email": "no"}]},
                ]})
            rid = await herald.store.resource_id("letters")
            subs = await herald.store.find_subscriptions(rid)
    assert answer["error"] == 0, answer
    result = answer["result"]
    assert [r["error"] for r in result] == [0, 0, 400, 400]
    assert result[2]["error_text"].startswith(
        "data[2].subscriptions[0].channel: resource 'letters' sends email")
    assert result[3]["error_text"].startswith("data[3].subscriptions[0].email:")
    assert sorted((s.phone, s.channel, s.status) for s in subs) == [
        ("Bob.Work@example.com", "email", "subscribed"),
        ("ann@example.com", "email", "subscribed")]
