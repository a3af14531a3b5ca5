"""The routes the operator console reads, in-process on both stores and both event loops:
``whoami``, the live streams of a mailing and of the senders (server-sent events), the
senders, the template preview, the databases, profiles and segments, and the static
files of ``/console``; then ``herald serve`` stopping on SIGTERM with a live stream open.

httpx's ASGI transport waits for a whole body, so the streams are read through a small
ASGI client of this module (``open_stream``) that hands over each chunk as it is sent and
says when the client goes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from litestar import Litestar

from engine.api import TokenStore, create_app
from engine.api.console import CSP, static_routes
from engine.api.errors import exception_handlers
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.service import MailingService
from engine.testing import FakeGateway, create_token, write_config
from tests.servers import free_port, wait_healthy

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("any_store")]

CONFIG = """
[engine]
database = "herald.db"
default_region = "RU"

[gateways.gw]
driver = "fake"

[senders.s1]
gateway = "gw"
caller_id = "ACME"
rate = 40
burst = 4
max_segments = 2

[senders.s2]
gateway = "gw"
caller_id = "BACKUP"

[virtual_senders.v]
rules = [{ senders = [{ sender = "s1", percent = 100 }, { sender = "s2", percent = 0 }] }]

[resources.news]
channel = "sms"
virtual_sender = "v"
unsubscribe_url = "https://shop.example/stop"

[tracking]
domain = "t.example.com"
"""


def phones(n: int) -> list[str]:
    return [f"+7916{i:07d}" for i in range(1, n + 1)]


@dataclass
class Stream:
    """A response being streamed to ``open_stream``'s client."""

    status: int
    headers: dict[str, str]
    chunks: MemoryObjectReceiveStream[bytes]
    #: Set when the app returned (the stream ended).
    ended: anyio.Event
    _buffer: bytes = b""

    async def message(self) -> tuple[str, Any]:
        """The next server-sent event: (its name, its data decoded)."""
        with anyio.fail_after(15):
            while b"\n\n" not in self._buffer:
                self._buffer += await self.chunks.receive()
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        lines = dict(line.split(": ", 1) for line in block.decode().split("\n"))
        return lines["event"], json.loads(lines["data"])


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Litestar
    herald: Herald
    service: MailingService
    gateway: FakeGateway
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def get(self, url: str, role: str = "viewer", **kw: Any) -> httpx.Response:
        return await self.client.get(url, headers=self.auth(role), **kw)

    async def post(self, url: str, body: Any, role: str = "sender") -> httpx.Response:
        return await self.client.post(url, json=body, headers=self.auth(role))

    async def import_phones(self, numbers: list[str], database: str = "main") -> None:
        r = await self.post("/api/v1/profiles/import", {
            "database": database, "matching": "phone", "resource": "news",
            "profiles": [{"phone": p, "_fname": f"P{i}"} for i, p in enumerate(numbers)]})
        assert r.status_code == 200, r.text

    async def mailing(self, template: str = "Hi {lead._fname}", **extra: Any) -> int:
        r = await self.post("/api/v1/mailings", {
            "name": "spring", "kind": "broadcast", "resource": "news", "database": "main",
            "template": template, **extra})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    @asynccontextmanager
    async def open_stream(self, path: str, role: str = "viewer") -> AsyncIterator[Stream]:
        """GET ``path`` on the app; the client goes when the block ends."""
        send_chunk, chunks = anyio.create_memory_object_stream[bytes](10_000)
        gone, ended, started = anyio.Event(), anyio.Event(), anyio.Event()
        start: dict[str, Any] = {}
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()  # or the response is complete: servers say so then
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                started.set()
                return
            if message.get("body"):
                send_chunk.send_nowait(message["body"])
            if not message.get("more_body", False):
                gone.set()

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
            "server": ("herald", 80),
            "headers": [(b"host", b"herald"),
                        (b"authorization", self.auth(role)["Authorization"].encode())],
        }

        async def run() -> None:
            try:
                await self.app(scope, receive, send)  # type: ignore[arg-type]
            finally:
                ended.set()
                started.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(15):
                await started.wait()
            headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
            try:
                yield Stream(start.get("status", 0), headers, chunks, ended)
            finally:
                gone.set()
                with anyio.fail_after(5):  # the app notices the client went
                    await ended.wait()


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway(latency=0.005)


