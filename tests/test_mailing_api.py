"""``/api/v1/mailings`` for every kind, in-process (httpx's ASGI transport) on asyncio and
trio, against a real MailingService and a fake gateway: schedules and options on create,
the runs of ``GET /api/v1/mailings/{id}``, test sends, a manual winner's pick, and the
refusals, each naming its field."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from engine.api import TokenStore, create_app
from engine.runner import Herald
from engine.service import MailingService
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

PHONES = [f"+791612345{i:02d}" for i in range(20)]
TEST_PHONES = ["+79169990001", "+79169990002"]


@dataclass
class Api:
    client: httpx.AsyncClient
    herald: Herald
    gateway: FakeGateway
    secrets: dict[str, str]

    async def post(self, url: str, json: Any = None, role: str = "sender") -> httpx.Response:
        return await self.client.post(url, json=json, headers=self._auth(role))

    async def get(self, url: str, role: str = "viewer") -> httpx.Response:
        return await self.client.get(url, headers=self._auth(role))

    def _auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[role]}"}

    async def create(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "m", "kind": "broadcast", "resource": "news", "database": "main",
                "template": "A for {lead._fname}", **fields}
        r = await self.post("/api/v1/mailings", body)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    async def detail(self, mailing_id: int) -> dict[str, Any]:
        r = await self.get(f"/api/v1/mailings/{mailing_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def wait(self, mailing_id: int, check: Callable[[dict[str, Any]], bool]) -> Any:
        with anyio.fail_after(20):
            while not check(detail := await self.detail(mailing_id)):  # noqa: ASYNC110 - a client polls
                await anyio.sleep(0.01)
            return detail

    def texts(self) -> list[tuple[str, str]]:
        return sorted((m.to, m.text) for m in self.gateway.texts.values())


@pytest.fixture
async def api(open_herald: Callable[..., Any]) -> AsyncIterator[Api]:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald, \
            MailingService.running(herald) as service:
        tokens = TokenStore(herald.store)
        secrets = {role: (await tokens.create(role))[1] for role in ("sender", "viewer")}
        transport = httpx.ASGITransport(create_app(herald, service))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            api = Api(client, herald, gateway, secrets)
            r = await api.post("/api/v1/profiles/import", {
                "database": "main", "matching": "phone", "resource": "news",
                "profiles": [{"phone": p, "_fname": f"P{i}"} for i, p in enumerate(PHONES)],
            })
            assert r.status_code == 200, r.text
            yield api


async def test_a_scheduled_regular_mailing_shows_its_state_and_next_launch(api: Api) -> None:
    created = await api.create(kind="regular", schedule="0 10 * * MON#1",
                               timezone="Europe/Moscow", until="2036-12-31T00:00",
                               control=2.5, ignore_global_control=True)
    assert (created["state"], created["status"]) == ("scheduled", "draft")
    detail = await api.detail(created["id"])
    assert detail["next_launch"] == created["next_launch"] > 0
    assert detail["next_launch_at"].endswith("T10:00:00+03:00")
    assert detail["timezone"] == "Europe/Moscow"
    assert detail["options"] == {
        "control": 2.5, "ignore_global_control": True,
        "schedule": {"cron": "0 10 * * MON#1", "timezone": "Europe/Moscow",
                     "until": "2036-12-31T00:00"}}
    assert (detail["launches"], detail["tests"], detail["launches_total"]) == ([], [], 0)


async def test_a_broadcast_at_a_time_is_scheduled_and_start_takes_its_launch(
    api: Api,
) -> None:
    created = await api.create(at="2036-12-24T10:00", timezone="Europe/Moscow")
    assert created["state"] == "scheduled"
    r = await api.post(f"/api/v1/mailings/{created['id']}/start")
    assert r.status_code == 200, r.text
    done = await api.wait(created["id"], lambda d: d["status"] == "finished")
    assert (done["state"], done["next_launch"]) == ("done", None)  # not launched again
    (run,) = done["launches"]
    assert (run["phase"], run["sent"], run["variant"]) == ("launch", len(PHONES), None)


async def test_a_plain_split_sends_each_profile_one_variant(api: Api) -> None:
    created = await api.create(kind="multivariate", template=None, test_share=100,
                               templates=["A for {lead._fname}", "B for {lead._fname}"])
    r = await api.post(f"/api/v1/mailings/{created['id']}/start")
    assert r.status_code == 200, r.text
    done = await api.wait(created["id"], lambda d: d["launches_total"] == 2 and all(
        run["status"] == "finished" for run in d["launches"]))
    assert [(r["phase"], r["variant"]) for r in done["launches"]] == [("test", 1), ("test", 2)]
    assert done["variants"] == 2 and "variants" not in done["options"]
    texts = api.texts()
    assert [to for to, _ in texts] == PHONES  # each profile exactly once
    assert {text[0] for _, text in texts} == {"A", "B"}


async def test_test_sends_every_variant_to_each_phone_and_is_listed_apart(api: Api) -> None:
    created = await api.create(kind="multivariate", template=None, test_share=30,
                               winner="clicks", wait=5,
                               templates=["A for {lead._fname}", "B for {lead._fname}"])
    r = await api.post(f"/api/v1/mailings/{created['id']}/test",
                       {"to": TEST_PHONES, "profile_id": 3})
    assert r.status_code == 200, r.text
    runs = r.json()["runs"]
    assert [run["variant"] for run in runs] == [1, 2]
    for run in runs:
        assert run["status"] == "finished"
        assert sorted((m["phone"], m["state"]) for m in run["messages"]) == [
            (p, "sent") for p in TEST_PHONES]
    assert api.texts() == sorted((p, f"{v} for P2") for p in TEST_PHONES for v in "AB")
    detail = await api.detail(created["id"])
    assert (detail["state"], detail["launches"], detail["tests_total"]) == ("draft", [], 2)
    assert all(t["is_test"] and t["phase"] == "trial" for t in detail["tests"])


async def test_a_manual_winner_is_picked_and_goes_to_the_rest(api: Api) -> None:
    created = await api.create(kind="multivariate", template=None, test_share=50,
                               winner="manual",
                               templates=["A for {lead._fname}", "B for {lead._fname}"])
    mailing = f"/api/v1/mailings/{created['id']}"
    assert (await api.post(f"{mailing}/start")).status_code == 200
    await api.wait(created["id"], lambda d: d["state"] == "waiting" and all(
        run["status"] == "finished" for run in d["launches"]) and d["launches_total"] == 2)
    r = await api.post(f"{mailing}/pick", {"variant": 9})
    assert r.status_code == 400 and r.json()["field"] == "variant", r.text
    r = await api.post(f"{mailing}/pick", {"variant": 2}, role="viewer")
    assert r.status_code == 403
    r = await api.post(f"{mailing}/pick", {"variant": 2})
    assert r.status_code == 200, r.text
    done = await api.wait(created["id"], lambda d: d["winner"] == 2 and all(
        run["status"] == "finished" for run in d["launches"]))
    assert done["state"] == "done"
    assert [to for to, _ in api.texts()] == PHONES  # each profile exactly once
    r = await api.post(f"{mailing}/pick", {"variant": 1})
    assert r.status_code == 409, r.text


@pytest.mark.parametrize(("fields", "field"), [
    pytest.param({"kind": "multivariate", "template": None, "templates": ["x"]}, "templates",
                 id="one-variant"),
    pytest.param({"kind": "regular"}, "schedule", id="regular-without-schedule"),
    pytest.param({"at": "2036-12-24T10:00", "timezone": "Mars/Olympus"}, "timezone",
                 id="unknown-zone"),
    pytest.param({"at": "next tuesday"}, "at", id="bad-time"),
    pytest.param({"at": "2001-01-01T10:00"}, "at", id="past-time"),
    pytest.param({"kind": "regular", "schedule": "every day"}, "schedule", id="bad-cron"),
    pytest.param({"wait": -1}, "wait", id="negative-wait"),
    pytest.param({"control": 101}, "control", id="control-over-100"),
    pytest.param({"test_share": 20}, "test_share", id="test-share-of-a-broadcast"),
    pytest.param({"late": "later"}, "late", id="bad-late"),
    pytest.param({"scheduel": "* * * * *"}, "scheduel", id="unknown-field"),
])
async def test_bad_fields_are_refused_naming_them(
    api: Api, fields: dict[str, Any], field: str
) -> None:
    body = {"name": "m", "kind": "broadcast", "resource": "news", "database": "main",
            "template": "Hi", **fields}
    r = await api.post("/api/v1/mailings", {k: v for k, v in body.items() if v is not None})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.text
    assert (await api.get("/api/v1/mailings")).json()["mailings"] == []


async def test_test_refusals(api: Api) -> None:
    created = await api.create()
    test = f"/api/v1/mailings/{created['id']}/test"
    r = await api.post(test, {"to": []})
    assert r.status_code == 400 and r.json()["field"] == "to", r.text
    r = await api.post(test, {"to": TEST_PHONES}, role="viewer")
    assert r.status_code == 403
    r = await api.post("/api/v1/mailings/999/test", {"to": TEST_PHONES})
    assert r.status_code == 404
    r = await api.post(test, {"to": ["not a phone"]})
    assert r.status_code == 400 and r.json()["field"] == "to", r.text
    r = await api.post(f"/api/v1/mailings/{created['id']}/pick", {"variant": 1})
    assert r.status_code == 400, r.text  # a broadcast has no variants
    assert api.gateway.texts == {}


async def test_the_new_routes_are_documented(api: Api) -> None:
    doc = (await api.get("/openapi.json")).json()
    for path in ("/api/v1/mailings/{mailing_id}/test", "/api/v1/mailings/{mailing_id}/pick"):
        assert doc["paths"][path]["post"]["security"] == [{"bearer": []}]
    create = doc["components"]["schemas"]["MailingCreate"]["properties"]
    for key in ("templates", "at", "schedule", "timezone", "until", "local_time", "late",
                "test_share", "winner", "wait", "control", "ignore_global_control",
                "quiet_hours"):
        assert key in create, key
