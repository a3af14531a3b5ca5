"""Nothing lost, nothing doubled, nothing exceeded: stops under a rate limit, ambiguous
answers, batches paced in parts, and one rate shared by every mailing on a sender."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from bench.guarantees import busiest_window
from engine.demo import generate
from engine.drivers import OutboundMessage, SendResult
from engine.errors import TransientGatewayError
from engine.mailing_log import format_log
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.service import MailingService, MailingSpec, MailingStatus
from engine.testing import FakeGateway

# every test here runs on SQLite and on PostgreSQL
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("any_store")]


def config(
    directory: Path, *, rate: float = 0, burst: int = 0, batch_size: int = 500,
    sender: str = "", concurrency: int = 4,
) -> Path:
    path = directory / "herald.toml"
    path.write_text(f"""
[engine]
database = "herald.db"
default_region = "RU"
batch_size = {batch_size}
shutdown_grace = 5

[gateways.gw]
driver = "fake"

[senders.s1]
gateway = "gw"
caller_id = "ACME"
rate = {rate}
burst = {burst}
concurrency = {concurrency}
{sender}

[senders.s1.retry.transient]
attempts = 3
base = 0.01

[senders.s1.retry.message]
attempts = 3
base = 0.01

[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1", percent = 100 }}] }}]

[resources.news]
channel = "sms"
virtual_sender = "v"
""", encoding="utf-8")
    return path


async def opened(tmp_path: Path, gateway: FakeGateway, **options: Any) -> Herald:
    return await Herald.open(config(tmp_path, **options), plugins=load_plugins(gateway.plugin()))


async def wait_for(
    service: MailingService, mailing_id: int, check: Callable[[MailingStatus], bool]
) -> MailingStatus:
    with anyio.fail_after(30):
        while True:
            status = await service.status(mailing_id)
            if check(status):
                return status
            await anyio.sleep(0.01)


async def states(herald: Herald, run_id: int) -> dict[tuple[str, str | None], int]:
    out: dict[tuple[str, str | None], int] = {}
    for row in await herald.store.recipient_rows(run_id):
        out[row.state, row.reason] = out.get((row.state, row.reason), 0) + 1
    return out


# -- stops under a rate limit ------------------------------------------------------------


@pytest.mark.parametrize("how", ["pause", "cancel"])
async def test_stopping_under_a_rate_limit_never_makes_unknowns(
    tmp_path: Path, how: str
) -> None:
    """Batches waiting for the pace were never at a gateway: a pause leaves them reserved
    (resume sends each once), a cancel records them cancelled; none becomes unknown."""
    gateway = FakeGateway()
    async with await opened(tmp_path, gateway, rate=100, burst=10) as herald:
        plan = await generate(herald.store, profiles=600, database="main")
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(name="b", kind="broadcast", resource="news",
                                                 template="x", database="main"))
            await service.start(m.id)
            await wait_for(service, m.id, lambda s: s.sent >= 30)
            if how == "pause":
                paused = await service.pause(m.id)
                assert paused.status == "paused" and paused.unknown == 0
                assert 0 < paused.sent < plan.unique
                await service.resume(m.id)
                done = await wait_for(service, m.id, lambda s: s.status == "finished")
                assert done.sent == plan.unique and done.unknown == 0
            else:
                await service.cancel(m.id)
            log = await service.log(m.id)
        counts = await states(herald, log.run_id)
    assert not [k for k in counts if k[0] == "unknown"], counts
    assert set(gateway.submitted.values()) == {1}
    assert counts.get(("sent", None), 0) == len(gateway.accepted)
    if how == "cancel":
        assert counts[("skipped", "cancelled")] == plan.unique - len(gateway.accepted)


async def test_ctrl_c_under_a_rate_limit_leaves_the_rest_for_resume(tmp_path: Path) -> None:
    """The reported case: rate 100, a stop after a moment, then resume: all sent, once."""
    gateway = FakeGateway()
    async with await opened(tmp_path, gateway, rate=100, burst=5) as herald:
        plan = await generate(herald.store, profiles=400, database="main")

        async def stop_soon() -> None:
            while herald.pipeline is None or herald.pipeline.statistics().sent < 20:  # noqa: ASYNC110
                await anyio.sleep(0.01)  # polls what a progress bar would show
            herald.pipeline.stop(grace=1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_soon)
            first = await herald.send(resource="news", database="main", template="x")
        assert first.unknown == 0 and 0 < first.sent < plan.unique
        final = await herald.resume(first.run_id)
    assert final.sent == plan.unique and final.unknown == 0
    assert set(gateway.submitted.values()) == {1}


# -- ambiguous answers ---------------------------------------------------------------------


def ambiguous_once(kind: str) -> Callable[[Sequence[OutboundMessage]], list[SendResult]]:
    """The first attempt of each message is lost in transit; later ones are accepted."""
    seen: set[str] = set()

    def handler(messages: Sequence[OutboundMessage]) -> list[SendResult]:
        fresh = [m for m in messages if m.id not in seen]
        seen.update(m.id for m in messages)
        if fresh and kind == "raise":
            raise TransientGatewayError("no answer within 3 s", ambiguous="timeout")
        return [
            SendResult(m.id, "unknown", error="connection_lost: reset by peer")
            if m.id in {f.id for f in fresh} else SendResult(m.id, "accepted", provider_id=m.id)
            for m in messages
        ]

    return handler


@pytest.mark.parametrize("kind", ["raise", "result"])
@pytest.mark.parametrize("idempotent", [False, True])
async def test_ambiguous_attempts_follow_the_driver_by_default(
    tmp_path: Path, kind: str, idempotent: bool
) -> None:
    gateway = FakeGateway(handler=ambiguous_once(kind), idempotent=idempotent)
    async with await opened(tmp_path, gateway, batch_size=10) as herald:
        plan = await generate(herald.store, profiles=100, database="main")
        log = await herald.send(resource="news", database="main", template="x")
        counts = await states(herald, log.run_id)
    reason = "timeout" if kind == "raise" else "connection_lost"
    if idempotent:  # retried under the same ids: the gateway drops the repeats
        assert log.sent == plan.unique and log.unknown == 0
        assert set(gateway.submitted.values()) == {2}
    else:  # never re-sent: unknown, with the reason, counted in the log
        assert counts == {**{k: v for k, v in counts.items() if k[0] == "skipped"},
                          ("unknown", reason): plan.unique}
        assert log.unknown == plan.unique and log.unknown_reasons == {reason: plan.unique}
        assert set(gateway.submitted.values()) == {1}
        assert f"  {reason}" in format_log(log)


@pytest.mark.parametrize("choice", ["unknown", "retry"])
async def test_on_ambiguous_overrides_the_default(tmp_path: Path, choice: str) -> None:
    gateway = FakeGateway(handler=ambiguous_once("raise"), idempotent=choice == "unknown")
    async with await opened(tmp_path, gateway, batch_size=10,
                            sender=f'on_ambiguous = "{choice}"') as herald:
        plan = await generate(herald.store, profiles=50, database="main")
        log = await herald.send(resource="news", database="main", template="x")
    if choice == "retry":
        assert log.sent == plan.unique
    else:
        assert log.unknown == plan.unique and set(gateway.submitted.values()) == {1}


# -- the pace ----------------------------------------------------------------------------


async def test_a_batch_larger_than_the_burst_goes_in_parts(tmp_path: Path) -> None:
    """batch_size 500 but burst 8: no request to the gateway carries more than 4 segments
    (half the burst), and they are spaced at the rate."""
    gateway = FakeGateway()
    async with await opened(tmp_path, gateway, rate=200, burst=8) as herald:
        plan = await generate(herald.store, profiles=120, database="main")
        log = await herald.send(resource="news", database="main", template="x")
    assert log.sent == plan.unique
    assert max(n for _, n in gateway.timeline) <= 4
    times = [t for t, _ in gateway.timeline]
    # the burst lets two parts go at once; then 4 segments at 200/s is one request per
    # 20 ms at most (a little scheduling slack)
    assert (times[-1] - times[0]) >= (len(times) - 2) * 0.02 * 0.95


@pytest.mark.slow
async def test_two_mailings_on_one_sender_share_its_rate(tmp_path: Path) -> None:
    """Two broadcasts at once on a sender with rate 200, burst 10: measured at the gateway,
    no 1-second window holds more than 210 segments and the average is within 1% of 200."""
    gateway = FakeGateway()
    async with await opened(tmp_path, gateway, rate=200, burst=10) as herald:
        await generate(herald.store, profiles=700, database="a")
        await generate(herald.store, profiles=700, database="b", seed=2)
        logs = []

        async def one(database: str) -> None:
            logs.append(await herald.send(resource="news", database=database, template="x"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a")
            tg.start_soon(one, "b")
    sent = sum(log.sent for log in logs)
    assert sent == len(gateway.accepted) > 1000
    assert busiest_window(gateway.timeline) <= 210
    times = [t for t, _ in gateway.timeline]
    # after the first burst, segments arrive at the rate
    first = gateway.timeline[0][1]
    average = (sent - first) / (times[-1] - times[0])
    assert abs(average - 200) <= 2, average


# -- stops in the middle of a batch --------------------------------------------------------


async def test_a_stop_while_a_request_hangs_makes_only_that_part_unknown(
    tmp_path: Path,
) -> None:
    """A gateway that never answers: once the grace runs out, the part it holds is unknown
    (interrupted); the parts of the batch it never saw stay reserved and resume sends them."""
    hang = anyio.Event()
    calls: list[int] = []

    async def never_answers(messages: Sequence[OutboundMessage]) -> list[SendResult]:
        calls.append(len(messages))
        if len(calls) == 3:
            await hang.wait()
        return [SendResult(m.id, "accepted", provider_id=m.id) for m in messages]

    gateway = FakeGateway()
    gateway.send = never_answers  # type: ignore[method-assign]
    async with await opened(tmp_path, gateway, rate=100, burst=20, concurrency=1) as herald:
        plan = await generate(herald.store, profiles=200, database="main")

        async def stop_when_stuck() -> None:
            while len(calls) < 3:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            assert herald.pipeline is not None
            herald.pipeline.stop(grace=0.1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_stuck)
            first = await herald.send(resource="news", database="main", template="x")
        counts = await states(herald, first.run_id)
        assert counts.get(("unknown", "interrupted")) == 10  # the one part at the gateway
        assert counts.get(("sent", None)) == 20
        hang.set()
        final = await herald.resume(first.run_id)
        counts = await states(herald, first.run_id)
    assert final.unknown == 10 and final.sent == plan.unique - 10
    assert counts[("sent", None)] + counts[("unknown", "interrupted")] == plan.unique


async def test_a_stop_while_waiting_to_retry_keeps_what_was_refused_reserved(
    tmp_path: Path,
) -> None:
    """Half of each batch answered "retry" (queue full), then the run stops while it waits:
    the accepted half is recorded sent, the refused half stays reserved (not unknown), and
    resume sends it, once."""
    answered: set[str] = set()

    def half(messages: Sequence[OutboundMessage]) -> list[SendResult]:
        out = []
        for i, m in enumerate(messages):
            if i % 2 and m.id not in answered:
                answered.add(m.id)
                out.append(SendResult(m.id, "retry", error="queue full"))
            else:
                out.append(SendResult(m.id, "accepted", provider_id=m.id))
        return out

    gateway = FakeGateway(handler=half)
    retry_later = '\n[senders.s1.retry.message]\nattempts = 3\nbase = 30\n'
    path = config(tmp_path, batch_size=10).read_text().replace(
        "[senders.s1.retry.message]\nattempts = 3\nbase = 0.01\n", retry_later)
    (tmp_path / "herald.toml").write_text(path)
    async with await Herald.open(tmp_path / "herald.toml",
                                 plugins=load_plugins(gateway.plugin())) as herald:
        plan = await generate(herald.store, profiles=100, database="main")

        async def stop_soon() -> None:
            while gateway.batches < 4:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            assert herald.pipeline is not None
            herald.pipeline.stop(grace=5)

        with anyio.fail_after(10):  # the retry waits 30 s: the stop must cut it short
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_soon)
                first = await herald.send(resource="news", database="main", template="x")
        assert first.unknown == 0 and first.sent > 0
        refused = [r for r in await herald.store.recipient_rows(first.run_id)
                   if r.state != "skipped"]
        assert {r.state for r in refused} == {"sent"}  # the refused half is not recorded
        gateway.handler = None  # the gateway's queue has room again
        final = await herald.resume(first.run_id)
    assert final.sent == plan.unique and final.unknown == 0
    assert max(gateway.accepted.values()) == 1


@pytest.mark.parametrize("keep_sending", [False, True])
async def test_recording_part_of_a_batch_keeps_the_rest_in_one_transaction(
    tmp_path: Path, keep_sending: bool
) -> None:
    """What is kept stays journalled, 'sending' only when asked, in the same write as
    the recipients: a kill between two writes could otherwise make what a gateway may
    have look merely reserved."""
    from engine.core.prepare import Message
    from engine.core.states import Outcome
    from engine.store.models import AudienceSource
    from engine.store.open import open_store

    store = await open_store(os.environ.get("HERALD_DATABASE") or str(tmp_path / "h.db"))
    source = AudienceSource("list", await store.database_id("main", create=True))
    _, run = await store.create_run(name="t", resource="news", source=source, template="x",
                                    limit=None)
    msgs = [Message(i, f"r-{i}", i, f"+4479000000{i:02d}", "s", "x", 1) for i in (1, 2, 3)]
    await store.reserve(run.id, batches=[(1, "s", msgs)], skipped=[], checkpoint=3,
                        next_seq=4, counts={}, audience_done=True)
    await store.mark_sending(run.id, 1)
    await store.record(run.id, 1, "s", msgs[:1], [Outcome(1, "sent", provider_id="p1")],
                       keep=msgs[1:], keep_sending=keep_sending)
    try:
        [left] = await store.journal(run.id)
        assert [e.seq for e in left.entries] == [2, 3]
        assert left.state == ("sending" if keep_sending else "reserved")
        assert [r.state for r in await store.recipient_rows(run.id)] == ["sent"]
    finally:
        await store.aclose()
