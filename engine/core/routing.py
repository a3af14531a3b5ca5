"""Which real sender a virtual sender's message goes through, and how sender health moves traffic.

Sans-I/O: every method takes ``now`` (monotonic seconds); nothing reads a clock.

A virtual sender has ordered ``rules``; the first rule whose prefixes match the phone (E.164,
``+`` first) wins, and the last rule, without prefixes, is the default. A rule lists senders
with percentages (like an Altcraft SMS rule).

**Choice: smooth weighted round-robin** (nginx's upstream algorithm), not a seeded random
draw. Every choice adds each sender's effective weight to its running score, picks the highest
and takes the total off the winner. It is deterministic (tests need no RNG), costs O(senders)
and spreads best: at every point of a run each sender's count stays within a pick or two of
its exact share (half a pick with two senders) and picks interleave instead of clumping,
whereas a random draw strays by about ``sqrt(n)`` picks. It adapts smoothly when weights
change, which is what the health model below does all the time.

**Health** (``HealthTracker``, shareable between routers since a sender's account is one):
results go into a time-based sliding window (``window`` seconds in ten buckets, so old errors
age out). Once it holds ``min_samples`` results and the error ratio exceeds
``error_threshold``, or after ``consecutive_errors`` errors in a row (so a hard outage trips at
once instead of waiting for the successes before it to age out), the sender *trips*: its weight
factor drops to ``floor`` (0 if ``mark_unreachable``), the window is cleared, and its traffic
goes to the rule's backups (senders at 0%) if it has any, else to the other senders of the rule
in proportion to their weights. The floor keeps a trickle of probe traffic; errors among the
probes trip it again and restart the cooldown. ``cooldown`` seconds after the last trip the
factor climbs linearly back to 1 over ``recovery`` seconds, so a recovering sender, and the
senders that covered for it, are not hit by a step change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "HealthPolicy",
    "HealthTracker",
    "RouterStats",
    "Rule",
    "RuleStats",
    "SenderHealthStats",
    "SenderWeight",
    "VirtualSenderRouter",
]

_PREFIX = re.compile(r"\+[0-9]{1,15}")
_BUCKETS = 10

HealthState = Literal["healthy", "failing", "unreachable", "recovering"]


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One routing rule: ``senders`` as ``(name, percent)`` pairs, for phones starting with one
    of ``prefixes`` (country calling codes such as ``"+7"``, ``"+44"``); ``None`` is the
    default rule. Percentages are relative weights: they need not add up to 100.

    A sender at 0 is a backup: it gets the weight the others lose to bad health (shared
    equally among the backups) and the traffic of a message failing over (``exclude``).
    Without backups, a failing sender's traffic goes to the other senders by their weights.
    """

    senders: list[tuple[str, Annotated[float, Meta(ge=0)]]]
    prefixes: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.senders:
            raise ValueError("a rule needs at least one sender")
        names = [name for name, _ in self.senders]
        if len(set(names)) != len(names):
            raise ValueError(f"a sender is listed twice in one rule: {names}")
        for name, percent in self.senders:
            if not name:
                raise ValueError("a sender name is empty")
            if not percent >= 0 or math.isinf(percent):
                raise ValueError(f"sender {name!r}: percent must be a number >= 0")
        if sum(percent for _, percent in self.senders) <= 0:
            raise ValueError("the percentages of a rule add up to 0: nothing could be chosen")
        if self.prefixes is not None:
            if not self.prefixes:
                raise ValueError("prefixes is empty; leave it out for the default rule")
            for prefix in self.prefixes:
                if not _PREFIX.fullmatch(prefix):
                    raise ValueError(f"prefix {prefix!r} is not '+' followed by digits")


class HealthPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """When a sender counts as failing and how it comes back. Times are in seconds.

    Counts are of results as fed to ``record_result``: feed one per message, or ``n=1`` per
    request if a failed batch should weigh as one error. ``consecutive_errors = 0`` turns the
    in-a-row trigger off.
    """

    error_threshold: Annotated[float, Meta(gt=0, le=1)] = 0.5
    min_samples: Annotated[int, Meta(ge=1)] = 20
    consecutive_errors: Annotated[int, Meta(ge=0)] = 10
    window: Annotated[float, Meta(gt=0)] = 30.0
    cooldown: Annotated[float, Meta(ge=0)] = 30.0
    recovery: Annotated[float, Meta(ge=0)] = 60.0
    floor: Annotated[float, Meta(ge=0, le=1)] = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.error_threshold <= 1:
            raise ValueError("error_threshold must be in (0, 1]")
        if self.min_samples < 1:
            raise ValueError("min_samples must be >= 1")
        if self.consecutive_errors < 0:
            raise ValueError("consecutive_errors must be >= 0 (0 = off)")
        if not 0 < self.window < math.inf:
            raise ValueError("window must be a finite number > 0")
        if not 0 <= self.cooldown < math.inf or not 0 <= self.recovery < math.inf:
            raise ValueError("cooldown and recovery must be finite numbers >= 0")
        if not 0 <= self.floor <= 1:
            raise ValueError("floor must be in [0, 1]")


class SenderHealthStats(msgspec.Struct, frozen=True, kw_only=True):
    """Health of one sender. ``factor`` multiplies its configured weight in every rule.

    ``error_ratio`` and ``samples`` cover the sliding window (cleared at each trip);
    ``recovered_at`` is when ``factor`` is back at 1 (``None`` when healthy).
    """

    name: str
    state: HealthState
    factor: float
    error_ratio: float
    samples: int
    tripped_at: float | None
    recovered_at: float | None


class SenderWeight(msgspec.Struct, frozen=True, kw_only=True):
    """A sender inside a rule: configured ``percent``, ``effective`` weight and its ``share``."""

    name: str
    percent: float
    effective: float
    share: float


class RuleStats(msgspec.Struct, frozen=True, kw_only=True):
    """Effective weights of one rule; ``prefixes`` is ``None`` for the default rule."""

    prefixes: tuple[str, ...] | None
    senders: tuple[SenderWeight, ...]


class RouterStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a router: its rules' weights and the health of every sender it knows."""

    rules: tuple[RuleStats, ...]
    senders: tuple[SenderHealthStats, ...]


class _Health:
    """Health of one sender; see the module docstring."""

    __slots__ = ("down", "errs", "ids", "name", "oks", "policy", "streak", "tripped_at", "width")

    def __init__(self, name: str, policy: HealthPolicy) -> None:
        self.name = name
        self.policy = policy
        self.width = policy.window / _BUCKETS
        self.oks = [0] * _BUCKETS
        self.errs = [0] * _BUCKETS
        self.ids = [-math.inf] * _BUCKETS
        self.tripped_at: float | None = None
        self.down = 1.0
        self.streak = 0

    def counts(self, now: float) -> tuple[int, int]:
        """(ok, errors) in the window ending at ``now``."""
        oldest = now // self.width - _BUCKETS
        ok = err = 0
        for slot in range(_BUCKETS):
            if self.ids[slot] > oldest:
                ok += self.oks[slot]
                err += self.errs[slot]
        return ok, err

    def record(self, ok: bool, now: float, n: int) -> None:
        idx = now // self.width
        slot = int(idx % _BUCKETS)
        if self.ids[slot] != idx:
            self.ids[slot] = idx
            self.oks[slot] = 0
            self.errs[slot] = 0
        if ok:
            self.oks[slot] += n
            self.streak = 0
            return
        self.errs[slot] += n
        self.streak += n
        policy = self.policy
        if policy.consecutive_errors and self.streak >= policy.consecutive_errors:
            self.trip(now, policy.floor)
            return
        good, bad = self.counts(now)
        if good + bad >= policy.min_samples and bad > policy.error_threshold * (good + bad):
            self.trip(now, policy.floor)

    def trip(self, now: float, down: float) -> None:
        self.tripped_at = now
        self.down = down
        self.ids = [-math.inf] * _BUCKETS
        self.streak = 0

    def factor(self, now: float) -> float:
        tripped_at = self.tripped_at
        if tripped_at is None:
            return 1.0
        policy = self.policy
        climbing = now - tripped_at - policy.cooldown
        if climbing < 0:
            return self.down
        if climbing >= policy.recovery:
            self.tripped_at = None
            return 1.0
        return self.down + (1.0 - self.down) * climbing / policy.recovery

    def recovers_at(self) -> float:
        """When the factor starts climbing again (``-inf`` when healthy)."""
        if self.tripped_at is None:
            return -math.inf
        return self.tripped_at + self.policy.cooldown

    def statistics(self, now: float) -> SenderHealthStats:
        factor = self.factor(now)
        ok, err = self.counts(now)
        tripped_at = self.tripped_at
        state: HealthState
        if tripped_at is None:
            state = "healthy"
        elif now < tripped_at + self.policy.cooldown:
            state = "unreachable" if self.down == 0 else "failing"
        else:
            state = "recovering"
        return SenderHealthStats(
            name=self.name,
            state=state,
            factor=factor,
            error_ratio=err / (ok + err) if ok + err else 0.0,
            samples=ok + err,
            tripped_at=tripped_at,
            recovered_at=(
                None
                if tripped_at is None
                else tripped_at + self.policy.cooldown + self.policy.recovery
            ),
        )


