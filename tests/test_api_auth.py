"""Bearer tokens and roles: every route but /healthz and receipts needs a token (none: 401),
a viewer reads, a sender also writes, an admin does everything; tokens are stored as
hashes; ``herald token create|list|revoke``."""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from engine.api import TokenStore, create_app
from engine.api.tokens import PREFIX, allows
from engine.cli.tokens import add_token_parsers as add_api_parsers
from engine.runner import Herald
from engine.service import MailingService
from engine.store.sqlite import SQLiteStore
from engine.testing import FakeGateway, write_config

pytestmark = pytest.mark.anyio

#: Routes a gateway or a load balancer calls without a token.
OPEN = {"/healthz", "/api/v1/healthz", "/api/v1/dlr/{gateway}", "/api/v1/inbound/{gateway}"}
PATH_VALUES = {"{mailing_id}": "1", "{name}": "news", "{gateway}": "gw", "{image_id}": "1",
               "{directory_id}": "1"}


@pytest.fixture
async def herald(open_herald: Callable[..., Any], request: pytest.FixtureRequest
                 ) -> AsyncIterator[Herald]:
    # a test that tries every route with bad tokens makes more than the 30 failures a
    # minute that get a client 429 (test_bad_tokens_get_429_... checks that limit)
    extra = ("\n[api]\nauth_failures_per_minute = 10000\n"
             if request.node.get_closest_marker("many_failures") else "")
    async with await open_herald(FakeGateway(), default_region="RU", extra=extra) as herald:
        yield herald


@pytest.fixture
async def client(herald: Herald) -> AsyncIterator[httpx.AsyncClient]:
    async with MailingService.running(herald) as service:
        transport = httpx.ASGITransport(create_app(herald, service))
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


#: POST routes that only read: a viewer may call them.
VIEWER_POSTS = {"/api/v1/templates/preview"}


async def routes(client: httpx.AsyncClient, secret: str) -> list[tuple[str, str]]:
    """(method, url) of every route in the OpenAPI document, path parameters filled in."""
    doc = (await client.get("/openapi.json", headers=bearer(secret))).json()
    out = []
    for path, item in doc["paths"].items():
        url = path
        for name, value in PATH_VALUES.items():
            url = url.replace(name, value)
        # Altcraft's routes answer a refusal with HTTP 200 and its code in the envelope,
        # as Altcraft does: tests/test_altcraft_api.py checks their 401s and 403s.
        if path.startswith("/api/v1.1/"):
            continue
        out += [(method.upper(), url) for method in item if path not in OPEN]
    return out


@pytest.mark.many_failures
async def test_every_route_needs_a_token(herald: Herald, client: httpx.AsyncClient) -> None:
    _, admin = await TokenStore(herald.store).create("admin")
    found = await routes(client, admin)
    assert len(found) >= 15
    for method, url in [*found, ("GET", "/openapi.json")]:
        r = await client.request(method, url)
        assert r.status_code == 401, (method, url)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "error" in r.json()
        r = await client.request(method, url, headers=bearer(PREFIX + "x" * 43))
        assert r.status_code == 401, (method, url)
    assert (await client.get("/healthz")).status_code == 200


async def test_roles(herald: Herald, client: httpx.AsyncClient) -> None:
    tokens = TokenStore(herald.store)
    secrets = {role: (await tokens.create(role))[1] for role in ("viewer", "sender", "admin")}
    found = await routes(client, secrets["viewer"])
    for method, url in found:
        needed = "viewer" if method == "GET" or url in VIEWER_POSTS else "sender"
        for role, secret in secrets.items():
            r = await client.request(method, url, headers=bearer(secret))
            if allows(role, needed):
                assert r.status_code not in (401, 403), (role, method, url, r.text)
            else:
                assert r.status_code == 403, (role, method, url)
                assert f"needs {needed}" in r.json()["error"]


async def test_authorization_header_forms(herald: Herald, client: httpx.AsyncClient) -> None:
    _, secret = await TokenStore(herald.store).create("viewer")
    url = "/api/v1/resources"
    assert (await client.get(url, headers={"Authorization": f"bearer {secret}"})).is_success
    for value in (secret, f"Basic {secret}", "Bearer", "Bearer ", f"Bearer {secret}x",
                  "Bearer hrld_", "Bearer é".encode()):
        r = await client.get(url, headers={"Authorization": value})
        assert r.status_code == 401, value


async def test_revoked_token_stops_working(herald: Herald) -> None:
    async with MailingService.running(herald) as service:
        app = create_app(herald, service)
        tokens: TokenStore = app.state.api.tokens
        token, secret = await tokens.create("viewer")
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
            url = "/api/v1/resources"
            assert (await client.get(url, headers=bearer(secret))).status_code == 200
            await tokens.revoke(token.id)
            assert (await client.get(url, headers=bearer(secret))).status_code == 401

            # Revoked from another process (herald token revoke): cached for the ttl.
            other, other_secret = await tokens.create("viewer")
            assert (await client.get(url, headers=bearer(other_secret))).status_code == 200
            await TokenStore(herald.store).revoke(other.id)
            assert (await client.get(url, headers=bearer(other_secret))).status_code == 200
            tokens.clock = lambda: time.monotonic() + tokens.ttl
            assert (await client.get(url, headers=bearer(other_secret))).status_code == 401


