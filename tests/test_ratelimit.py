"""GCRA and the in-flight window, driven by a fake clock (plain numbers, never sleeps)."""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.ratelimit import Gcra, InFlightWindow

EPS = 1e-9


def run_sender(
    gcra: Gcra, seconds: float, costs: list[int], start: float = 0.0
) -> list[tuple[float, int]]:
    """A sender that always has work: reserve a batch, wait the delay, send, repeat."""
    now = start
    sent: list[tuple[float, int]] = []
    i = 0
    while True:
        cost = costs[i % len(costs)]
        i += 1
        now += gcra.reserve(cost, now)
        if now >= start + seconds:
            return sent
        sent.append((now, cost))


def max_in_window(sent: list[tuple[float, int]], length: float) -> int:
    """The most units sent in any half-open window ``[t, t + length)``."""
    times = [t for t, _ in sent]
    best = 0
    j = 0
    total = 0
    for i in range(len(sent)):
        while j < len(sent) and times[j] < times[i] + length - EPS:
            total += sent[j][1]
            j += 1
        best = max(best, total)
        total -= sent[i][1]
    return best


def test_sender_loop_holds_rate_and_never_exceeds_rate_plus_burst() -> None:
    rng = random.Random(7)
    costs = [rng.randint(1, 20) for _ in range(1000)]
    sent = run_sender(Gcra(rate=200, burst=20), seconds=10.0, costs=costs)

    assert sum(c for _, c in sent) <= 200 * 10 + 20
    steady = sum(c for t, c in sent if t >= 1.0) / 9.0
    assert steady == pytest.approx(200, rel=0.01)
    busiest = max_in_window(sent, 1.0)
    assert 200 <= busiest <= 200 + 20


def test_rate_holds_at_1000_per_second_over_a_minute() -> None:
    sent = run_sender(Gcra(rate=1000, burst=50), seconds=60.0, costs=[1, 3, 7, 2, 10])
    achieved = sum(c for t, c in sent if t >= 1.0) / 59.0
    assert achieved == pytest.approx(1000, rel=0.001)


def test_idle_sender_gets_a_full_burst_then_the_rate() -> None:
    gcra = Gcra(rate=10, burst=5)
    assert [gcra.reserve(1, 100.0) for _ in range(5)] == [0.0] * 5
    assert gcra.reserve(1, 100.0) == pytest.approx(0.1)
    assert gcra.reserve(1, 100.0) == pytest.approx(0.2)


def test_concurrent_reservations_queue_up_in_order() -> None:
    gcra = Gcra(rate=100, burst=10)
    delays = [gcra.reserve(10, now=0.0) for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_a_batch_costing_more_than_burst_is_admitted_and_paid_for_after() -> None:
    gcra = Gcra(rate=100, burst=10)
    assert gcra.reserve(50, now=0.0) == 0.0
    # The excess (40 units) is borrowed from the next 0.4 s.
    assert gcra.reserve(10, now=0.0) == pytest.approx(0.5)
    sent = run_sender(Gcra(rate=100, burst=10), seconds=300.0, costs=[50, 3, 120])
    assert sum(c for _, c in sent) / 300.0 == pytest.approx(100, rel=0.01)
    assert max_in_window(sent, 1.0) <= 100 + 120


def test_try_acquire_of_an_oversized_batch_succeeds_once_the_bucket_is_full() -> None:
    gcra = Gcra(rate=100, burst=10)
    assert gcra.try_acquire(5, now=0.0)
    assert not gcra.try_acquire(30, now=0.0)
    now = 0.0
    while not gcra.try_acquire(30, now):
        now += 0.001
        assert now < 1.0, "an oversized batch must not wait forever"
    assert now == pytest.approx(0.05, abs=0.002)


def test_try_acquire_commits_only_on_success() -> None:
    gcra = Gcra(rate=10, burst=2)
    assert gcra.try_acquire(2, now=0.0)
    assert not gcra.try_acquire(1, now=0.0)
    assert not gcra.try_acquire(1, now=0.05)
    assert gcra.try_acquire(1, now=0.1)
    assert gcra.delay(1, now=0.1) == pytest.approx(0.1)


def test_penalize_delays_everything_behind_it_and_resumes_without_a_burst() -> None:
    gcra = Gcra(rate=100, burst=20)
    now = 10.0
    assert gcra.reserve(5, now) == 0.0
    gcra.penalize(retry_after=5.0, now=now)
    assert gcra.paused_until == 15.0
    assert not gcra.try_acquire(1, now=14.9)

    sent = run_sender(gcra, seconds=10.0, costs=[5], start=now)
    assert sent[0][0] >= 15.0
    # After the pause it resumes at the rate: the first second carries no burst on top.
    first_second = sum(c for t, c in sent if t < 16.0)
    assert first_second <= 100
    assert sum(c for t, c in sent if 16.0 <= t < 20.0) / 4.0 == pytest.approx(100, rel=0.01)


def test_a_throttle_ending_before_the_current_pause_changes_nothing() -> None:
    gcra = Gcra(rate=100, burst=20)
    gcra.throttle(until=30.0)
    gcra.throttle(until=12.0)
    assert gcra.paused_until == 30.0
    assert gcra.reserve(1, now=10.0) >= 20.0


def test_rate_zero_is_unlimited_but_still_honours_a_throttle() -> None:
    gcra = Gcra(rate=0, burst=0)
    assert all(gcra.reserve(10_000, now=1.0) == 0.0 for _ in range(1000))
    assert gcra.try_acquire(10**9, now=1.0)
    assert math.isinf(gcra.statistics(1.0).tokens)
    gcra.penalize(retry_after=2.0, now=1.0)
    assert gcra.reserve(1, now=1.5) == pytest.approx(1.5)
    assert not gcra.try_acquire(1, now=2.9)
    assert gcra.reserve(1, now=3.0) == 0.0


def test_statistics_show_tokens_draining_and_refilling() -> None:
    gcra = Gcra(rate=10, burst=10)
    assert gcra.statistics(0.0).tokens == 10
    gcra.reserve(8, now=0.0)
    stats = gcra.statistics(0.0)
    assert stats.tokens == pytest.approx(2)
    assert stats.tat == pytest.approx(0.8)
    assert gcra.statistics(0.5).tokens == pytest.approx(7)
    assert gcra.statistics(60.0).tokens == 10
    with pytest.raises(AttributeError):
        stats.tokens = 99  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(stats))["burst"] == 10


