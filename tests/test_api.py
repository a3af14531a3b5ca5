"""The HTTP API in-process (httpx's ASGI transport), on asyncio and trio, against a real
MailingService and a fake gateway: profiles, subscriptions, mailings, triggers, receipts,
metrics, and the error answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from engine.api import TokenStore, create_app
from engine.api.metrics import exposition
from engine.demo import generate
from engine.runner import Herald
from engine.service import MailingService, SenderMetrics, ServiceStats
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

PHONES = ["+79161234501", "+79161234502", "+79161234503", "+79161234504"]


@dataclass
class Api:
    client: httpx.AsyncClient
    herald: Herald
    service: MailingService
    gateway: FakeGateway
    admin: str
    sender: str
    viewer: str

    def auth(self, role: str = "sender") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}

    async def post(self, url: str, json: Any = None, role: str = "sender",
                   **kw: Any) -> httpx.Response:
        headers = {**self.auth(role), **kw.pop("headers", {})}
        return await self.client.post(url, json=json, headers=headers, **kw)

    async def get(self, url: str, role: str = "viewer", **kw: Any) -> httpx.Response:
        return await self.client.get(url, headers=self.auth(role), **kw)

    async def import_phones(self, phones: list[str] = PHONES) -> None:
        r = await self.post("/api/v1/profiles/import", {
            "database": "main", "matching": "phone", "resource": "news",
            "profiles": [{"phone": p, "_fname": f"P{i}"} for i, p in enumerate(phones)],
        })
        assert r.status_code == 200, r.text

    async def mailing(self, kind: str = "trigger", template: str = "Hi {lead._fname}",
                      **extra: Any) -> int:
        r = await self.post("/api/v1/mailings", {
            "name": f"a {kind}", "kind": kind, "resource": "news", "template": template,
            "database": "main", **extra,
        })
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    async def wait(self, mailing_id: int, check: Callable[[dict[str, Any]], bool],
                   what: str = "") -> Any:
        """The mailing's status (``what="/log"``: its log) once ``check`` holds."""
        with anyio.fail_after(20):
            while True:
                status = (await self.get(f"/api/v1/mailings/{mailing_id}{what}")).json()
                if check(status):
                    return status
                await anyio.sleep(0.01)


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> FakeGateway:
    """A fake gateway; ``indirect`` parametrisation gives its keyword arguments."""
    return FakeGateway(**getattr(request, "param", {}))


@pytest.fixture
def options() -> dict[str, Any]:
    """Extra ``[engine]`` options of the workspace."""
    return {}


@pytest.fixture
async def api(
    open_herald: Callable[..., Any], gateway: FakeGateway, options: dict[str, Any]
) -> AsyncIterator[Api]:
    async with await open_herald(gateway, default_region="RU", **options) as herald, \
            MailingService.running(herald) as service:
        tokens = TokenStore(herald.store)
        secrets = {role: (await tokens.create(role))[1] for role in ("admin", "sender", "viewer")}
        transport = httpx.ASGITransport(create_app(herald, service))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield Api(client, herald, service, gateway, **secrets)


# -- service routes ---------------------------------------------------------------------


async def test_healthz_and_openapi(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    doc = (await api.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in ("/api/v1/profiles/import", "/api/v1/mailings/{mailing_id}/trigger",
                 "/api/v1/mailings/{mailing_id}/trigger/batch", "/api/v1/dlr/{gateway}",
                 "/api/v1/resources/{name}/subscriptions", "/metrics", "/healthz"):
        assert path in paths, path
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    trigger = paths["/api/v1/mailings/{mailing_id}/trigger"]["post"]
    assert trigger["security"] == [{"bearer": []}]
    assert any(p["name"] == "Idempotency-Key" for p in trigger["parameters"])


# -- profiles ---------------------------------------------------------------------------


async def test_import_counts_and_per_item_errors(api: Api) -> None:
    r = await api.post("/api/v1/profiles/import", {
        "database": "main", "matching": "phone", "resource": "news",
        "profiles": [
            {"phone": "8 (916) 123-45-01", "_fname": "Ann", "tier": 3},
            {"phone": "not a phone"},
            {"email": "ann@example.com"},
            {"phone": "+79161234502", "email": "bad@"},
            {"phone": "+79161234503", "id": -4},
            {"phone": "+79161234501", "_city": "Omsk"},
        ],
    })
    assert r.status_code == 200
    body = r.json()
    assert (body["added"], body["updated"], body["rejected"]) == (1, 1, 4)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "phone"), (2, "phone"), (3, "email"), (4, "id"),
    ]
    subs = (await api.get("/api/v1/resources/news/subscriptions",
                          params={"phone": "+79161234501"})).json()["subscriptions"]
    assert [s["status"] for s in subs] == ["subscribed"]