class HealthTracker:
    """Per-sender health shared by every router that routes through the same senders."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy if policy is not None else HealthPolicy()
        self._senders: dict[str, _Health] = {}

    def _get(self, sender: str) -> _Health:
        health = self._senders.get(sender)
        if health is None:
            health = self._senders[sender] = _Health(sender, self.policy)
        return health

    def record_result(self, sender: str, ok: bool, now: float, n: int = 1) -> None:
        """Count ``n`` results of ``sender``: ``ok=False`` for a gateway failure (5xx, timeout,
        lost connection). A message the gateway refused for its content is not the sender's
        fault and a throttle belongs to the rate limiter: record neither as an error.
        """
        if n > 0:
            self._get(sender).record(ok, now, n)

    def mark_unreachable(self, sender: str, now: float) -> None:
        """``sender`` cannot be reached at all: give it no traffic until its cooldown ends."""
        self._get(sender).trip(now, 0.0)

    def factor(self, sender: str, now: float) -> float:
        """The multiplier on ``sender``'s configured weight: 1 when healthy, down to 0."""
        health = self._senders.get(sender)
        return 1.0 if health is None else health.factor(now)

    def statistics(self, now: float) -> tuple[SenderHealthStats, ...]:
        """Health of every sender seen so far, by name."""
        return tuple(self._senders[name].statistics(now) for name in sorted(self._senders))


class _CompiledRule:
    __slots__ = ("backups", "current", "healths", "healthy", "names", "percents", "prefixes",
                 "weighted")

    def __init__(self, rule: Rule, tracker: HealthTracker) -> None:
        self.names = tuple(name for name, _ in rule.senders)
        self.percents = tuple(float(percent) for _, percent in rule.senders)
        self.healths = tuple(tracker._get(name) for name in self.names)
        self.current = [0.0] * len(self.names)
        self.prefixes = None if rule.prefixes is None else tuple(rule.prefixes)
        self.weighted = tuple(i for i, p in enumerate(self.percents) if p > 0)
        self.backups = tuple(i for i, p in enumerate(self.percents) if p == 0)
        #: The weights while every weighted sender is healthy and none is excluded.
        self.healthy = tuple((i, p) for i, p in enumerate(self.percents) if p > 0)

    def weights(self, now: float, exclude: Collection[str]) -> list[float]:
        """Effective weight of each sender: percent times health factor, 0 when excluded;
        backups (percent 0) share what the weighted senders lost.
        """
        percents = self.percents
        healths = self.healths
        names = self.names
        weights = [0.0] * len(names)
        lost = 0.0
        for i in self.weighted:
            if exclude and names[i] in exclude:
                lost += percents[i]
                continue
            health = healths[i]
            if health.tripped_at is None:
                weights[i] = percents[i]
            else:
                weights[i] = weight = percents[i] * health.factor(now)
                lost += percents[i] - weight
        if lost > 0.0 and self.backups:
            share = lost / len(self.backups)
            for i in self.backups:
                if not (exclude and names[i] in exclude):
                    weights[i] = share * healths[i].factor(now)
        return weights


