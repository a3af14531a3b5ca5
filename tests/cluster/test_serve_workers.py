"""``herald serve --workers N``: N processes on one socket, any of which answers for any
mailing (kept in PostgreSQL); SIGTERM to the parent stops them all. Without a
``[cluster]`` it refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.testing import create_token, write_config
from tests.servers import free_port, wait_healthy

CLUSTER = "\n[cluster]\nlease_ttl = 1\n"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_two_workers_answer_for_one_mailing(tmp_path: Path, pg_url: str, backend: str) -> None:
    config = write_config(tmp_path, driver="null", database=pg_url, default_region="RU",
                          extra=CLUSTER)
    secret = create_token(config, "admin")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
         "--workers", "2", "--port", str(port), "--backend", backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(base, proc)
        auth = {"Authorization": f"Bearer {secret}"}
        r = httpx.post(f"{base}/api/v1/profiles/import", headers=auth, timeout=10, json={
            "database": "main", "matching": "phone", "resource": "news",
            "profiles": [{"phone": "8 916 123-45-67"}],
        })
        assert r.status_code == 200, r.text
        r = httpx.post(f"{base}/api/v1/mailings", headers=auth, timeout=10, json={
            "name": "otp", "kind": "trigger", "resource": "news", "database": "main",
            "template": "Your code is {apicontent.code}",
        })
        assert r.status_code == 201, r.text
        mailing = r.json()
        pids: set[str] = set()
        asked = 0
        deadline = time.monotonic() + 30
        while len(pids) < 2 or asked < 40:
            assert time.monotonic() < deadline, f"only {pids} answered"
            asked += 1
            # A connection of its own each time, so the kernel hands it to either process.
            r = httpx.get(f"{base}/api/v1/mailings/{mailing['id']}", headers=auth, timeout=10)
            assert r.status_code == 200, r.text
            got = r.json()
            assert (got["id"], got["name"], got["kind"]) == (mailing["id"], "otp", "trigger")
            pids.add(r.headers["X-Herald-Process"])
        assert str(proc.pid) not in pids  # the parent only waits
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert all(_gone(int(pid)) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert f"2 workers on http://127.0.0.1:{port}" in err
    assert err.count(f"serving http://127.0.0.1:{port} on {backend}") == 2, err


def test_workers_need_a_cluster(tmp_path: Path) -> None:
    config = write_config(tmp_path, driver="null")
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
         "--workers", "2", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert ("--workers 2 needs a [cluster] (the processes share their mailings through"
            " PostgreSQL)") in done.stderr


@pytest.mark.parametrize("workers", ["0", "x"])
def test_workers_is_a_positive_number(tmp_path: Path, workers: str) -> None:
    config = write_config(tmp_path, driver="null")
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
         "--workers", workers],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "--workers" in done.stderr


def test_one_worker_gone_stops_the_others(tmp_path: Path, pg_url: str) -> None:
    config = write_config(tmp_path, driver="null", database=pg_url, extra=CLUSTER)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(config), "serve",
         "--workers", "2", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(base, proc)
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2:
            assert time.monotonic() < deadline, f"only {pids} answered"
            pids.add(int(httpx.get(f"{base}/healthz", timeout=10).headers["X-Herald-Process"]))
        victim, other = sorted(pids)
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=30) == 128 + signal.SIGKILL  # the worst of the two
        assert _gone(other)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