async def test_import_modes(api: Api) -> None:
    await api.import_phones(PHONES[:2])
    base = {"database": "main", "matching": "phone"}
    add = await api.post("/api/v1/profiles/import", {
        **base, "mode": "add", "profiles": [{"phone": PHONES[0]}, {"phone": PHONES[2]}],
    })
    assert (add.json()["added"], add.json()["skipped"]) == (1, 1)
    update = await api.post("/api/v1/profiles/import", {
        **base, "mode": "update", "profiles": [{"phone": PHONES[1]}, {"phone": PHONES[3]}],
    })
    assert update.json()["updated"] == 1
    assert update.json()["errors"] == [
        {"index": 1, "field": "phone", "error": "no profile matches"},
    ]
    by_id = await api.post("/api/v1/profiles/import", {
        "database": "main", "matching": "id", "profiles": [{"id": 1, "_city": "Tver"}],
    })
    assert by_id.json()["updated"] == 1
    missing = await api.post("/api/v1/profiles/import", {
        "database": "nowhere", "matching": "phone", "mode": "update", "profiles": [],
    })
    assert missing.status_code == 404 and missing.json()["field"] == "database"


async def test_import_bad_bodies_name_the_field(api: Api) -> None:
    url = "/api/v1/profiles/import"
    cases = [
        ({"database": "main", "matching": "phone", "profiles": [{}, 5]}, "profiles[1]"),
        ({"database": "main", "matching": "name", "profiles": []}, "matching"),
        ({"matching": "phone", "profiles": []}, "database"),
        ({"database": "main", "matching": "phone", "profiles": [], "extra": 1}, "extra"),
        ({"database": "main", "matching": "phone", "profiles": [], "resource": "x"},
         "resource"),
    ]
    for body, field in cases:
        r = await api.post(url, body)
        assert r.status_code == 400, body
        assert r.json()["field"] == field, r.json()
    r = await api.client.post(url, content=b"{oops", headers=api.auth())
    assert r.status_code == 400 and "malformed" in r.json()["error"]
    r = await api.client.post(url, headers=api.auth())
    assert r.status_code == 400 and r.json() == {"error": "a JSON body is required"}


async def test_import_over_10_mb_is_413(api: Api) -> None:
    blob = b'{"database": "main", "matching": "phone", "profiles": [' + b" " * 10_000_000 + b"]}"
    r = await api.client.post("/api/v1/profiles/import", content=blob, headers=api.auth())
    assert r.status_code == 413 and "error" in r.json()


# -- resources and subscriptions ----------------------------------------------------------


async def test_resources_subscribe_unsubscribe(api: Api) -> None:
    await api.import_phones(PHONES[:2])
    resources = (await api.get("/api/v1/resources")).json()["resources"]
    assert [(r["name"], r["virtual_sender"]) for r in resources] == [("news", "v")]

    url = "/api/v1/resources/news"
    r = await api.post(f"{url}/unsubscribe", {"phone": "8 916 123 45 01"})
    assert r.json()["changed"] == 1
    assert [s["status"] for s in r.json()["subscriptions"]] == ["unsubscribed"]
    r = await api.get(f"{url}/subscriptions", params={"profile_id": 1})
    assert r.json()["subscriptions"][0]["status"] == "unsubscribed"

    r = await api.post(f"{url}/subscribe", {"profile_id": 1})
    assert r.status_code == 200 and r.json()["subscriptions"][0]["status"] == "subscribed"

    # A phone nobody has yet: its profile is created in the database.
    r = await api.post(f"{url}/subscribe", {"phone": PHONES[3], "database": "main"})
    assert r.status_code == 200
    [sub] = r.json()["subscriptions"]
    assert (sub["phone"], sub["database"], sub["status"]) == (PHONES[3], "main", "subscribed")

    r = await api.post(f"{url}/unsubscribe", {"profile_id": sub["profile_id"]})
    assert r.json()["changed"] == 1

    errors = [
        (await api.post(f"{url}/subscribe", {"phone": PHONES[3]}), 400, "database"),
        (await api.post(f"{url}/subscribe", {"profile_id": 999}), 404, "profile_id"),
        (await api.post(f"{url}/subscribe", {"phone": "12"}), 400, "phone"),
        (await api.post(f"{url}/subscribe", {}), 400, "profile_id"),
        (await api.post("/api/v1/resources/nope/subscribe", {"profile_id": 1}), 404, "name"),
        (await api.get(f"{url}/subscriptions"), 400, "profile_id"),
        (await api.get(f"{url}/subscriptions", params={"profile_id": "x"}), 400,
         "profile_id"),
    ]
    for r, status, field in errors:
        assert (r.status_code, r.json().get("field")) == (status, field), r.json()


