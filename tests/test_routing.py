"""Virtual sender routing and sender health, driven by a fake clock (plain numbers)."""

from __future__ import annotations

import itertools
from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.routing import HealthPolicy, HealthTracker, Rule, VirtualSenderRouter

POLICY = HealthPolicy(
    error_threshold=0.5, min_samples=20, window=10.0, cooldown=30.0, recovery=60.0, floor=0.05
)
PHONE = "+15551234567"


def router_70_30(policy: HealthPolicy = POLICY) -> VirtualSenderRouter:
    return VirtualSenderRouter([Rule(senders=[("a", 70), ("b", 30)])], policy=policy)


def run(
    router: VirtualSenderRouter,
    start: float,
    seconds: int,
    per_second: int = 100,
    failing: frozenset[str] = frozenset(),
) -> Counter[str]:
    """Route ``per_second`` messages each simulated second; senders in ``failing`` error."""
    picks: Counter[str] = Counter()
    for second in range(seconds):
        for k in range(per_second):
            now = start + second + k / per_second
            sender = router.choose(PHONE, now)
            picks[sender] += 1
            router.record_result(sender, sender not in failing, now)
    return picks


def share(picks: Counter[str], sender: str) -> float:
    return picks[sender] / sum(picks.values())


def test_weights_70_30_give_70_30_and_interleave() -> None:
    router = router_70_30()
    picks = [router.choose(PHONE, now=0.0) for _ in range(10_000)]
    assert Counter(picks) == {"a": 7000, "b": 3000}
    # Smooth round-robin: b never comes twice in a row, a never more than three times.
    runs = "".join(picks).replace("a", "a ").split("b")
    assert "bb" not in "".join(picks)
    assert max(len(r.split()) for r in runs) <= 3


def test_rules_route_by_country_code_and_fall_back_to_the_default() -> None:
    router = VirtualSenderRouter(
        [
            Rule(prefixes=["+7"], senders=[("ru", 100)]),
            Rule(prefixes=["+44", "+353"], senders=[("uk", 100)]),
            Rule(senders=[("world", 100)]),
        ]
    )
    assert router.choose("+79161234567", 0.0) == "ru"
    assert router.choose("+447700900123", 0.0) == "uk"
    assert router.choose("+353861234567", 0.0) == "uk"
    assert router.choose("+15551234567", 0.0) == "world"
    assert router.rule_index("+4915112345678") == 2


def test_a_failing_sender_loses_its_share_to_the_others() -> None:
    router = router_70_30()
    before = run(router, start=0, seconds=10)
    assert share(before, "b") == pytest.approx(0.30, abs=0.01)

    # b starts failing at t=10; it trips within the first second, then gets only probes.
    failing = run(router, start=10, seconds=10, failing=frozenset({"b"}))
    assert share(failing, "b") < 0.05
    assert failing["a"] + failing["b"] == 1000
    stats = {s.name: s for s in router.statistics(20.0).senders}
    assert stats["b"].state == "failing"
    assert stats["a"].state == "healthy"


def test_traffic_moves_in_proportion_to_the_remaining_weights() -> None:
    router = VirtualSenderRouter([Rule(senders=[("a", 50), ("b", 30), ("c", 20)])], policy=POLICY)
    run(router, start=0, seconds=2, failing=frozenset({"c"}))
    picks = run(router, start=2, seconds=20)
    assert picks["c"] / 2000 < 0.02
    assert picks["a"] / picks["b"] == pytest.approx(50 / 30, rel=0.02)


def test_a_backup_at_zero_percent_takes_only_the_traffic_others_lose() -> None:
    router = VirtualSenderRouter(
        [Rule(senders=[("a", 70), ("b", 30), ("spare", 0)])], policy=POLICY
    )
    assert run(router, start=0, seconds=10)["spare"] == 0
    picks = run(router, start=10, seconds=10, failing=frozenset({"b"}))
    # b's 30% (less its probes) goes to the spare; a keeps its 70%.
    assert share(picks, "a") == pytest.approx(0.70, abs=0.01)
    assert share(picks, "spare") == pytest.approx(0.28, abs=0.02)
    # A message failing over from a goes to the spare too, not to b.
    assert router.choose(PHONE, 20.0, exclude={"a"}) == "spare"


def test_after_the_cooldown_the_share_comes_back_gradually() -> None:
    router = router_70_30()
    run(router, start=0, seconds=10, failing=frozenset({"b"}))
    tripped_at = router.statistics(10.0).senders[1].tripped_at
    assert tripped_at is not None and 9.0 < tripped_at < 10.0
    # b works again from t=10: it stays at the floor until tripped_at + 30, climbs until
    # tripped_at + 90, and never jumps.
    shares = {
        start: share(run(router, start=start, seconds=10), "b") for start in range(10, 110, 10)
    }
    assert all(shares[start] < 0.05 for start in (10, 20, 30))
    climbing = [shares[start] for start in range(40, 110, 10)]
    assert climbing == sorted(climbing)
    assert max(later - earlier for earlier, later in itertools.pairwise(climbing)) < 0.08
    assert shares[100] == pytest.approx(0.30, abs=0.01)
    assert router.statistics(110.0).senders[1].state == "healthy"


def test_errors_among_the_probes_restart_the_cooldown() -> None:
    router = router_70_30()
    run(router, start=0, seconds=5, failing=frozenset({"b"}))
    first_trip = router.health.statistics(5.0)[1].tripped_at
    run(router, start=5, seconds=60, failing=frozenset({"b"}))
    stats = router.health.statistics(65.0)[1]
    assert stats.state == "failing"
    assert first_trip is not None and stats.tripped_at is not None
    assert stats.tripped_at > first_trip + 30