@pytest.mark.parametrize(("rate", "burst"), [(-1, 10), (math.inf, 10), (math.nan, 1), (10, -1)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        Gcra(rate=rate, burst=burst)


def test_negative_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="cost"):
        Gcra(10, 1).reserve(-1, now=0.0)


# Arrivals: (seconds since the previous arrival, cost, retry-after or None for a normal send).
arrivals = st.lists(
    st.tuples(
        st.floats(0, 0.5),
        st.integers(0, 40),
        st.none() | st.floats(0, 2),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(1, 2000), burst=st.integers(0, 30), ops=arrivals)
def test_never_more_than_rate_times_t_plus_burst_in_any_interval(
    rate: float, burst: int, ops: list[tuple[float, int, float | None]]
) -> None:
    gcra = Gcra(rate=rate, burst=burst)
    now = 0.0
    sent: list[tuple[float, int]] = []
    for gap, cost, retry_after in ops:
        now += gap
        if retry_after is not None:
            gcra.penalize(retry_after, now)
        elif cost % 3 == 0:
            if gcra.try_acquire(cost, now):
                sent.append((now, cost))
        else:
            delay = gcra.reserve(cost, now)
            assert delay >= 0.0
            sent.append((now + delay, cost))
    sent.sort()
    for i in range(len(sent)):
        units = 0
        biggest = 0
        for j in range(i, len(sent)):
            units += sent[j][1]
            biggest = max(biggest, sent[j][1])
            span = sent[j][0] - sent[i][0]
            assert units <= rate * span + max(burst, biggest) + 1e-6 * (1 + rate * span)


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(1, 5000),
    burst=st.integers(1, 100),
    costs=st.lists(st.integers(1, 100), min_size=1, max_size=20),
)
def test_a_busy_sender_achieves_the_rate(rate: float, burst: int, costs: list[int]) -> None:
    seconds = max(10.0, 50 * max(costs) / rate)
    sent = run_sender(Gcra(rate=rate, burst=burst), seconds=seconds, costs=costs)
    total = sum(c for _, c in sent)
    slack = 1e-6 * rate * seconds  # float rounding of the schedule, not extra units
    assert rate * seconds - max(costs) - 1 <= total <= (
        rate * seconds + max(burst, max(costs)) + slack)


def test_window_limits_messages_in_flight() -> None:
    window = InFlightWindow(3)
    window.take(2)
    assert window.can_take(1)
    assert not window.can_take(2)
    with pytest.raises(RuntimeError, match="window full"):
        window.take(2)
    window.take(1)
    assert window.free == 0
    window.release(2)
    assert window.can_take(2)
    stats = window.statistics()
    assert (stats.limit, stats.in_flight, stats.free, stats.peak) == (3, 1, 2, 3)


def test_window_admits_an_oversized_batch_only_when_empty() -> None:
    window = InFlightWindow(10)
    window.take(1)
    assert not window.can_take(50)
    window.release(1)
    assert window.can_take(50)
    window.take(50)
    assert not window.can_take(1)


def test_window_zero_is_unlimited() -> None:
    window = InFlightWindow(0)
    window.take(10**6)
    assert window.can_take(10**6)
    assert window.free == -1


def test_window_refuses_to_release_what_was_never_taken() -> None:
    window = InFlightWindow(5)
    window.take(2)
    with pytest.raises(RuntimeError, match="only 2 in flight"):
        window.release(3)
    with pytest.raises(ValueError):
        InFlightWindow(-1)