# -- mailings ---------------------------------------------------------------------------


async def test_broadcast_through_the_api(api: Api) -> None:
    await api.import_phones()
    mid = await api.mailing("broadcast")
    r = await api.get(f"/api/v1/mailings/{mid}")
    assert r.json()["status"] == "draft"
    r = await api.post(f"/api/v1/mailings/{mid}/start")
    assert r.status_code == 200
    done = await api.wait(mid, lambda s: s["status"] == "finished")
    assert done["sent"] == len(PHONES) == len(api.gateway.accepted)
    log = (await api.get(f"/api/v1/mailings/{mid}/log")).json()
    assert (log["mailing_id"], log["sent"], log["recipients"]) == (mid, 4, 4)
    listed = (await api.get("/api/v1/mailings")).json()["mailings"]
    assert [m["id"] for m in listed] == [mid]
    # a broadcast sends once: a second run would send to every recipient again
    r = await api.post(f"/api/v1/mailings/{mid}/start")
    assert r.status_code == 409 and "sent already" in r.json()["error"], r.json()
    assert len(api.gateway.accepted) == len(PHONES)


@pytest.mark.parametrize(("gateway", "options"), [({"latency": 0.005}, {"batch_size": 5})],
                         indirect=["gateway"])
async def test_pause_resume_cancel(api: Api) -> None:
    await generate(api.herald.store, profiles=1500, database="main")
    mid = await api.mailing("broadcast")
    r = await api.post(f"/api/v1/mailings/{mid}/start")
    assert r.json()["status"] == "running"
    await api.wait(mid, lambda s: s["sent"] >= 50)
    paused = await api.post(f"/api/v1/mailings/{mid}/pause")
    assert paused.json()["status"] == "paused"
    assert paused.json()["sent"] < 1400
    again = await api.post(f"/api/v1/mailings/{mid}/pause")
    assert again.status_code == 409 and "not running" in again.json()["error"]
    resumed = await api.post(f"/api/v1/mailings/{mid}/resume")
    assert resumed.json()["status"] == "running"
    cancelled = await api.post(f"/api/v1/mailings/{mid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    r = await api.post(f"/api/v1/mailings/{mid}/resume")
    assert r.status_code == 409
    assert set(api.gateway.submitted.values()) == {1}


async def test_mailing_errors(api: Api) -> None:
    base = {"name": "x", "kind": "broadcast", "resource": "news", "database": "main"}
    cases = [
        (await api.post("/api/v1/mailings", {**base, "template": "Hi {if}"}), 422, "template"),
        (await api.post("/api/v1/mailings", {**base, "template": "x", "resource": "no"}), 400,
         "resource"),
        (await api.post("/api/v1/mailings", {**base, "template": "x", "limit": -1}), 400,
         "limit"),
        (await api.post("/api/v1/mailings", {**base, "template": "x", "kind": "x"}), 400,
         "kind"),
        (await api.post("/api/v1/mailings", {**base, "template": "x", "policy": {
            "max_messages": 0, "period_days": 1}}), 400, "policy.max_messages"),
        (await api.get("/api/v1/mailings/77"), 404, None),
        (await api.get("/api/v1/mailings/0"), 400, "mailing_id"),
        (await api.get(f"/api/v1/mailings/{2**64}"), 400, "mailing_id"),
        (await api.post("/api/v1/mailings/77/start"), 404, None),
        (await api.get("/api/v1/mailings/77/log"), 404, None),
    ]
    for r, status, field in cases:
        assert (r.status_code, r.json().get("field")) == (status, field), r.json()
    await api.import_phones()
    mid = await api.mailing("broadcast")
    r = await api.get(f"/api/v1/mailings/{mid}/log")
    assert r.status_code == 409 and "never started" in r.json()["error"]


# -- triggers ---------------------------------------------------------------------------


async def test_trigger_answers_at_once_and_sends_content(api: Api) -> None:
    await api.import_phones()
    mid = await api.mailing("trigger", template="Code {apicontent.code} for {lead._fname}")
    r = await api.post(f"/api/v1/mailings/{mid}/trigger",
                       {"phone": "8 916 123-45-02", "content": {"code": "4711"}})
    assert r.status_code == 202
    message_id = r.json()["message_id"]
    assert message_id and r.json()["duplicate"] is False
    await api.wait(mid, lambda s: s["sent"] == 1)
    sent = api.gateway.texts[message_id]
    assert (sent.to, sent.text) == (PHONES[1], "Code 4711 for P1")


async def test_same_idempotency_key_never_sends_twice(api: Api) -> None:
    await api.import_phones()
    mid = await api.mailing("trigger")
    url = f"/api/v1/mailings/{mid}/trigger"
    first = await api.post(url, {"profile_id": 1, "idempotency_key": "order-1"})
    by_header = await api.post(url, {"profile_id": 1}, headers={"Idempotency-Key": "order-1"})
    assert by_header.json() == {**first.json(), "duplicate": True}
    batch = await api.post(f"{url}/batch", {"items": [
        {"profile_id": 1, "idempotency_key": "order-1"},
        {"profile_id": 2, "idempotency_key": "order-2"},
        {"profile_id": 2, "idempotency_key": "order-2"},
    ]})
    items = batch.json()["items"]
    assert items[0]["message_id"] == first.json()["message_id"] and items[0]["duplicate"]
    assert items[1]["message_id"] == items[2]["message_id"]
    await api.wait(mid, lambda s: s["sent"] == 2)
    await anyio.sleep(0.05)
    assert sorted(api.gateway.accepted.values()) == [1, 1]
    conflict = await api.post(url, {"profile_id": 1, "idempotency_key": "a"},
                              headers={"Idempotency-Key": "b"})
    assert conflict.status_code == 400 and conflict.json()["field"] == "idempotency_key"


async def test_trigger_batch_answers_each_item(api: Api) -> None:
    await api.import_phones()
    mid = await api.mailing("trigger")
    r = await api.post(f"/api/v1/mailings/{mid}/trigger/batch", {"items": [
        {"profile_id": 1, "content": {"a": 1}},
        {"email": "nobody@example.com"},
        {},
        {"phone": PHONES[2], "profile_id": 3},
        {"phone": "12"},
        {"phone": PHONES[3]},
    ]})
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], body["refused"]) == (2, 4)
    fields = [item["field"] for item in body["items"]]
    assert fields == [None, "email", "profile_id", "phone", "phone", None]
    assert all(item["message_id"] for item in body["items"] if item["field"] is None)
    await api.wait(mid, lambda s: s["sent"] == 2)