def test_an_unreachable_sender_gets_nothing_until_its_cooldown_ends() -> None:
    router = router_70_30()
    router.mark_unreachable("b", now=0.0)
    assert run(router, start=0, seconds=30)["b"] == 0
    assert router.statistics(1.0).senders[1].state == "unreachable"
    later = run(router, start=30, seconds=30)
    assert 0 < share(later, "b") < 0.30


def test_a_few_errors_on_a_quiet_sender_do_not_trip_it() -> None:
    tracker = HealthTracker(POLICY)
    for i in range(9):
        tracker.record_result("b", False, now=i / 10)
    tracker.record_result("b", True, now=1.0)  # breaks the run of errors
    for i in range(9):
        tracker.record_result("b", False, now=1.0 + i / 10)
    assert tracker.factor("b", 2.0) == 1.0  # 18 errors of 19: below min_samples
    tracker.record_result("b", False, now=2.0)
    assert tracker.factor("b", 2.0) == POLICY.floor


def test_old_errors_age_out_of_the_window() -> None:
    tracker = HealthTracker(msgspec.structs.replace(POLICY, consecutive_errors=0))
    for i in range(15):
        tracker.record_result("b", False, now=i / 10)
    assert tracker.factor("b", 2.0) == 1.0  # below min_samples
    # The errors leave the 10 s window; a later burst of successes does not count them.
    for i in range(10):
        tracker.record_result("b", False, now=20.0 + i / 10)
    tracker.record_result("b", True, now=21.0, n=15)
    assert tracker.factor("b", 21.5) == 1.0
    stats = tracker.statistics(21.5)[0]
    assert stats.samples == 25
    assert stats.error_ratio == pytest.approx(0.4)


def test_health_is_shared_between_virtual_senders_using_the_same_sender() -> None:
    tracker = HealthTracker(POLICY)
    marketing = VirtualSenderRouter([Rule(senders=[("a", 50), ("b", 50)])], health=tracker)
    alerts = VirtualSenderRouter([Rule(senders=[("b", 50), ("c", 50)])], health=tracker)
    marketing.record_result("b", False, now=0.0, n=50)
    picks = Counter(alerts.choose(PHONE, now=1.0) for _ in range(1000))
    assert picks["b"] < 60


def test_when_every_sender_is_down_the_least_bad_one_is_still_chosen() -> None:
    router = router_70_30()
    router.mark_unreachable("a", now=0.0)
    router.mark_unreachable("b", now=5.0)
    # Both get no traffic, yet a message still goes somewhere: a recovers first.
    assert {router.choose(PHONE, now=10.0) for _ in range(10)} == {"a"}
    router.mark_unreachable("a", now=11.0)
    assert router.choose(PHONE, now=12.0) == "b"


def test_exclude_fails_a_message_over_to_another_sender() -> None:
    router = router_70_30()
    assert {router.choose(PHONE, 0.0, exclude={"a"}) for _ in range(20)} == {"b"}
    # Excluding everything still names a sender: the caller decides to give up.
    assert router.choose(PHONE, 0.0, exclude=("a", "b")) in {"a", "b"}
    router.mark_unreachable("b", now=0.0)
    assert router.choose(PHONE, 1.0, exclude={"a"}) == "b"


def test_statistics_report_effective_weights_and_shares() -> None:
    router = router_70_30()
    router.record_result("b", False, now=0.0, n=40)
    stats = router.statistics(1.0)
    a, b = stats.rules[0].senders
    assert (a.percent, a.effective) == (70, 70)
    assert b.percent == 30
    assert b.effective == pytest.approx(1.5)
    assert a.share + b.share == pytest.approx(1.0)
    assert stats.senders[1].recovered_at == pytest.approx(90.0)
    with pytest.raises(AttributeError):
        stats.rules = ()  # type: ignore[misc]
    msgspec.json.encode(stats)


def test_rules_from_config_are_validated_with_the_key_path() -> None:
    rules = msgspec.json.decode(
        b'[{"prefixes": ["+7"], "senders": [["ru", 100]]}, {"senders": [["w", 1]]}]',
        type=list[Rule],
    )
    assert VirtualSenderRouter(rules).choose("+7916", 0.0) == "ru"
    with pytest.raises(msgspec.ValidationError, match=r"\$\[1\]"):
        msgspec.json.decode(b'[{"senders": [["a", 1]]}, {"senders": []}]', type=list[Rule])
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"senders": [["a", 1]], "prefix": ["+7"]}', type=Rule)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "at least one rule"),
        ([Rule(senders=[("a", 1)]), Rule(senders=[("b", 1)])], "only the last"),
        ([Rule(prefixes=["+7"], senders=[("a", 1)])], "must be the default"),
    ],
)
def test_bad_rule_lists_are_refused(rules: list[Rule], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VirtualSenderRouter(rules)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"senders": []}, "at least one sender"),
        ({"senders": [("a", 0), ("b", 0)]}, "add up to 0"),
        ({"senders": [("a", 1), ("a", 2)]}, "twice"),
        ({"senders": [("a", 1)], "prefixes": ["7"]}, "not '\\+' followed by digits"),
        ({"senders": [("a", 1)], "prefixes": []}, "leave it out"),
    ],
)
def test_bad_rules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rule(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(0.1, 100), min_size=1, max_size=8),
    n=st.integers(1, 400),
)
def test_every_prefix_of_a_run_is_within_two_picks_of_the_exact_share(
    weights: list[float], n: int
) -> None:
    router = VirtualSenderRouter([Rule(senders=[(f"s{i}", w) for i, w in enumerate(weights)])])
    total = sum(weights)
    counts = [0] * len(weights)
    for k in range(1, n + 1):
        counts[int(router.choose(PHONE, 0.0)[1:])] += 1
        for i, w in enumerate(weights):
            assert abs(counts[i] - k * w / total) < 2
