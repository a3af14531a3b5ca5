"""Mailings through the http driver to the gateway simulator, over loopback, with faults."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine.runner import Herald
from engine.simulator import GatewaySimulator
from engine.store.base import ImportRecord

pytestmark = pytest.mark.anyio

CONFIG = """\
[engine]
database = "herald.db"
batch_size = 25
[gateways.a]
driver = "http"
url = "{url_a}"
batch_size = 25
timeout = 0.3
idempotent = {idempotent}
[gateways.b]
driver = "http"
url = "{url_b}"
batch_size = 25
timeout = 0.3
[senders.sa]
gateway = "a"
caller_id = "A"
[senders.sb]
gateway = "b"
caller_id = "B"
{retries}
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "sa", percent = {pa} }}, {{ sender = "sb", percent = {pb} }}] }}]
[resources.news]
virtual_sender = "v"
"""

FAST_RETRIES = "".join(
    f"[senders.{s}.retry.{kind}]\nattempts = 8\nbase = 0.01\nmax_delay = 0.05\n"
    for s in ("sa", "sb") for kind in ("transient", "throttled", "message")
)


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def open_herald(tmp_path: Path, url_a: str, url_b: str, *, pa: int, pb: int,
                      idempotent: bool = False) -> Herald:
    path = tmp_path / "herald.toml"
    path.write_text(CONFIG.format(url_a=url_a, url_b=url_b, pa=pa, pb=pb,
                                  idempotent=str(idempotent).lower(), retries=FAST_RETRIES),
                    encoding="utf-8")
    return await Herald.open(path)


async def audience(herald: Herald, n: int) -> None:
    db = await herald.store.database_id("main", create=True)
    rid = await herald.store.resource_id("news")
    await herald.store.import_profiles(
        db, [ImportRecord(None, f"+4479{i:08d}", None, {}) for i in range(n)],
        matching="phone", resource_id=rid,
    )


async def test_under_faults_every_message_ends_accepted_or_failed_and_none_twice(
    tmp_path: Path,
) -> None:
    async with GatewaySimulator(
        latency=0.002, error_rate=0.05, timeout_rate=0.05, hang=1.0, throttle_rate=0.05,
        retry_after=0.02, reject_rate=0.02, idempotent=True, seed=11,
    ) as sim:
        async with await open_herald(tmp_path, sim.send_url, sim.send_url, pa=100, pb=0,
                                     idempotent=True) as herald:
            await audience(herald, 1000)
            log = await herald.send(resource="news", database="main", template="hello")
            rows = herald.store.conn.execute(  # type: ignore[attr-defined]
                "SELECT state, reason, error FROM recipients"
            ).fetchall()
        stats = sim.statistics()
    assert log.recipients == 1000
    assert log.sent + log.failed == 1000 and log.unknown == log.pending == 0
    assert all(reason and error for state, reason, error in rows if state == "failed")
    assert log.failed_reasons.keys() <= {"rejected", "retries_exhausted"}
    # the gateway saw timeouts and throttling, yet accepted no message twice
    assert stats.timeouts > 0 and stats.throttled > 0 and stats.errors > 0
    assert stats.accepted_twice == 0
    assert stats.accepted == log.sent


async def test_with_one_gateway_down_all_traffic_reaches_the_other(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{closed_port()}/send"
    async with GatewaySimulator(latency=0.001) as sim:
        async with await open_herald(tmp_path, down, sim.send_url, pa=50, pb=50) as herald:
            await audience(herald, 500)
            log = await herald.send(resource="news", database="main", template="hello")
        stats = sim.statistics()
    assert log.sent == 500 and log.failed == 0
    assert stats.accepted == 500 and stats.accepted_twice == 0