async def test_trigger_refusals(api: Api) -> None:
    await api.import_phones()
    trigger = await api.mailing("trigger")
    broadcast = await api.mailing("broadcast")
    cases = [
        (await api.post(f"/api/v1/mailings/{trigger}/trigger", {"profile_id": 99}), 422,
         "profile_id"),
        (await api.post(f"/api/v1/mailings/{trigger}/trigger", {"content": {}}), 400,
         "profile_id"),
        (await api.post(f"/api/v1/mailings/{trigger}/trigger",
                        {"profile_id": 1, "phone": PHONES[0]}), 400, "phone"),
        (await api.post(f"/api/v1/mailings/{trigger}/trigger", {"profile_id": "1x"}), 400,
         "profile_id"),
        (await api.post(f"/api/v1/mailings/{trigger}/trigger", {"profile_id": 1, "to": 1}),
         400, "to"),
        (await api.post(f"/api/v1/mailings/{broadcast}/trigger", {"profile_id": 1}), 400,
         None),
        (await api.post("/api/v1/mailings/404/trigger", {"profile_id": 1}), 404, None),
        (await api.post("/api/v1/mailings/404/trigger/batch", {"items": [{}]}), 404, None),
        (await api.post(f"/api/v1/mailings/{trigger}/trigger/batch", {"items": []}), 400,
         "items"),
    ]
    for r, status, field in cases:
        assert (r.status_code, r.json().get("field")) == (status, field), r.json()
    await api.post(f"/api/v1/mailings/{trigger}/pause")
    r = await api.post(f"/api/v1/mailings/{trigger}/trigger", {"profile_id": 1})
    assert r.status_code == 409


