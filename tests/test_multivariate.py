"""A/B/n mailings end to end: the test runs to their shares, clicks through the real
short-link route, the wait on a fake clock, the winner to the rest; every profile gets
exactly one message. A manual winner waits for ``pick``; test_share 100 is a plain split."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from engine.api import create_app
from engine.mailings import MailingSpec
from engine.runner import Herald
from engine.service import MailingService
from engine.store.base import ImportRecord
from engine.store.models import Run
from engine.testing import FakeGateway
from tests.test_scheduling import T0, FakeClock

pytestmark = pytest.mark.anyio

TRACKING = '\n[tracking]\ndomain = "t.example.com"\n'
SHORT = re.compile(r"https://t\.example\.com/([0-9A-Za-z]{10})")
BROWSER = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"
           " (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
TEMPLATES = [f"{v}: sale https://shop.example/{v}" for v in ("A", "B", "C")]
PROFILES = 300


async def add_profiles(herald: Herald, n: int) -> set[str]:
    store = herald.store
    db = await store.database_id("main", create=True)
    rid = await store.resource_id("news")
    phones = [f"+447911{i:06d}" for i in range(n)]
    await store.import_profiles(db, [ImportRecord(None, p, None, {}) for p in phones],
                                matching="phone", resource_id=rid)
    return set(phones)


async def until(check: Callable[[], Any]) -> Any:
    with anyio.fail_after(30):
        while True:
            result = await check()
            if result:
                return result
            await anyio.sleep(0.01)


def texts_of(gateway: FakeGateway, run: Run) -> dict[str, str]:
    """Phone -> text of the run's messages."""
    return {m.to: m.text for mid, m in gateway.texts.items()
            if mid.rsplit("-", 1)[0] == run.uid}


