"""Delivery receipts end to end: the simulated gateway posts them to `herald serve`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from engine.simulator import GatewaySimulator
from engine.testing import create_token
from tests.servers import free_port, wait_healthy

SECRET = "s3cret-receipts-0123456789"

CONFIG = """\
[engine]
database = "herald.db"
trigger_linger = 0
[gateways.gw]
driver = "http"
url = "{url}"
receipt_secret = "{secret}"
[senders.s1]
gateway = "gw"
caller_id = "ACME"
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1" }}] }}]
[resources.news]
virtual_sender = "v"
"""


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_receipts_from_the_gateway_reach_the_recipients(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    receipts = f"{base}/api/v1/dlr/gw?secret={SECRET}"
    async with GatewaySimulator(receipt_url=receipts, receipt_delay=0.05,
                                undelivered_rate=0.5, seed=4) as sim:
        config = tmp_path / "herald.toml"
        config.write_text(CONFIG.format(url=sim.send_url, secret=SECRET), encoding="utf-8")
        token = create_token(config, "sender")
        # Popen only forks: it does not wait for the server
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            await anyio.to_thread.run_sync(wait_healthy, base, proc)
            auth = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10,
                                         trust_env=False) as client:
                r = await client.post("/api/v1/profiles/import", json={
                    "database": "main", "matching": "phone", "resource": "news",
                    "profiles": [{"phone": f"+4479110000{i:02d}"} for i in range(6)]})
                assert r.status_code == 200, r.text
                r = await client.post("/api/v1/mailings", json={
                    "name": "otp", "kind": "trigger", "resource": "news",
                    "database": "main", "template": "code 1"})
                mailing = r.json()["id"]
                r = await client.post(f"/api/v1/mailings/{mailing}/trigger/batch", json={
                    "items": [{"phone": f"+4479110000{i:02d}"} for i in range(6)]})
                assert all(item["message_id"] for item in r.json()["items"]), r.text
                deadline = time.monotonic() + 20
                while True:
                    log = (await client.get(f"/api/v1/mailings/{mailing}/log")).json()
                    if log["delivered"] + log["undelivered"] == 6:
                        break
                    assert time.monotonic() < deadline, log
                    await anyio.sleep(0.05)
                # a receipt without the secret is refused
                r = await client.post("/api/v1/dlr/gw", content=b'{"receipts":[]}')
                assert r.status_code == 401
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert log["undelivered"] > 0 and log["delivered"] > 0
    assert sim.statistics().receipts_sent == 6
