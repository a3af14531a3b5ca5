"""The real thing: ``herald serve`` in a subprocess on a loopback port, on asyncio and trio
and on each HTTP server (``[api] server``); a trigger sent through it lands at the gateway,
and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from engine.api import TokenStore
from engine.store.sqlite import SQLiteStore
from engine.testing import write_config
from tests.servers import free_port, wait_healthy


@pytest.mark.parametrize(("backend", "server", "runs"), [
    ("asyncio", "auto", "uvicorn"), ("asyncio", "hypercorn", "hypercorn"),
    ("trio", "auto", "hypercorn")])
def test_herald_serve(tmp_path: Path, backend: str, server: str, runs: str) -> None:
    config = write_config(tmp_path, driver="file", default_region="RU",
                          extra=f'\n[api]\nserver = "{server}"\n')
    store = SQLiteStore.open(tmp_path / "herald.db")
    _, secret = anyio.run(TokenStore(store).create, "sender")
    anyio.run(store.aclose)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
         "--port", str(port), "--backend", backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(base, proc)
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
            assert httpx.get(f"{base}/api/v1/mailings").status_code == 401
            r = client.post("/api/v1/profiles/import", json={
                "database": "main", "matching": "phone", "resource": "news",
                "profiles": [{"phone": "8 916 123-45-67", "_fname": "Ann"}],
            })
            assert r.json()["added"] == 1
            r = client.post("/api/v1/mailings", json={
                "name": "otp", "kind": "trigger", "resource": "news", "database": "main",
                "template": "{lead._fname}, your code is {apicontent.code}",
            })
            mailing = r.json()["id"]
            r = client.post(f"/api/v1/mailings/{mailing}/trigger",
                            json={"profile_id": 1, "content": {"code": backend}})
            assert r.status_code == 202
            message_id = r.json()["message_id"]
            deadline = time.monotonic() + 20
            while client.get(f"/api/v1/mailings/{mailing}").json()["sent"] < 1:
                assert time.monotonic() < deadline, "the trigger was not sent"
                time.sleep(0.02)
            assert 'herald_sender_sent_total{sender="s1"} 1' in client.get("/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [line] = (tmp_path / "sent.jsonl").read_text().splitlines()
    sent = json.loads(line)
    assert (sent["id"], sent["to"], sent["text"]) == (
        message_id, "+79161234567", f"Ann, your code is {backend}")
    assert proc.stderr is not None
    assert f"serving http://127.0.0.1:{port} on {backend} with {runs}" in (
        proc.stderr.read().decode())


def test_uvicorn_on_trio_is_refused_at_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, driver="null", extra='\n[api]\nserver = "uvicorn"\n')
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
         "--port", str(free_port()), "--backend", "trio"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert '[api] server = "uvicorn" runs on asyncio only' in done.stderr
    assert "api.server" in done.stderr


def test_herald_serve_on_a_taken_port(tmp_path: Path) -> None:
    config = write_config(tmp_path, driver="null")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
             "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
