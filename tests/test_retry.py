"""Retry schedules: backoff, jitter, Retry-After and giving up, with a fake clock and seeded RNG."""

from __future__ import annotations

import random
import statistics

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.retry import RetryPolicy


def schedule(policy: RetryPolicy, seed: int = 1) -> list[float]:
    """Delays until the policy gives up, for a message retried as soon as allowed."""
    rng = random.Random(seed)
    delays: list[float] = []
    now = 0.0
    attempt = 1
    while (delay := policy.next_delay(attempt, 0.0, now, rng)) is not None:
        delays.append(delay)
        now += delay
        attempt += 1
    return delays


def test_exponential_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    policy = RetryPolicy(attempts=8, backoff="exponential", base=0.5, max_delay=10, jitter=False)
    assert schedule(policy) == [0.5, 1, 2, 4, 8, 10, 10]


def test_fixed_backoff_waits_the_same_every_time() -> None:
    policy = RetryPolicy(attempts=4, backoff="fixed", base=3, jitter=False)
    assert schedule(policy) == [3, 3, 3]


def test_one_attempt_means_never_retry() -> None:
    assert schedule(RetryPolicy(attempts=1)) == []


def test_full_jitter_spreads_retries_over_zero_to_the_backoff() -> None:
    policy = RetryPolicy(attempts=2, backoff="exponential", base=8, max_delay=100, jitter=True)
    rng = random.Random(3)
    draws = [policy.next_delay(1, 0.0, 0.0, rng) for _ in range(5000)]
    values = [d for d in draws if d is not None]
    assert len(values) == 5000
    assert 0.0 <= min(values) < 0.1 and 7.9 < max(values) <= 8.0
    assert statistics.mean(values) == pytest.approx(4.0, rel=0.05)


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(attempts=6, jitter=True)
    assert schedule(policy, seed=42) == schedule(policy, seed=42)
    assert schedule(policy, seed=42) != schedule(policy, seed=43)


def test_fixed_jitter_keeps_the_mean_at_base() -> None:
    policy = RetryPolicy(attempts=2, backoff="fixed", base=2, jitter=True)
    rng = random.Random(5)
    values = [policy.next_delay(1, 0.0, 0.0, rng) or 0.0 for _ in range(5000)]
    assert 1.0 <= min(values) and max(values) <= 3.0
    assert statistics.mean(values) == pytest.approx(2.0, rel=0.03)


def test_retry_after_wins_when_longer_even_past_the_cap() -> None:
    policy = RetryPolicy(attempts=5, base=1, max_delay=5, jitter=False)
    rng = random.Random(0)
    assert policy.next_delay(1, 0.0, 0.0, rng, retry_after=0.2) == 1.0
    assert policy.next_delay(1, 0.0, 0.0, rng, retry_after=30.0) == 30.0


def test_a_message_too_old_for_another_try_is_given_up() -> None:
    policy = RetryPolicy(attempts=100, backoff="fixed", base=10, jitter=False, max_age=60)
    rng = random.Random(0)
    assert policy.next_delay(3, first_try_at=100.0, now=145.0, rng=rng) == 10.0
    assert policy.next_delay(4, first_try_at=100.0, now=155.0, rng=rng) is None
    # A long Retry-After that would carry it past max_age also ends it.
    assert policy.next_delay(2, 100.0, 110.0, rng, retry_after=120.0) is None
    assert sum(schedule(policy)) <= 60


def test_max_age_zero_means_no_age_limit() -> None:
    policy = RetryPolicy(attempts=3, backoff="fixed", base=1, jitter=False, max_age=0)
    assert policy.next_delay(1, first_try_at=0.0, now=1e9, rng=random.Random()) == 1.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(attempts=10**6, base=1, max_delay=0, jitter=False)
    delay = policy.next_delay(5000, 0.0, 0.0, random.Random())
    assert delay is not None and delay > 1e17


def test_config_is_strict_and_names_the_bad_key() -> None:
    decoded = msgspec.toml.decode(
        b'attempts = 3\nbackoff = "fixed"\nbase = 2.0\nmax_age = 3600', type=RetryPolicy
    )
    assert decoded == RetryPolicy(attempts=3, backoff="fixed", base=2.0, max_age=3600)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.attempts"):
        msgspec.toml.decode(b"attempts = 0", type=RetryPolicy)
    with pytest.raises(msgspec.ValidationError, match="backof"):
        msgspec.toml.decode(b'backof = "fixed"', type=RetryPolicy)
    with pytest.raises(msgspec.ValidationError, match="linear"):
        msgspec.toml.decode(b'backoff = "linear"', type=RetryPolicy)
    with pytest.raises(ValueError, match="attempt counts from 1"):
        RetryPolicy().next_delay(0, 0.0, 0.0, random.Random())


@given(
    attempts=st.integers(1, 20),
    backoff=st.sampled_from(["fixed", "exponential"]),
    base=st.floats(0, 100),
    max_delay=st.floats(0.001, 1000),
    jitter=st.booleans(),
    attempt=st.integers(1, 40),
    seed=st.integers(0, 2**32),
)
def test_delay_never_exceeds_the_cap_and_none_only_when_tries_run_out(
    attempts: int,
    backoff: str,
    base: float,
    max_delay: float,
    jitter: bool,
    attempt: int,
    seed: int,
) -> None:
    policy = RetryPolicy(
        attempts=attempts,
        backoff=backoff,  # type: ignore[arg-type]
        base=base,
        max_delay=max_delay,
        jitter=jitter,
    )
    delay = policy.next_delay(attempt, 0.0, 0.0, random.Random(seed))
    if attempt >= attempts:
        assert delay is None
    else:
        assert delay is not None and 0.0 <= delay <= max_delay