@pytest.fixture
async def api(tmp_path: Path, gateway: FakeGateway) -> AsyncIterator[Api]:
    config = tmp_path / "herald.toml"
    config.write_text(CONFIG, encoding="utf-8")
    async with await Herald.open(config, plugins=load_plugins(gateway.plugin())) as herald, \
            MailingService.running(herald) as service:
        tokens = TokenStore(herald.store)
        secrets = {role: (await tokens.create(role, name=f"{role} token"))[1]
                   for role in ("admin", "sender", "viewer")}
        app = create_app(herald, service)
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield Api(client, app, herald, service, gateway, secrets)


# -- whoami -----------------------------------------------------------------------------


async def test_whoami_names_the_tokens_role_and_name(api: Api) -> None:
    for role in ("viewer", "sender", "admin"):
        r = await api.get("/api/v1/whoami", role)
        assert r.status_code == 200
        assert r.json() == {"role": role, "name": f"{role} token"}
    _, nameless = await TokenStore(api.herald.store).create("viewer")
    r = await api.client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {nameless}"})
    assert r.json() == {"role": "viewer", "name": ""}
    assert (await api.client.get("/api/v1/whoami")).status_code == 401


async def test_a_viewer_reads_the_console_routes_but_may_not_act(api: Api) -> None:
    await api.import_phones(phones(2))
    mailing = await api.mailing()
    for path in ("/api/v1/senders", "/api/v1/databases", "/api/v1/segments",
                 "/api/v1/databases/main/profiles", f"/api/v1/mailings/{mailing}"):
        assert (await api.get(path)).status_code == 200, path
    r = await api.post("/api/v1/templates/preview", {"template": "Hi"}, role="viewer")
    assert r.status_code == 200
    for action in ("start", "pause", "resume", "cancel"):
        r = await api.post(f"/api/v1/mailings/{mailing}/{action}", None, role="viewer")
        assert r.status_code == 403, action
    r = await api.post(f"/api/v1/mailings/{mailing}/test", {"to": [phones(1)[0]]},
                       role="viewer")
    assert r.status_code == 403


# -- databases, profiles, segments -------------------------------------------------------


async def test_databases_their_profiles_and_segments(api: Api) -> None:
    await api.import_phones(phones(3))
    await api.import_phones(phones(1), database="archive")
    r = await api.get("/api/v1/databases")
    assert [(d["name"], d["profiles"]) for d in r.json()["databases"]] == [
        ("archive", 1), ("main", 3)]
    assert all(isinstance(d["id"], int) for d in r.json()["databases"])
    r = await api.get("/api/v1/databases/main/profiles", params={"limit": 2})
    page = r.json()["profiles"]
    assert [(p["phone"], p["fields"]["_fname"]) for p in page] == [
        (phones(3)[0], "P0"), (phones(3)[1], "P1")]
    assert set(page[0]) == {"id", "phone", "email", "fields"}
    r = await api.get("/api/v1/databases/main/profiles", params={"after": page[-1]["id"]})
    assert [p["phone"] for p in r.json()["profiles"]] == [phones(3)[2]]
    assert (await api.get("/api/v1/databases/nope/profiles")).status_code == 404
    r = await api.get("/api/v1/databases/main/profiles", params={"limit": 101})
    assert r.status_code == 400
    store = api.herald.store
    main = await store.database_id("main")
    await store.create_segment("first", main, profile_ids=[page[0]["id"]])
    await store.create_segment("all", main, condition='lead._fname contains "P"')
    r = await api.get("/api/v1/segments")
    assert [(s["name"], s["database"], s["kind"]) for s in r.json()["segments"]] == [
        ("all", "main", "dynamic"), ("first", "main", "static")]


# -- the template preview -----------------------------------------------------------------


