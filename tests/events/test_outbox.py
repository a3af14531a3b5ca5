"""The outbox's deliverer on an in-memory store, a fake clock and fake transports."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from engine.config import HookConfig
from engine.events.outbox import Deliverer, backoff
from engine.store.base import ORIGIN, EventPosition, HookState
from tests.events.fakes import (
    FakeClock,
    MemoryHookStore,
    RecordingTransport,
    event,
    eventually,
    hook_config,
)

pytestmark = pytest.mark.anyio


def deliverer(store: MemoryHookStore, clock: FakeClock, transport: RecordingTransport, *,
              name: str = "h", owner: str = "me", config: HookConfig | None = None,
              draws: Iterator[float] | None = None) -> Deliverer:
    return Deliverer(name, config or transport.config, store, transport, account_id=1,
                     owner=owner, clock=clock, sleep=clock.sleep,
                     random=(lambda: next(draws)) if draws is not None else (lambda: 1.0))


def at_origin(store: MemoryHookStore, name: str = "h") -> None:
    """Hook ``name`` seen before any event (so it delivers the whole record)."""
    store.rows[name] = HookState(name, ORIGIN, "", 0.0, "", None, 0)


async def running(until: Callable[[], bool], *runs: Callable[[], Awaitable[None]]) -> None:
    """Run ``runs`` until ``until()`` holds (within 10 s of real time)."""
    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(run)
        await eventually(until)
        tg.cancel_scope.cancel()


def ids(transport: RecordingTransport) -> list[list[int]]:
    return [[int(json.loads(m)["event_id"]) for m in batch] for batch in transport.batches]


async def test_full_batches_go_at_once_and_the_rest_after_flush_interval() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    at_origin(store)
    store.add(*(event(i) for i in range(1, 1201)))
    transport = RecordingTransport(config=hook_config(batch_size=500, flush_interval=2.0),
                                   clock=clock)
    sent_at = transport.sent_at
    start = clock.now
    d = deliverer(store, clock, transport)
    await running(lambda: len(transport.batches) == 3, d.run)
    assert ids(transport) == [list(range(1, 501)), list(range(501, 1001)),
                              list(range(1001, 1201))]
    assert sent_at[0] == sent_at[1] == start  # full: no wait
    assert 2.0 <= sent_at[2] - start < 2.5  # the 200 left waited flush_interval
    assert store.rows["h"].cursor == EventPosition(0, 1200)
    assert store.rows["h"].delivered == 1200


async def test_events_recorded_later_are_batched_by_interval() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    at_origin(store)
    transport = RecordingTransport(config=hook_config(batch_size=500, flush_interval=1.0))
    d = deliverer(store, clock, transport)
    store.add(event(1), event(2), event(3))
    async with anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        await eventually(lambda: bool(transport.batches))
        store.add(event(4), event(5))
        await eventually(lambda: len(transport.batches) >= 2)
        tg.cancel_scope.cancel()
    assert ids(transport) == [[1, 2, 3], [4, 5]]


async def test_filters_leave_events_out_and_the_cursor_still_moves_past_them() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    at_origin(store)
    store.add(event(1, "send_sms"), event(2, "deliv_sms", resource="promo"),
              event(3, "deliv_sms"), event(4, "deliv_sms", is_test=True),
              event(5, "click_sms", url="https://a.example"))
    config = hook_config(events=["deliv_sms", "click_sms"], resources=["news"],
                         flush_interval=0)
    transport = RecordingTransport(config=config)
    d = deliverer(store, clock, transport)
    await running(lambda: store.rows["h"].cursor == EventPosition(0, 5), d.run)
    assert [i for batch in ids(transport) for i in batch] == [3, 5]

    # none of these is the hook's: nothing sent, the cursor moves on all the same
    store.add(event(6, "send_sms"), event(7, "unsub_sms"))
    await running(lambda: store.rows["h"].cursor == EventPosition(0, 7), d.run)
    assert [i for batch in ids(transport) for i in batch] == [3, 5]


async def test_a_new_hook_delivers_what_happens_from_now_on() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    store.add(event(1), event(2))
    transport = RecordingTransport(config=hook_config(flush_interval=0))
    d = deliverer(store, clock, transport)
    await running(lambda: "h" in store.rows, d.run)
    store.add(event(3))
    await running(lambda: bool(transport.batches), d.run)
    assert ids(transport) == [[3]]


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    assert [backoff(n, 1.0, 300.0, 1.0) for n in range(1, 11)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff(3, 1.0, 300.0, 0.25) == 1.0
    assert backoff(10_000, 1.0, 300.0, 0.5) == 150.0  # no overflow after days of failures


async def test_a_failing_batch_is_retried_with_growing_jittered_pauses() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    at_origin(store)
    store.add(event(1), event(2))
    transport = RecordingTransport(failing=True, config=hook_config(
        flush_interval=0, retry_initial=1.0, retry_max=8.0))
    draws = itertools.chain([0.5, 1.0, 0.25, 1.0, 0.9, 0.1, 1.0], itertools.repeat(1.0))
    d = deliverer(store, clock, transport, draws=draws)
    # the deliverer counts a failure after its transport call returns: wait for both
    await running(lambda: transport.tries >= 8 and d.statistics().failures >= 8, d.run)
    pauses = [s for s in clock.sleeps if s != d.poll]
    # ceilings 1, 2, 4, 8, 8, 8, 8 (retry_max), each times a draw
    assert pauses[:7] == pytest.approx([0.5, 2.0, 1.0, 8.0, 7.2, 0.8, 8.0])
    row = store.rows["h"]
    assert row.last_error == "POST http://sink/: HTTP 503"
    assert row.failing_since is not None
    assert row.cursor == ORIGIN  # nothing delivered, nothing skipped
    stats = d.statistics()
    assert stats.failures >= 8
    assert stats.pending == 2


async def test_after_max_age_the_batch_is_dead_lettered_and_the_hook_goes_on() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    at_origin(store)
    store.add(*(event(i) for i in range(1, 6)))
    transport = RecordingTransport(failing=True, config=hook_config(
        flush_interval=0, max_age=120.0, retry_initial=1.0, retry_max=8.0))
    d = deliverer(store, clock, transport)
    start = clock.now
    await running(lambda: bool(store.letters), d.run)
    (letter,) = store.letters
    assert (letter.hook, letter.after, letter.upto, letter.events) == (
        "h", ORIGIN, EventPosition(0, 5), 5)
    assert letter.error == "POST http://sink/: HTTP 503"
    assert 120.0 <= letter.at - letter.first_failed < 130.0
    assert letter.first_failed == start
    # the lease was renewed through two minutes of pauses (the fake store checks it)
    assert store.rows["h"].cursor == EventPosition(0, 5)
    assert store.rows["h"].failing_since is None
    transport.failing = False
    store.add(event(6), event(7))
    await running(lambda: bool(transport.batches), d.run)
    assert ids(transport) == [[6, 7]]


async def test_max_age_counts_from_the_first_failure_an_earlier_process_noted() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    store.rows["h"] = HookState("h", ORIGIN, "", 0.0, "HTTP 503", clock.now - 100.0, 0)
    store.add(event(1))
    transport = RecordingTransport(failing=True, config=hook_config(
        flush_interval=0, max_age=120.0, retry_initial=1.0, retry_max=8.0))
    d = deliverer(store, clock, transport)
    start = clock.now
    await running(lambda: bool(store.letters), d.run)
    assert store.letters[0].first_failed == start - 100.0
    assert store.letters[0].at - start < 30.0


async def test_a_failing_hook_holds_up_no_other_hook() -> None:
    store = MemoryHookStore(FakeClock())
    at_origin(store, "down")
    at_origin(store, "up")
    store.add(*(event(i) for i in range(1, 1001)))
    down = RecordingTransport(failing=True, config=hook_config(flush_interval=0))
    up = RecordingTransport(config=hook_config(flush_interval=0))
    d_down = deliverer(store, FakeClock(), down, name="down")
    d_up = deliverer(store, FakeClock(), up, name="up")
    await running(lambda: store.rows["up"].cursor == EventPosition(0, 1000) and down.tries > 3,
                  d_down.run, d_up.run)
    assert sum(len(b) for b in up.batches) == 1000
    assert store.rows["down"].cursor == ORIGIN


async def test_a_deliverer_that_lost_its_lease_writes_nothing_more() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    at_origin(store)
    store.add(*(event(i) for i in range(1, 11)))
    transport = RecordingTransport(config=hook_config(flush_interval=0, batch_size=5))
    send = transport.send

    async def stolen(messages: Any) -> None:
        # while this batch is out, the lease expires and another process takes it
        store.rows["h"] = store.rows["h"]._replace(owner="other", lease_until=clock.now + 1e6)
        await send(messages)

    transport.send = stolen  # type: ignore[method-assign]
    d = deliverer(store, clock, transport)
    await running(lambda: len(store.calls) >= 5, d.run)
    assert len(transport.batches) == 1
    assert store.rows["h"].cursor == ORIGIN  # its advance was refused
    assert store.rows["h"].delivered == 0
    assert store.rows["h"].owner == "other"
    assert not d.statistics().holding
    assert all(c == "claim me" for c in store.calls)  # it only asks for the lease again


async def test_a_hook_held_elsewhere_is_taken_once_that_lease_expires() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    store.rows["h"] = HookState("h", ORIGIN, "other", clock.now + 40.0, "", None, 0)
    store.add(event(1))
    transport = RecordingTransport(config=hook_config(flush_interval=0), clock=clock)
    d = deliverer(store, clock, transport)
    start = clock.now
    await running(lambda: bool(transport.batches), d.run)
    assert 40.0 <= transport.sent_at[0] - start < 42.0


async def test_cancelled_it_gives_the_lease_up_and_closes_the_transport() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    transport = RecordingTransport()
    d = deliverer(store, clock, transport)
    await running(lambda: store.rows.get("h") is not None and len(store.calls) > 0, d.run)
    assert store.rows["h"].owner == ""
    assert transport.closed


async def test_the_store_away_for_a_while_is_waited_out() -> None:
    clock = FakeClock()
    store = MemoryHookStore(clock)
    at_origin(store)
    store.add(event(1))
    store.fail_reads = True
    transport = RecordingTransport(config=hook_config(flush_interval=0))
    d = deliverer(store, clock, transport)
    async with anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        await eventually(lambda: clock.now > 1_764_657_000.0 + 5)
        store.fail_reads = False
        await eventually(lambda: bool(transport.batches))
        tg.cancel_scope.cancel()
    assert ids(transport) == [[1]]