async def test_tokens_are_stored_as_hashes(tmp_path: Path) -> None:
    store = SQLiteStore.open(tmp_path / "herald.db")
    tokens = TokenStore(store)
    token, secret = await tokens.create("sender", name="crm", group="marketing")
    assert secret.startswith("hrld_") and len(secret) == len("hrld_") + 43
    assert (token.role, token.name, token.group) == ("sender", "crm", "marketing")
    rows = store.conn.execute("SELECT * FROM api_tokens").fetchall()
    assert not any(secret in str(v) for row in rows for v in row)
    [(stored,)] = store.conn.execute("SELECT hash FROM api_tokens").fetchall()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert await tokens.verify(secret) == token
    assert await tokens.verify(secret[:-1]) is None
    assert (await tokens.create("viewer"))[1] != secret


async def test_verified_tokens_are_not_read_again(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore.open(tmp_path / "herald.db")
    tokens = TokenStore(store)
    _, secret = await tokens.create("viewer")
    reads: list[str] = []
    live_token = store.live_token

    async def counted(digest: str) -> Any:
        reads.append(digest)
        return await live_token(digest)

    monkeypatch.setattr(store, "live_token", counted)
    for _ in range(100):
        assert await tokens.verify(secret) is not None
    assert len(reads) == 1


async def test_bad_roles_and_names(tmp_path: Path) -> None:
    tokens = TokenStore(SQLiteStore.open(tmp_path / "herald.db"))
    from engine.errors import InputError, NotFound

    with pytest.raises(InputError, match="role must be one of viewer, sender, admin"):
        await tokens.create("root")
    with pytest.raises(InputError, match="group"):
        await tokens.create("viewer", group="")
    with pytest.raises(NotFound):
        await tokens.revoke(42)


def test_token_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, driver="null"))

    def herald(*argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser(prog="herald")
        parser.add_argument("--config")
        add_api_parsers(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["--config", config, *argv])
        code = args.func(args)
        return code, capsys.readouterr().out

    code, out = herald("token", "create", "--role", "sender", "--name", "crm", "--group", "ads")
    assert code == 0
    secret = out.split()[-1]
    assert secret.startswith("hrld_")
    code, out = herald("token", "list")
    assert "sender" in out and "ads" in out and "crm" in out and secret not in out
    code, out = herald("token", "list", "--json")
    assert '"group": "ads"' in out
    assert herald("token", "revoke", "1")[0] == 0
    tokens = TokenStore(SQLiteStore.open(tmp_path / "herald.db"))
    assert anyio.run(tokens.verify, secret) is None
    with pytest.raises(SystemExit):
        herald("token", "create", "--role", "root")


# -- failed authentications (issue 20) ---------------------------------------------------


def test_an_address_is_blocked_for_a_minute_after_its_budget_of_failures() -> None:
    from engine.api.auth_failures import AuthFailures

    failures = AuthFailures(per_minute=3)
    assert [failures.failed("a", now) for now in (0.0, 1.0, 2.0)] == [True, False, False]
    assert failures.blocked("a", 2.5) == 59.5
    assert failures.blocked("b", 2.5) is None  # another address is not
    assert failures.blocked("a", 62.0) is None  # a minute later, a fresh window
    assert failures.failed("a", 62.0) is True  # logged again, once
    assert (failures.total, failures.refused) == (4, 1)


def test_failures_spread_over_minutes_never_block() -> None:
    from engine.api.auth_failures import AuthFailures

    failures = AuthFailures(per_minute=3)
    for minute in range(10):
        for second in (0.0, 30.0):
            failures.failed("a", minute * 61 + second)
            assert failures.blocked("a", minute * 61 + second) is None


def test_the_addresses_kept_are_bounded() -> None:
    from engine.api.auth_failures import AuthFailures

    failures = AuthFailures(per_minute=3, max_addresses=100)
    for i in range(1000):
        failures.failed(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(failures._addresses) <= 100


async def test_bad_tokens_get_429_then_401_a_minute_later_and_are_counted(
    herald: Herald, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    async with MailingService.running(herald) as service:
        app = create_app(herald, service)
        app.state.api.clock = lambda: now[0]
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            statuses = [(await client.get("/api/v1/mailings", headers=bearer(f"hrld_{i}")))
                        for i in range(40)]
            assert [r.status_code for r in statuses] == [401] * 30 + [429] * 10
            assert statuses[-1].headers["Retry-After"] == "60"
            # a good token from a blocked address waits too: no guessing meanwhile
            _, viewer = await TokenStore(herald.store).create("viewer")
            assert (await client.get("/metrics", headers=bearer(viewer))).status_code == 429
            now[0] += 61
            r = await client.get("/metrics", headers=bearer(viewer))
            assert r.status_code == 200
            assert "herald_auth_failures_total 30" in r.text
            assert "herald_auth_refused_total 11" in r.text
            assert (await client.get("/api/v1/mailings",
                                     headers=bearer("hrld_x"))).status_code == 401
    logged = [rec for rec in caplog.records if rec.name.startswith("engine")]
    assert len(logged) == 2  # once a minute per address
    assert "hrld_" not in caplog.text
