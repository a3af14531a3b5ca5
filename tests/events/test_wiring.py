"""The hooks run where the issue says: in ``MailingService.running`` (``herald serve``)
and in ``herald worker``'s ``Worker``, on the real stores, and stop with them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.cluster.worker import Worker
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.service import MailingService
from engine.testing import FakeGateway, write_config
from tests.events.fakes import eventually
from tests.events.sink import Sink

pytestmark = pytest.mark.anyio


def hook(url: str) -> str:
    return f"""
[hooks.crm]
transport = "http"
url = "{url}"
events = ["import_api"]
flush_interval = 0
"""


async def state_is(herald: Herald, check: Callable[[Any], bool]) -> None:
    """Until hook crm's row passes ``check`` (10 s at most)."""
    with anyio.fail_after(10):
        while True:
            if any(s.name == "crm" and check(s) for s in await herald.store.hook_states()):
                return
            await anyio.sleep(0.01)


async def seen(herald: Herald) -> None:
    """Until a deliverer claimed hook crm (it starts at the end of the record)."""
    await state_is(herald, lambda s: bool(s.owner))


async def imported(herald: Herald, n: int) -> None:
    db = await herald.store.database_id("main", create=True)
    await herald.store.record_import_event("import_api", 1_764_657_000.0, db,
                                           json.dumps({"added": n}).encode())


def added(sink: Sink) -> list[int]:
    return [m["event_data"]["added"] for r in sink.requests for m in json.loads(r.body)]


async def test_the_mailing_service_delivers_the_hooks_and_gives_them_up_on_exit(
        open_herald: Callable[..., Any]) -> None:
    async with Sink() as sink:
        herald = await open_herald(extra=hook(sink.url))
        async with herald:
            async with MailingService.running(herald):
                await seen(herald)
                await imported(herald, 3)
                await eventually(lambda: added(sink) == [3])
                await state_is(herald, lambda s: s.delivered == 1)
            (state,) = await herald.store.hook_states()
            assert state.owner == ""  # released: the next process takes it at once


async def test_no_hooks_no_deliverer(open_herald: Callable[..., Any]) -> None:
    herald = await open_herald()
    async with herald:
        async with MailingService.running(herald):
            await anyio.sleep(0.05)
        assert await herald.store.hook_states() == []


async def test_herald_worker_delivers_the_hooks(tmp_path: Path, pg_url: str) -> None:
    async with Sink() as sink:
        config = write_config(tmp_path, database=pg_url,
                              extra=hook(sink.url) + "[cluster]\nlease_ttl = 2\n")
        gateway = FakeGateway()
        async with await Herald.open(config, plugins=load_plugins(gateway.plugin())) as herald:
            worker = Worker(herald)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await seen(herald)
                assert (await herald.store.hook_states())[0].owner == worker.name
                await imported(herald, 5)
                await eventually(lambda: added(sink) == [5])
                worker.stop()
            (state,) = await herald.store.hook_states()
            assert state.owner == ""