# -- receipts and metrics -----------------------------------------------------------------


async def test_receipts_need_the_gateway_secret(api: Api,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    await api.import_phones()
    mid = await api.mailing("trigger")
    r = await api.post(f"/api/v1/mailings/{mid}/trigger", {"profile_id": 1})
    message_id = r.json()["message_id"]
    await api.wait(mid, lambda s: s["sent"] == 1)
    body = {"receipts": [{"provider_id": f"p-{message_id}", "status": "delivered"}]}
    url = "/api/v1/dlr/gw"

    r = await api.client.post(url, json=body)
    assert r.status_code == 403 and r.json()["field"] == "gateway"
    monkeypatch.setenv("HERALD_DLR_SECRET_GW", "s3cret")
    assert (await api.client.post(url, json=body)).status_code == 401
    r = await api.client.post(url, json=body, headers={"X-Herald-Secret": "nope"})
    assert r.status_code == 401
    r = await api.client.post(url, json=body, headers={**api.auth("admin")})
    assert r.status_code == 401  # a bearer token is not the gateway's secret
    r = await api.client.post(url, json=body, headers={"X-Herald-Secret": "s3cret"})
    assert r.status_code == 200 and r.json() == {"matched": 1, "pending": 0, "ignored": 0}
    r = await api.client.post(url, params={"secret": "s3cret"}, json={
        "receipts": [{"provider_id": "p-early", "status": "undelivered"}]})
    assert r.json() == {"matched": 0, "pending": 1, "ignored": 0}
    r = await api.client.post(url, params={"secret": "s3cret"}, content=b"<xml/>")
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = await api.client.post("/api/v1/dlr/elsewhere", json=body)
    assert r.status_code == 404 and r.json()["field"] == "gateway"
    log = (await api.get(f"/api/v1/mailings/{mid}/log")).json()
    assert log["delivered"] == 1


async def test_metrics(api: Api) -> None:
    await api.import_phones()
    mid = await api.mailing("trigger")
    await api.post(f"/api/v1/mailings/{mid}/trigger/batch",
                   {"items": [{"profile_id": i} for i in (1, 2, 3)]})
    await api.wait(mid, lambda s: s["sent"] == 3)
    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert 'herald_sender_sent_total{sender="s1"} 3' in lines
    assert 'herald_sender_failed_total{sender="s1"} 0' in lines
    assert "herald_mailings_running 1" in lines
    count = next(ln for ln in lines if ln.startswith("herald_sender_latency_seconds_count"))
    inf = next(ln for ln in lines if 'le="+Inf"' in ln)
    assert count.split()[-1] == inf.split()[-1] != "0"
    assert any(ln.startswith('herald_stage_busy_seconds_total{stage="') for ln in lines)
    assert (await api.get("/api/v1/metrics")).text.startswith("# HELP")


def test_exposition_format() -> None:
    stats = ServiceStats(senders=[SenderMetrics(
        name='a"b\\c', sent=5, failed=1, throttled=2, in_flight=3,
        latency_buckets=[0.01, float("inf")], latency_counts=[4, 6], latency_sum=0.5,
        latency_count=6,
    )], busy_s={"prepare": 1.25}, running=2)
    text = exposition(stats)
    assert 'herald_sender_sent_total{sender="a\\"b\\\\c"} 5' in text
    assert 'herald_sender_latency_seconds_bucket{sender="a\\"b\\\\c",le="0.01"} 4' in text
    assert 'herald_sender_latency_seconds_bucket{sender="a\\"b\\\\c",le="+Inf"} 6' in text
    assert 'herald_stage_busy_seconds_total{stage="prepare"} 1.25' in text
    assert "# TYPE herald_sender_latency_seconds histogram" in text
    empty = exposition(None)
    assert "herald_mailings_running 0" in empty


async def test_mailing_policy_is_applied(api: Api) -> None:
    await api.import_phones()
    mid = await api.mailing("trigger", policy={"max_messages": 1, "period_days": 1})
    url = f"/api/v1/mailings/{mid}/trigger"
    first = await api.post(url, {"profile_id": 1})
    # Sent and recorded first: a message still at the gateway is not counted yet.
    await api.wait(mid, lambda s: s["sent"] == 1)
    second = await api.post(url, {"profile_id": 1})
    assert first.status_code == second.status_code == 202
    log = await api.wait(mid, lambda log: log["policy"] == 1, "/log")
    assert (log["sent"], log["policy"], len(api.gateway.accepted)) == (1, 1, 1)


# -- [limits] on what a client sends (issue 20) ------------------------------------------


def _object(n: int, value: str = "0") -> str:
    return "{" + ",".join(f'"k{i}":{value}' for i in range(n)) + "}"


def _nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


async def _create(api: Api, document: str) -> httpx.Response:
    body = ('{"name": "n", "kind": "broadcast", "resource": "news", "template": "Hi",'
            f' "database": "main", "document": {document}}}')
    return await api.client.post("/api/v1/mailings", content=body,
                                 headers={**api.auth(), "Content-Type": "application/json"})


async def test_a_document_past_its_bounds_is_refused_naming_the_bound(api: Api) -> None:
    await api.import_phones()
    r = await _create(api, _object(12_345))
    assert r.status_code == 422
    assert r.json() == {"error": "document: 12,345 keys; [limits] document_keys is 10000",
                        "field": "document"}
    r = await _create(api, '{"a": "' + "x" * 1_000_000 + '"}')
    assert r.status_code == 413 and "[limits] document_bytes is 1000000" in r.json()["error"]
    r = await _create(api, _nested(65))
    assert r.status_code == 400 and "[limits] json_depth is 64" in r.json()["error"]
    # keys and brackets inside strings are not structure
    r = await _create(api, _object(5_000, '"a: [[{x}]], b: c"'))
    assert r.status_code == 201, r.text
    r = await _create(api, _nested(64))
    assert r.status_code == 201, r.text


async def test_a_profile_past_its_bounds_is_refused_before_anything_lands(api: Api) -> None:
    url = "/api/v1/profiles/import"
    good = {"phone": PHONES[0]}
    wide = {f"f{i}": i for i in range(1_001)}
    r = await api.post(url, {"database": "main", "matching": "phone",
                             "profiles": [good, {**wide, "phone": PHONES[1]}]})
    assert r.status_code == 422
    assert r.json() == {"error": "profiles[1]: more than 1,000 fields; [limits]"
                                 " profile_fields is 1000", "field": "profiles[1]"}
    deep: Any = []
    for _ in range(70):
        deep = [deep]
    r = await api.post(url, {"database": "main", "matching": "phone",
                             "profiles": [{"phone": PHONES[1], "x": deep}]})
    assert r.status_code == 400 and "[limits] json_depth is 64" in r.json()["error"]
    r = await api.post(url, {"database": "main", "matching": "phone",
                             "profiles": [good, {**{f"f{i}": i for i in range(999)}}]})
    assert r.status_code == 200 and r.json()["added"] == 1, r.text


@pytest.mark.parametrize("url", ["/api/v1/mailings/1/trigger", "/api/v1/resources/news/subscribe",
                                 "/api/v1/mailings"])
async def test_json_a_thousand_levels_deep_is_a_400_anywhere(api: Api, url: str) -> None:
    body = '{"content": ' + "[" * 5_000 + "]" * 5_000 + "}"
    r = await api.client.post(url, content=body,
                              headers={**api.auth(), "Content-Type": "application/json"})
    assert r.status_code == 400
    assert "[limits] json_depth is 64" in r.json()["error"]


def test_shape_counts_keys_and_depth_outside_strings() -> None:
    from engine.api.bounds import shape

    raw = b'{"a": {"b": [1, {"c": "d: [{"}]}, "e\\": {": 2}'
    found = shape(raw)
    assert (found.keys, found.depth, found.stopped) == (4, 4, False)
    assert shape(raw, max_keys=2).stopped and shape(raw, max_depth=2).stopped
