"""Workspaces for the torture tests: a config on the `http` driver, an audience, the CLI.

``make_workspace(ws, url, ...)`` writes a config whose only gateway is the ``http`` driver
pointed at ``url`` and generates an audience; ``herald(ws, backend, *args)`` starts the
CLI on it on the given backend (``HERALD_BACKEND``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.demo import AudiencePlan, generate
from engine.store.sqlite import SQLiteStore

CONFIG = """\
[engine]
database = "herald.db"
default_region = "RU"
chunk_size = 200
batch_size = {batch}
shutdown_grace = 2
[gateways.sink]
driver = "http"
url = "{url}"
batch_size = {batch}
max_connections = {concurrency}
timeout = 5
idempotent = {idempotent}
[senders.s1]
gateway = "sink"
caller_id = "ACME"
rate = {rate}
burst = {burst}
concurrency = {concurrency}
[senders.s1.retry.transient]
attempts = 10
base = 0.05
max_delay = 0.2
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1", percent = 100 }}] }}]
[resources.news]
virtual_sender = "v"
"""


def make_workspace(
    ws: Path,
    url: str,
    *,
    idempotent: bool,
    profiles: int,
    batch: int,
    concurrency: int,
    rate: float,
    burst: int,
) -> AudiencePlan:
    (ws / "herald.toml").write_text(
        CONFIG.format(url=url, idempotent=str(idempotent).lower(), batch=batch,
                      concurrency=concurrency, rate=rate, burst=burst),
        encoding="utf-8",
    )
    (ws / "t.txt").write_text("Hi {lead._fname}", encoding="utf-8")
    store = SQLiteStore.open(ws / "herald.db")
    try:
        return generate(store, profiles=profiles, database="customers")
    finally:
        store.conn.close()


def herald(ws: Path, backend: str, *args: str) -> subprocess.Popen[str]:
    """``herald --config ws/herald.toml ARGS`` on ``backend``."""
    env = {**os.environ, "HERALD_BACKEND": backend}
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
