"""Control that reaches every worker at once (LISTEN/NOTIFY), and a worker's /metrics.

The heartbeat here is 5 s: a pause that stops a chunk within a second, or a start that an
idle worker claims within a second (its idle poll stretched to 30 s), can only have come
through the notification.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from engine.cli.worker import serve_metrics
from engine.cluster import control
from engine.cluster import worker as worker_module
from engine.cluster.worker import Worker
from engine.demo import generate
from engine.runner import Herald
from engine.service import MailingService, MailingSpec
from engine.testing import FakeGateway

#: No heartbeat within the measurements (its first beat is at the worker's start).
CLUSTER = "\n[cluster]\nchunk_profiles = 1000\nlease_ttl = 30\nheartbeat = 5\n"


async def _herald(open_herald: Callable[..., Any], url: str, gateway: FakeGateway,
                  extra: str = "") -> Herald:
    herald: Herald = await open_herald(gateway, database=url, default_region="RU",
                                       extra=CLUSTER + extra, shutdown_grace=1,
                                       batch_size=25)
    return herald


async def _create(service: MailingService, profiles: int) -> int:
    await generate(service.herald.store, profiles=profiles, database="main", messy=False)
    m = await service.create(MailingSpec(name="b", kind="broadcast", resource="news",
                                         template="Hi", database="main"))
    return m.id


async def _until(check: Callable[[], bool], limit: float = 10.0) -> None:
    with anyio.fail_after(limit):
        while not check():  # noqa: ASYNC110 - polls what the worker shows
            await anyio.sleep(0.005)


@pytest.mark.anyio
async def test_a_pause_reaches_a_worker_within_a_second(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    gateway = FakeGateway(latency=0.2)  # a chunk lasts seconds; a batch, 0.2 s
    async with await _herald(open_herald, pg_url, gateway) as herald:
        worker = Worker(herald, concurrency=1)
        async with MailingService.running(herald) as service, \
                anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            mailing_id = await _create(service, 3000)
            started = await service.start(mailing_id)
            await _until(lambda: worker.statistics().chunks_held == 1 and worker.statistics()
                         .sent > 0)
            t0 = time.monotonic()
            assert (await service.pause(mailing_id)).status == "paused"
            await _until(lambda: worker.statistics().chunks_held == 0, limit=4.5)
            elapsed = time.monotonic() - t0
            sent = len(gateway.accepted)
            worker.stop()
        assert elapsed < 1.0, f"the pause took {elapsed:.2f} s to stop the chunk"
        assert started.run_id is not None
        chunks = await herald.store.chunks(started.run_id)
        assert chunks[0].state == "pending" and chunks[0].checkpoint > chunks[0].lo
        assert sent < 3000 and len(gateway.accepted) == sent


@pytest.mark.anyio
async def test_a_start_wakes_an_idle_worker(
    open_herald: Callable[..., Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "IDLE_POLL", 30.0)
    gateway = FakeGateway(latency=0.01)
    async with await _herald(open_herald, pg_url, gateway) as herald:
        worker = Worker(herald, concurrency=2)
        async with MailingService.running(herald) as service, \
                anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            mailing_id = await _create(service, 500)
            await anyio.sleep(0.3)  # both slots found nothing and sleep
            t0 = time.monotonic()
            await service.start(mailing_id)
            await _until(lambda: worker.statistics().chunks_held > 0 or gateway.accepted,
                         limit=4.5)
            elapsed = time.monotonic() - t0
            worker.stop()
        assert elapsed < 1.0, f"the start took {elapsed:.2f} s to reach the idle worker"


@pytest.mark.anyio
async def test_a_malformed_message_is_ignored_and_a_good_one_arrives(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    async with await _herald(open_herald, pg_url, FakeGateway()) as herald:
        got: list[control.Control | None] = []
        async with anyio.create_task_group() as tg:
            await tg.start(control.listen, herald.store, got.append)
            await herald.store.notify_control("not json")  # type: ignore[attr-defined]
            assert await control.notify(herald.store, 7, "cancel")
            await _until(lambda: bool(got), limit=2)
            tg.cancel_scope.cancel()
        assert got == [control.Control(7, "cancel")]


async def _scrape(port: int) -> str:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        with anyio.fail_after(5):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
    head, _, body = data.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    return body


def _value(body: str, metric: str, sender: str | None = None) -> float:
    for line in body.splitlines():
        if line.startswith(metric + "{") and (
                sender is None or f'sender="{sender}"' in line):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {metric} ({sender}) in\n{body}")


@pytest.mark.anyio
async def test_metrics_show_chunks_and_senders(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    gateway = FakeGateway()
    async with await _herald(open_herald, pg_url, gateway) as herald:
        worker = Worker(herald, concurrency=2)
        async with MailingService.running(herald) as service, \
                anyio.create_task_group() as tg:
            port = await tg.start(serve_metrics, 0, worker)
            tg.start_soon(worker.run)
            mailing_id = await _create(service, 2500)
            await service.start(mailing_id)
            await _until(lambda: worker.statistics().chunks_done == 3)
            body = await _scrape(port)
            worker.stop()
            tg.cancel_scope.cancel()
    assert _value(body, "herald_worker_chunks_done_total") == 3
    assert _value(body, "herald_worker_chunks_held") == 0
    sent = len(gateway.accepted)
    assert sent > 2000  # the audience's reachable profiles
    assert _value(body, "herald_sender_sent_total", "s1") == sent
    assert _value(body, "herald_worker_sent_total") == sent
    assert _value(body, "herald_sender_limit_unreachable", "s1") == 0
    assert "# TYPE herald_sender_limit_unreachable gauge" in body


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
async def test_metrics_say_redis_is_unreachable_for_a_sender(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    extra = (f'redis = "redis://127.0.0.1:{_closed_port()}/0"\n'
             '[senders.s2]\ngateway = "gw"\ncaller_id = "ACME"\nrate = 10\nburst = 5\n')
    async with await _herald(open_herald, pg_url, FakeGateway(), extra) as herald:
        worker = Worker(herald)
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_metrics, 0, worker)
            before = await _scrape(port)
            limit = herald.limits.get("s2", herald.config.senders["s2"])
            with anyio.move_on_after(0.5):
                await limit.acquire(1)  # fails closed: waits, granting nothing
            after = await _scrape(port)
            tg.cancel_scope.cancel()
    assert _value(before, "herald_sender_limit_unreachable", "s2") == 0
    assert _value(after, "herald_sender_limit_unreachable", "s2") == 1
    assert _value(after, "herald_sender_limit_tokens", "s2") == 0
    assert _value(after, "herald_sender_limit_rate", "s2") == 10
    # s1 is unlimited: it needs no Redis and goes on sending
    assert _value(after, "herald_sender_limit_unreachable", "s1") == 0
