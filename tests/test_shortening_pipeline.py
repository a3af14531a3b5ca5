"""Short links end to end: what the gateway gets where the resource has a tracking domain,
on every path that renders (send, resume, trigger mailings: on both stores; cluster
workers: on PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.cluster.worker import send_on_cluster
from engine.core.codes import Codec
from engine.drivers import OutboundMessage, SendResult
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.service import MailingService, MailingSpec, TriggerRequest
from engine.store.base import ImportRecord
from engine.store.postgres.cluster import SEQS_PER_CHUNK
from engine.testing import FakeGateway, write_config

pytestmark = pytest.mark.anyio
both_stores = pytest.mark.usefixtures("any_store")

BASE = "https://t.example.com"
TRACKING = '\n[tracking]\ndomain = "t.example.com"\n'
STATIC = 'unsubscribe_url = "https://example.com/stop"\n'
TEMPLATE = "Hi {lead._fname}, sale: https://shop.example/sale {lead.url} Stop: {unsubscribe}"
SHORT = re.compile(re.escape(BASE) + r"/(u/)?([0-9A-Za-z]{10})")


async def add_profiles(herald: Herald, n: int, start: int = 0) -> list[str]:
    """Profiles with a phone and a URL field each; their URLs."""
    store = herald.store
    db = await store.database_id("main", create=True)
    rid = await store.resource_id("news")
    urls = [f"https://shop.example/item/{start + i}" for i in range(n)]
    await store.import_profiles(db, [
        ImportRecord(None, f"+447911{start + i:06d}", None,
                     {"_fname": f"P{start + i}", "url": url})
        for i, url in enumerate(urls)
    ], matching="phone", resource_id=rid)
    return urls


def seq_of(message_id: str) -> int:
    return int(message_id.rsplit("-", 1)[1])


async def check_texts(herald: Herald, run_id: int, texts: dict[str, str]) -> set[int]:
    """Every text holds short links only, each decoding to its own message (``seq_base``
    of its link row plus the code's offset) and, through its link row, to the URL it
    stands for; the unsubscribe code to the first link row, of the same ``seq_base``.
    Returns the seq_bases seen."""
    secret = await herald.store.tracking_secret()
    links, unsubscribe = Codec(secret, b"link"), Codec(secret, b"unsubscribe")
    assert texts
    bases: set[int] = set()
    for message_id, text in texts.items():
        seq = seq_of(message_id)
        assert "shop.example" not in text and "example.com/stop" not in text, text
        found = SHORT.findall(text)
        assert [u for u, _ in found] == ["", "", "u/"], text
        (_, sale), (_, item), (_, unsub) = found
        sale_link, sale_offset = links.decode(sale) or (0, 0)
        item_link, item_offset = links.decode(item) or (0, 0)
        row = await herald.store.link(sale_link)
        assert row is not None and (row.run_id, row.url) == (run_id, "https://shop.example/sale")
        item_row = await herald.store.link(item_link)
        assert item_row is not None and item_row.run_id == run_id and item_row.url is None
        assert row.seq_base + sale_offset == item_row.seq_base + item_offset == seq
        assert row.seq_base == item_row.seq_base <= seq
        url = await herald.store.data_link_url(item_link, seq)
        assert url is not None and re.fullmatch(r"https://shop\.example/item/\d+", url)
        # the anchor of the unsubscribe codes is the set's first row: the template URL
        assert unsubscribe.decode(unsub) == (sale_link, sale_offset)
        bases.add(row.seq_base)
    return bases


@both_stores
async def test_sent_texts_hold_short_links_that_decode_to_their_targets(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, extra=STATIC + TRACKING, batch_size=10) as herald:
        urls = await add_profiles(herald, 30)
        log = await herald.send(resource="news", database="main", template=TEMPLATE)
        texts = {i: m.text for i, m in gateway.texts.items()}
        await check_texts(herald, log.run_id, texts)
        secret = await herald.store.tracking_secret()
        # each profile's own URL behind its message's data link
        by_phone = {m.to: m.text for m in gateway.texts.values()}
        for i, url in enumerate(urls):
            item = SHORT.findall(by_phone[f"+447911{i:06d}"])[1][1]
            link_id, offset = Codec(secret, b"link").decode(item) or (0, 0)
            assert await herald.store.data_link_url(link_id, offset) == url  # seq_base 0
    assert log.sent == 30 and all(len(t) <= 160 for t in texts.values())


@both_stores
@pytest.mark.parametrize("extra", [STATIC, STATIC + "track_links = false\n" + TRACKING])
async def test_without_a_tracking_domain_texts_go_as_written(
    open_herald: Callable[..., Any], extra: str,
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, extra=extra) as herald:
        await add_profiles(herald, 3)
        await herald.send(resource="news", database="main",
                          template=TEMPLATE + " {globalunsubscribe}")
    assert sorted(m.text for m in gateway.texts.values()) == [
        f"Hi P{i}, sale: https://shop.example/sale https://shop.example/item/{i}"
        " Stop: https://example.com/stop https://example.com/stop" for i in range(3)]


@both_stores
async def test_a_resumed_run_re_renders_the_same_texts(
    open_herald: Callable[..., Any],
) -> None:
    submissions: list[tuple[str, str]] = []

    def record(messages: Sequence[OutboundMessage]) -> list[SendResult]:
        submissions.extend((m.id, m.text) for m in messages)
        return [SendResult(m.id, "accepted", provider_id=f"p-{m.id}") for m in messages]

    gateway = FakeGateway(latency=0.002, handler=record, idempotent=True)
    herald = await open_herald(gateway, extra=STATIC + TRACKING, chunk_size=50,
                               batch_size=10)
    async with herald:
        await add_profiles(herald, 400)

        async def stop_soon() -> None:
            while True:
                pipeline = herald.pipeline
                if pipeline is not None and pipeline.statistics().sent >= 60:
                    pipeline.stop(grace=0)
                    return
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            first = await herald.send(resource="news", database="main", template=TEMPLATE)
        assert first.status == "interrupted" and first.sent < 400
        assert await herald.store.journal(first.run_id), "nothing left to re-render"
        before = len(submissions)
        log = await herald.resume(first.run_id)
        assert log.status == "finished" and len(submissions) > before
        texts: dict[str, str] = {}
        for message_id, text in submissions:
            assert texts.setdefault(message_id, text) == text  # a re-send: the same text
        await check_texts(herald, log.run_id, texts)
    assert len(texts) == 400


@both_stores
async def test_a_trigger_mailings_texts_are_shortened(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, extra=STATIC + TRACKING) as herald:
        await add_profiles(herald, 2)
        db = await herald.store.database_id("main")
        ids = await herald.store.find_profiles(db, "phone", ["+447911000000", "+447911000001"])
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(
                name="order", kind="trigger", resource="news", database="main",
                template="Hi {lead._fname}, sale: https://shop.example/sale {apicontent.url}"
                         " Stop: {unsubscribe}",
            ))
            answers = await service.trigger(m.id, [
                TriggerRequest(profile_id=pid, content={"url": f"https://shop.example/item/{n}"})
                for n, pid in enumerate(ids.values())
            ])
            with anyio.fail_after(20):
                status = await service.status(m.id)
                while status.sent < 2:
                    await anyio.sleep(0.01)  # the service's progress: nothing to wait on
                    status = await service.status(m.id)
            run_id = status.run_id
        assert run_id is not None
        texts = {i: msg.text for i, msg in gateway.texts.items()}
        assert set(texts) == {a.message_id for a in answers}
        await check_texts(herald, run_id, texts)


CLUSTER = "[cluster]\nlease_ttl = 2\nchunk_profiles = 100\n"


async def cluster_send(tmp_path: Path, pg_url: str, profiles: int) -> set[int]:
    """A cluster run's texts checked; the seq_bases of their links."""
    gateway = FakeGateway()
    config = write_config(tmp_path, database=pg_url, extra=STATIC + TRACKING + CLUSTER,
                          shutdown_grace=1, batch_size=25)
    async with await Herald.open(config, plugins=load_plugins(gateway.plugin())) as herald:
        await add_profiles(herald, profiles)
        log = await send_on_cluster(herald, resource="news", database="main",
                                    template=TEMPLATE)
        assert log.sent == profiles
        return await check_texts(herald, log.run_id,
                                 {i: m.text for i, m in gateway.texts.items()})


async def test_a_cluster_workers_texts_are_shortened(tmp_path: Path, pg_url: str) -> None:
    assert await cluster_send(tmp_path, pg_url, 60) == {0}  # one chunk


async def test_every_chunk_of_a_cluster_run_is_shortened(tmp_path: Path, pg_url: str) -> None:
    # three chunks: chunk k's seqs start at k * 2**32 + 1 (SEQS_PER_CHUNK), past the
    # 29 bits of a code, so each has link rows of its own
    assert await cluster_send(tmp_path, pg_url, 250) == {0, SEQS_PER_CHUNK, 2 * SEQS_PER_CHUNK}