async def preview(api: Api, **body: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/templates/preview", body, role="viewer")
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def test_a_gsm_text_for_a_profile(api: Api) -> None:
    await api.import_phones(phones(2))
    profiles = (await api.get("/api/v1/databases/main/profiles")).json()["profiles"]
    got = await preview(api, template="Hello {lead._fname}, {apicontent.code} [ok]",
                        database="main", profile_id=profiles[1]["id"],
                        content={"code": 42})
    assert got == {"ok": True, "text": "Hello P1, 42 [ok]", "encoding": "gsm7",
                   "length": 19, "segments": 1, "too_long": False, "ucs2_chars": [],
                   "links": []}
    blank = await preview(api, template="Hi {lead._fname}!")
    assert blank["text"] == "Hi !"  # no profile: no data


async def test_an_emoji_forces_ucs2_and_is_pointed_at(api: Api) -> None:
    got = await preview(api, template="Sale 😀 now — go")
    assert got["encoding"] == "ucs2"
    assert got["ucs2_chars"] == [{"index": 5, "char": "😀"}, {"index": 12, "char": "—"}]
    # "Sale " + a surrogate pair + " now " + "—" + " go": in UTF-16 units
    assert got["length"] == 16 and got["segments"] == 1
    long = await preview(api, template="😀" * 40, resource="news")
    assert (long["length"], long["segments"]) == (80, 2)
    assert long["too_long"] is False  # s1 takes 2 segments at most
    longer = await preview(api, template="😀" * 80, resource="news")
    assert longer["segments"] == 3 and longer["too_long"] is True


async def test_links_are_shown_shortened_on_the_tracking_domain(api: Api) -> None:
    got = await preview(api, template="Sale: https://shop.example/sale now. Stop: {unsubscribe}",
                        resource="news")
    [link] = got["links"]
    assert link["url"] == "https://shop.example/sale"
    short = link["short"]
    assert short.startswith("https://t.example.com/") and len(short.rsplit("/", 1)[1]) == 10
    assert got["text"].startswith(f"Sale: {short} now. Stop: https://t.example.com/u/")
    assert "shop.example" not in got["text"]
    assert got["segments"] == 1 and got["encoding"] == "gsm7"


async def test_a_compile_error_says_where(api: Api) -> None:
    got = await preview(api, template="Hi\n{if lead.x}there")
    assert got["ok"] is False
    assert (got["error"]["line"], got["error"]["col"]) == (2, 1)
    assert "end" in got["error"]["message"]
    got = await preview(api, template="Hi {lead.}")
    assert (got["ok"], got["error"]["line"], got["error"]["col"]) == (False, 1, 10)
    got = await preview(api, template="  ")
    assert got["ok"] is False and "empty" in got["error"]["message"]


async def test_a_preview_of_an_unknown_thing_is_a_404(api: Api) -> None:
    for body, field_name in (({"resource": "nope"}, "resource"),
                             ({"database": "nope"}, "database"),
                             ({"profile_id": 999}, "profile_id")):
        r = await api.post("/api/v1/templates/preview", {"template": "Hi", **body},
                           role="viewer")
        assert r.status_code == 404, body
        assert r.json()["field"] == field_name


# -- senders ----------------------------------------------------------------------------


async def test_the_senders_pace_weight_and_health(api: Api) -> None:
    r = await api.get("/api/v1/senders")
    assert r.status_code == 200
    s1, s2 = r.json()["senders"]
    assert s1 == {"name": "s1", "gateway": "gw", "caller_id": "ACME", "from": None,
                  "reply_to": None, "rate": 40.0, "burst": 4, "window": 0,
                  "weight": {"v": 100.0}, "health": "ok",
                  "sent": 0, "failed": 0, "throttled": 0, "in_flight": 0,
                  "last_errors": []}
    assert (s2["name"], s2["weight"], s2["rate"]) == ("s2", {"v": 0.0}, 0.0)


async def test_a_failing_sender_is_down_with_its_errors(api: Api) -> None:
    await api.import_phones(phones(3))
    api.gateway.down = True
    mailing = await api.mailing()
    assert (await api.post(f"/api/v1/mailings/{mailing}/start", None)).status_code == 200
    with anyio.fail_after(15):
        while True:
            s1 = (await api.get("/api/v1/senders")).json()["senders"][0]
            if s1["health"] == "down" and s1["last_errors"]:
                break
            await anyio.sleep(0.02)
    assert s1["last_errors"][-1]["error"] == "fake gateway: connection refused"
    assert abs(s1["last_errors"][-1]["at"] - time.time()) < 60
    assert s1["weight"]["v"] < 100
    await api.post(f"/api/v1/mailings/{mailing}/cancel", None)


async def test_looking_at_the_senders_keeps_the_metrics_true(api: Api) -> None:
    """A finished run's totals are kept apart: looking at them while another run goes on
    (the senders' stream does every second) must not add that run to them again."""
    await api.import_phones(phones(60))
    first = await api.mailing(limit=2)
    await api.post(f"/api/v1/mailings/{first}/start", None)
    with anyio.fail_after(15):
        status = ""
        while status != "finished":
            await anyio.sleep(0.02)
            status = (await api.get(f"/api/v1/mailings/{first}")).json()["status"]
    second = await api.mailing()
    await api.post(f"/api/v1/mailings/{second}/start", None)
    with anyio.fail_after(15):
        sent = 0
        while sent < 5:
            await anyio.sleep(0.02)
            sent = (await api.get(f"/api/v1/mailings/{second}")).json()["sent"]
    for _ in range(20):
        assert (await api.get("/api/v1/senders")).status_code == 200
    for s in api.service.statistics().senders:
        assert all(n <= s.latency_count for n in s.latency_counts), s
    await api.post(f"/api/v1/mailings/{second}/cancel", None)


async def test_the_senders_stream(api: Api) -> None:
    async with api.open_stream("/api/v1/senders/live") as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        name, body = await stream.message()
        assert name == "senders"
        assert [s["name"] for s in body["senders"]] == ["s1", "s2"]
        assert body == (await api.get("/api/v1/senders")).json()
        name, _ = await stream.message()
        assert name == "senders"
    assert stream.ended.is_set()


async def test_a_stream_ends_when_its_token_is_revoked(api: Api) -> None:
    tokens = api.app.state.api.tokens
    token, api.tokens["doomed"] = await tokens.create("viewer")
    async with api.open_stream("/api/v1/senders/live", role="doomed") as stream:
        await stream.message()
        await tokens.revoke(token.id)
        with anyio.fail_after(5):
            await stream.ended.wait()


# -- a mailing's live stream -------------------------------------------------------------


async def test_a_running_mailings_stream_moves(api: Api) -> None:
    await api.import_phones(phones(100))
    mailing = await api.mailing()
    r = await api.post(f"/api/v1/mailings/{mailing}/start", None)
    assert r.status_code == 200
    with anyio.fail_after(15):  # under way: 100 segments at 40 a second take 2.5 s
        sent = 0
        while not sent:
            await anyio.sleep(0.02)
            sent = (await api.get(f"/api/v1/mailings/{mailing}")).json()["sent"]
    async with api.open_stream(f"/api/v1/mailings/{mailing}/live") as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        name, first = await stream.message()
        name2, second = await stream.message()
        assert (name, name2) == ("status", "status")
    assert stream.ended.is_set()  # the client went: the stream ended
    assert set(first) == {"at", "mailing", "counts", "senders"}
    assert abs(second["at"] - time.time()) < 5
    assert 0.3 < second["at"] - first["at"] < 2
    detail = (await api.get(f"/api/v1/mailings/{mailing}")).json()
    assert set(second["mailing"]) == set(detail)
    assert second["mailing"]["id"] == mailing and second["mailing"]["status"] == "running"
    assert set(second["counts"]) == {
        "recipients", "sent", "delivered", "undelivered", "failed", "unknown", "segments",
        "clicks", "unique_clicks", "unsubscribed", "control", "opens", "unique_opens",
        "hard_bounced", "soft_bounced", "complaints", "skipped"}
    assert second["counts"]["sent"] > first["counts"]["sent"]
    assert second["counts"]["segments"] > first["counts"]["segments"]
    s1 = second["senders"][0]
    assert (s1["name"], s1["limit"], s1["burst"]) == ("s1", 40.0, 4)
    assert 0 < s1["rate"] <= 40 + 4 / 0.3  # the pace, and a burst at most
    assert s1["segments"] == second["counts"]["segments"]
    s2 = second["senders"][1]
    assert (s2["name"], s2["segments"], s2["rate"], s2["limit"], s2["burst"]) == (
        "s2", 0, 0.0, None, None)


async def test_a_finished_mailings_stream_counts_what_was_skipped(api: Api) -> None:
    numbers = phones(3)
    r = await api.post("/api/v1/profiles/import", {
        "database": "main", "matching": "email", "resource": "news",
        "profiles": [{"email": f"p{i}@example.com", "phone": p}
                     for i, p in enumerate([*numbers, numbers[0]])]})
    assert r.json()["added"] == 4
    mailing = await api.mailing()
    await api.post(f"/api/v1/mailings/{mailing}/start", None)
    with anyio.fail_after(20):
        status = ""
        while status != "finished":
            await anyio.sleep(0.05)
            status = (await api.get(f"/api/v1/mailings/{mailing}")).json()["status"]
    async with api.open_stream(f"/api/v1/mailings/{mailing}/live") as stream:
        _, status = await stream.message()
    counts = status["counts"]
    assert (counts["recipients"], counts["sent"]) == (3, 3)
    assert counts["skipped"] == {"duplicate": 1, "suppressed": 0, "invalid_phone": 0,
                                 "policy": 0, "empty": 0, "too_long": 0, "control": 0}
    assert status["mailing"]["status"] == "finished"


async def test_a_stream_of_no_mailing_is_a_404(api: Api) -> None:
    r = await api.get("/api/v1/mailings/999/live")
    assert r.status_code == 404
    assert (await api.client.get("/api/v1/mailings/1/live")).status_code == 401


# -- static files --------------------------------------------------------------------------


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>x</title>", encoding="utf-8")
    (folder / "app.js").write_text("console.log(1)", encoding="utf-8")
    (folder / "app.css").write_text("body{}", encoding="utf-8")
    (folder / "logo.svg").write_text("<svg/>", encoding="utf-8")
    (folder / "notes.txt").write_text("secret", encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.js").write_text("x", encoding="utf-8")
    (tmp_path / "outside.js").write_text("outside", encoding="utf-8")
    app = Litestar(route_handlers=static_routes("pages", "/pages", root=folder),
                   exception_handlers=exception_handlers())
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
        yield client


async def test_static_files_by_exact_name_with_their_types(
        files: httpx.AsyncClient) -> None:
    for path in ("/pages", "/pages/"):
        r = await files.get(path)
        assert r.status_code == 200 and r.text.startswith("<!doctype html>")
        assert r.headers["content-type"] == "text/html; charset=utf-8"
    for name, kind in (("app.js", "application/javascript; charset=utf-8"),
                       ("app.css", "text/css; charset=utf-8"), ("logo.svg", "image/svg+xml"),
                       ("index.html", "text/html; charset=utf-8")):
        r = await files.get(f"/pages/static/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == kind
    r = await files.get("/pages/static/app.js")
    assert r.text == "console.log(1)"
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-cache"


async def test_an_etag_answers_304(files: httpx.AsyncClient) -> None:
    r = await files.get("/pages/static/app.css")
    etag = r.headers["etag"]
    again = await files.get("/pages/static/app.css", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    other = await files.get("/pages/static/app.css", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.text == "body{}"
    assert (await files.get("/pages/static/app.js")).headers["etag"] != etag


@pytest.mark.parametrize("path", [
    "/pages/static/notes.txt", "/pages/static/missing.js", "/pages/static/..%2Foutside.js",
    "/pages/static/../outside.js", "/pages/static/sub/deep.js", "/pages/static/sub%2Fdeep.js",
    "/pages/static/.js", "/pages/static/sub", "/pages/static/%2e%2e"])
async def test_nothing_else_is_served(files: httpx.AsyncClient, path: str) -> None:
    r = await files.get(path)
    assert r.status_code == 404, (path, r.text)
    assert "outside" not in r.text and "secret" not in r.text


async def test_the_console_page_is_the_packaged_index(api: Api) -> None:
    packaged = resources.files("engine.api").joinpath("static", "console", "index.html")
    r = await api.client.get("/console")  # no token needed
    if packaged.is_file():
        assert r.status_code == 200
        assert r.content == packaged.read_bytes()
        assert r.headers["content-security-policy"] == CSP
    else:  # the page is not written yet
        assert r.status_code == 404
    assert (await api.client.get("/console/static/nothing.js")).status_code == 404


# -- herald serve -------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "server"), [("asyncio", "uvicorn"), ("trio", "hypercorn")])
def test_sigterm_ends_an_open_stream_within_the_grace(
        tmp_path: Path, backend: str, server: str) -> None:
    config = write_config(tmp_path, driver="null", default_region="RU", shutdown_grace=2,
                          extra=f'\n[api]\nserver = "{server}"\n')
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
         "--port", str(port), "--backend", backend],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(base, proc)
        secret = create_token(config, "sender")
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
            r = client.post("/api/v1/profiles/import", json={
                "database": "main", "matching": "phone", "profiles": [{"phone": phones(1)[0]}]})
            assert r.status_code == 200, r.text
            r = client.post("/api/v1/mailings", json={
                "name": "otp", "kind": "trigger", "resource": "news", "database": "main",
                "template": "code {apicontent.code}"})
            assert r.status_code == 201, r.text
            with client.stream("GET", f"/api/v1/mailings/{r.json()['id']}/live") as live:
                assert live.status_code == 200
                first = next(live.iter_raw())
                assert first.startswith(b"event: status\ndata: {")
                proc.send_signal(signal.SIGTERM)
                t0 = time.monotonic()
                assert proc.wait(timeout=20) == 0
                assert time.monotonic() - t0 < 2 + 3  # the grace, and a margin
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