class VirtualSenderRouter:
    """Picks the real sender for each message of one virtual sender.

    ``rules`` are tried in order; the last one must be the default (no prefixes) and only the
    last. Pass a shared ``health`` tracker when several virtual senders use the same senders.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        health: HealthTracker | None = None,
        policy: HealthPolicy | None = None,
    ) -> None:
        if not rules:
            raise ValueError("a virtual sender needs at least one rule (the default)")
        for index, rule in enumerate(rules):
            is_last = index == len(rules) - 1
            if rule.prefixes is None and not is_last:
                raise ValueError(f"rules[{index}] has no prefixes: only the last rule may")
            if rule.prefixes is not None and is_last:
                raise ValueError(f"rules[{index}]: the last rule must be the default (no prefixes)")
        if health is not None and policy is not None:
            raise ValueError("pass either a shared health tracker or a policy, not both")
        self.health = health if health is not None else HealthTracker(policy)
        self._rules = tuple(_CompiledRule(rule, self.health) for rule in rules)

    def _match(self, phone: str) -> _CompiledRule:
        for rule in self._rules:
            if rule.prefixes is None or phone.startswith(rule.prefixes):
                return rule
        raise AssertionError("unreachable: the last rule is the default")

    def rule_index(self, phone: str) -> int:
        """The index of the rule ``phone`` falls under."""
        return self._rules.index(self._match(phone))

    def rule_senders(self, phone: str, *, backups: bool = False) -> tuple[str, ...]:
        """The senders of the rule ``phone`` falls under: those with a share of the
        traffic, and with ``backups`` the ones at 0 percent too."""
        rule = self._match(phone)
        return tuple(name for name, percent in zip(rule.names, rule.percents, strict=True)
                     if backups or percent > 0)

    def choose(self, phone: str, now: float, exclude: Collection[str] = ()) -> str:
        """The sender for a message to ``phone``.

        ``exclude`` lists senders not to use (the ones a message already failed on, for
        failover). It is a preference: when it leaves no usable sender, the least-bad sender
        is returned anyway, excluded or not, so this never raises and always names a sender.
        The caller decides whether trying it again is worth it.
        """
        rule = self._match(phone)
        pairs: Sequence[tuple[int, float]] = rule.healthy
        failing = bool(exclude) or not pairs
        if not failing:  # a loop, not any(...): no generator made per message
            for health in rule.healths:
                if health.tripped_at is not None:
                    failing = True
                    break
        if failing:  # someone is excluded or failing: the weights health and exclusion leave
            pairs = [(i, w) for i, w in enumerate(rule.weights(now, exclude)) if w > 0.0]
        current = rule.current
        total = 0.0
        best = -1
        best_score = -math.inf
        for i, weight in pairs:
            score = current[i] + weight
            current[i] = score
            total += weight
            if score > best_score:
                best_score = score
                best = i
        if best < 0:
            return self._least_bad(rule, exclude, now)
        current[best] -= total
        return rule.names[best]

    @staticmethod
    def _least_bad(rule: _CompiledRule, exclude: Collection[str], now: float) -> str:
        # Not excluded first, then the highest factor, the soonest recovery, the biggest weight.
        def badness(i: int) -> tuple[bool, float, float, float, int]:
            health = rule.healths[i]
            return (
                rule.names[i] in exclude,
                -health.factor(now),
                health.recovers_at(),
                -rule.percents[i],
                i,
            )

        return rule.names[min(range(len(rule.names)), key=badness)]

    def record_result(self, sender: str, ok: bool, now: float, n: int = 1) -> None:
        """Feed ``n`` results of ``sender`` to the health model (see ``HealthTracker``)."""
        self.health.record_result(sender, ok, now, n)

    def mark_unreachable(self, sender: str, now: float) -> None:
        """``sender`` cannot be reached: route around it until its cooldown ends."""
        self.health.mark_unreachable(sender, now)

    def statistics(self, now: float) -> RouterStats:
        """Effective weights per rule and the health of every sender, at ``now``."""
        rules = []
        for rule in self._rules:
            effective = rule.weights(now, ())
            total = sum(effective)
            rules.append(
                RuleStats(
                    prefixes=rule.prefixes,
                    senders=tuple(
                        SenderWeight(
                            name=name,
                            percent=percent,
                            effective=weight,
                            share=weight / total if total > 0 else 0.0,
                        )
                        for name, percent, weight in zip(
                            rule.names, rule.percents, effective, strict=True
                        )
                    ),
                )
            )
        names = sorted({name for rule in self._rules for name in rule.names})
        return RouterStats(
            rules=tuple(rules),
            senders=tuple(self.health._get(name).statistics(now) for name in names),
        )
