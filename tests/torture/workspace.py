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
from engine.testing import in_workspace


def http_config(
    url: str, *, idempotent: bool, batch: int, concurrency: int, rate: float = 0,
    burst: int = 0, connections: int | None = None, timeout: float = 5,
    retry_base: float = 0.05, retry_max: float = 0.2, grace: float = 2,
) -> str:
    """A config whose only gateway is the ``http`` driver at ``url`` (sender ``s1``,
    resource ``news``), with quick retries."""
    retries = "".join(
        f"[senders.s1.retry.{kind}]\nattempts = {attempts}\nbase = {retry_base}\n"
        f"max_delay = {retry_max}\n"
        for kind, attempts in (("transient", 10), ("throttled", 40), ("message", 10))
    )
    return f"""\
[engine]
database = "herald.db"
default_region = "RU"
chunk_size = 200
batch_size = {batch}
shutdown_grace = {grace}
[gateways.sink]
driver = "http"
url = "{url}"
batch_size = {batch}
max_connections = {connections or concurrency}
timeout = {timeout}
idempotent = {str(idempotent).lower()}
[senders.s1]
gateway = "sink"
caller_id = "ACME"
rate = {rate}
burst = {burst}
concurrency = {concurrency}
{retries}[virtual_senders.v]
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
        http_config(url, idempotent=idempotent, batch=batch, concurrency=concurrency,
                    rate=rate, burst=burst),
        encoding="utf-8",
    )
    (ws / "t.txt").write_text("Hi {lead._fname}", encoding="utf-8")
    # into the store the config names (or $HERALD_DATABASE: the PostgreSQL legs)
    return in_workspace(ws / "herald.toml",
                        lambda store: generate(store, profiles=profiles, database="customers"))


def herald(ws: Path, backend: str, *args: str) -> subprocess.Popen[str]:
    """``herald --config ws/herald.toml ARGS`` on ``backend``."""
    env = {**os.environ, "HERALD_BACKEND": backend}
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