async def test_clicks_on_variant_2_make_it_the_winner_for_the_other_70_percent(
    open_herald: Callable[..., Any],
) -> None:
    clock, gateway = FakeClock(), FakeGateway()
    async with await open_herald(gateway, extra=TRACKING) as herald:
        phones = await add_profiles(herald, PROFILES)
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep) as service:
            m = await service.create(MailingSpec(
                name="ab", kind="multivariate", resource="news", database="main",
                templates=TEMPLATES, test_share=30, winner="clicks", wait=5))
            await service.start(m.id)

            async def waiting() -> bool:
                mailing = await herald.store.get_mailing(m.id)
                return mailing.state == "waiting" and mailing.next_launch is not None

            await until(waiting)  # the three tests are done; the wait has begun
            tests = await herald.store.mailing_runs(m.id)
            # clicks through the short-link route: 3 on variant 2's links, 1 on variant 1's
            app = create_app(herald, service)
            transport = httpx.ASGITransport(app, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://t.example.com") as client:
                for run, clicks in zip(tests, (1, 3, 0), strict=True):
                    for text in list(texts_of(gateway, run).values())[:clicks]:
                        [code] = SHORT.findall(text)
                        r = await client.get(f"/{code}", headers={"User-Agent": BROWSER})
                        assert r.status_code == 302, r.text

            async def clicked() -> bool:
                events = await herald.store.events(limit=10_000)
                return sum(e.kind == "click_sms" for e in events) == 4

            await until(clicked)
            assert await herald.store.mailing_runs(m.id) == tests  # no winner before the wait
            clock.advance(5)

            async def winner_done() -> list[Run]:
                runs = await herald.store.mailing_runs(m.id)
                return [r for r in runs[3:] if r.status == "finished"]

            [winner] = await until(winner_done)
            log = await herald.log(winner.id)
            mailing = await herald.store.get_mailing(m.id)
            runs = await service.runs(m.id)
    assert [(r.spec.phase, r.spec.variant) for r in tests] == [
        ("test", 0), ("test", 1), ("test", 2)]
    assert [r.spec.share for r in tests] == [(k * 0.3 / 3, (k + 1) * 0.3 / 3) for k in range(3)]
    assert (winner.spec.phase, winner.spec.variant, winner.spec.share) == ("winner", 1,
                                                                          (0.3, 1.0))
    assert winner.spec.decided == {"1": 1.0, "2": 3.0, "3": 0.0}
    assert (log.variant, log.decided) == (2, {"1": 1.0, "2": 3.0, "3": 0.0})
    assert (mailing.state, mailing.next_launch) == ("done", None)
    # every profile exactly one message; the 70% got variant 2
    assert len(gateway.texts) == PROFILES
    assert {m.to for m in gateway.texts.values()} == phones
    rest = texts_of(gateway, winner)
    assert all(text.startswith("B: ") for text in rest.values())
    sizes = [len(texts_of(gateway, r)) for r in tests]
    assert all(10 <= n <= 50 for n in sizes), sizes  # about 30 each
    assert len(rest) == PROFILES - sum(sizes)
    assert [r.sent for r in runs] == [*sizes, len(rest)]


async def test_a_manual_winner_waits_for_pick_and_a_full_test_share_is_a_plain_split(
    open_herald: Callable[..., Any],
) -> None:
    clock, gateway = FakeClock(T0), FakeGateway()
    async with await open_herald(gateway) as herald:
        phones = await add_profiles(herald, 60)
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep) as service:
            manual = await service.create(MailingSpec(
                name="manual", kind="multivariate", resource="news", database="main",
                templates=TEMPLATES[:2], test_share=50, winner="manual"))
            await service.start(manual.id)

            async def tests_done() -> bool:
                runs = await herald.store.mailing_runs(manual.id)
                return len(runs) == 2 and all(r.status == "finished" for r in runs)

            await until(tests_done)
            clock.advance(86400)  # nothing happens by itself
            assert len(await herald.store.mailing_runs(manual.id)) == 2
            assert (await service.status(manual.id)).state == "waiting"
            await service.pick(manual.id, 1)

            async def picked() -> list[Run]:
                runs = await herald.store.mailing_runs(manual.id)
                return [r for r in runs[2:] if r.status == "finished"]

            [winner] = await until(picked)
            manual_texts = dict(gateway.texts)
            split = await service.create(MailingSpec(
                name="split", kind="multivariate", resource="news", database="main",
                templates=TEMPLATES, test_share=100))
            await service.start(split.id)

            async def split_done() -> list[Run]:
                runs = await herald.store.mailing_runs(split.id)
                done = [r for r in runs if r.status == "finished"]
                return done if len(done) == 3 else []

            parts = await until(split_done)
            state = (await service.status(split.id)).state
    assert winner.spec.variant == 0 and winner.spec.share == (0.5, 1.0)
    assert {m.to for m in manual_texts.values()} == phones and len(manual_texts) == 60
    assert [r.spec.share for r in parts][-1][1] == 1.0 and state == "done"
    split_phones = [m.to for mid, m in gateway.texts.items() if mid not in manual_texts]
    assert sorted(split_phones) == sorted(phones)  # each once, over the three parts


CLUSTER = "\n[cluster]\nchunk_profiles = 100\nlease_ttl = 1\n"


async def test_on_a_cluster_the_workers_send_the_tests_then_the_winner(
    open_herald: Callable[..., Any], pg_url: str,
) -> None:
    """The service queues the tests as chunks; the workers send them; a scheduler sees
    them over (re-arming the wait until then) and queues the winner, once."""
    from engine.cluster.worker import Worker

    clock, gateway = FakeClock(), FakeGateway()
    async with await open_herald(gateway, database=pg_url, extra=CLUSTER,
                                 shutdown_grace=0) as herald:
        phones = await add_profiles(herald, 250)
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as service, \
                anyio.create_task_group() as tg:
            worker = Worker(herald, concurrency=2)
            tg.start_soon(worker.run)
            m = await service.create(MailingSpec(
                name="ab", kind="multivariate", resource="news", database="main",
                templates=TEMPLATES[:2], test_share=40, winner="delivered", wait=0))
            await service.start(m.id)
            assert len(await herald.store.mailing_runs(m.id)) == 2  # both tests queued

            async def winner_done() -> list[Run]:
                clock.advance(1)
                await service.scheduler.tick()
                runs = await herald.store.mailing_runs(m.id)
                return [r for r in runs[2:] if r.status == "finished"]

            [winner] = await until(winner_done)
            assert await service.scheduler.tick() == []
            worker.stop()
        runs = await herald.store.mailing_runs(m.id)
    assert [r.spec.phase for r in runs] == ["test", "test", "winner"]
    assert winner.spec.variant == 0  # no receipts: a tie, the lowest wins
    assert len(gateway.texts) == 250 and {m.to for m in gateway.texts.values()} == phones
