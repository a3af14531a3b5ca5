"""PolicyStore on every store: the message history that sending policies count, from the
moment messages are reserved, per profile or per phone, over a window of days."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engine.core.policy import Policy
from engine.core.prepare import Skipped
from engine.core.states import Outcome
from engine.store.base import Store
from engine.store.open import open_store
from engine.store.sqlite import policy as sqlite_policy
from tests.store.helpers import DAY, make_world, message, messages, new_run, phone, reserve

pytestmark = pytest.mark.anyio


def policy(scope: str, days: int = 3) -> Policy:
    return Policy(max_messages=5, period_days=days, scope=scope)  # type: ignore[arg-type]


async def test_reserved_messages_count_per_profile_from_the_start(store: Store) -> None:
    w = await make_world(store, 4)
    _, run = await new_run(store, w)
    msgs = messages(w, [1, 2])
    await reserve(store, run.id, [(1, "s", msgs)],
                  skipped=[Skipped(3, w.ids[2], w.phones[2], "suppressed")])
    now = time.time()  # the history is kept by the day messages are reserved: today
    counts = await store.policy_counts(policy("profile"), w.resource_id, w.ids, now)
    assert counts == {w.ids[0]: 1, w.ids[1]: 1}  # the skipped one and the others: none
    # a message that failed still counts; a second run's count adds up
    await store.record(run.id, 1, "s", msgs, [Outcome(1, "failed", "rejected"),
                                              Outcome(2, "sent", provider_id="x")])
    _, second = await new_run(store, w, name="again")
    await reserve(store, second.id, [(1, "s", messages(w, [1]))])
    counts = await store.policy_counts(policy("profile"), w.resource_id, w.ids, now)
    assert counts == {w.ids[0]: 2, w.ids[1]: 1}


async def test_the_window_ends_today_and_spans_period_days(store: Store) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    await reserve(store, run.id, [(1, "s", messages(w, [1]))])
    now = time.time()
    three = policy("profile", days=3)
    assert await store.policy_counts(three, w.resource_id, w.ids, now + 2 * DAY) == {
        w.ids[0]: 1}
    assert await store.policy_counts(three, w.resource_id, w.ids, now + 3 * DAY) == {}
    one = policy("profile", days=1)
    assert await store.policy_counts(one, w.resource_id, w.ids, now + DAY) == {}


async def test_profile_resource_counts_only_the_resources_messages(store: Store) -> None:
    w = await make_world(store, 2)
    _, news = await new_run(store, w, resource="news")
    _, offers = await new_run(store, w, name="offers", resource="offers")
    await reserve(store, news.id, [(1, "s", messages(w, [1]))])
    await reserve(store, offers.id, [(1, "s", messages(w, [1, 2]))])
    now = time.time()
    offers_id = await store.resource_id("offers")
    assert await store.policy_counts(policy("profile_resource"), w.resource_id, w.ids,
                                     now) == {w.ids[0]: 1}
    assert await store.policy_counts(policy("profile_resource"), offers_id, w.ids, now) == {
        w.ids[0]: 1, w.ids[1]: 1}
    for scope in ("profile", "profile_channel"):
        assert await store.policy_counts(policy(scope), w.resource_id, w.ids, now) == {
            w.ids[0]: 2, w.ids[1]: 1}
    # profile_channel: the resources of the mailing's channel (here "offers" alone, as if
    # "news" sent the other channel); without them, every resource's
    assert await store.policy_counts(policy("profile_channel"), offers_id, w.ids, now,
                                     channel_resources=[offers_id]) == {
        w.ids[0]: 1, w.ids[1]: 1}
    assert await store.policy_counts(policy("profile_channel"), offers_id, w.ids, now,
                                     channel_resources=[offers_id, w.resource_id]) == {
        w.ids[0]: 2, w.ids[1]: 1}


async def test_contact_counts_per_phone_whichever_profile_it_belongs_to(
    store: Store,
) -> None:
    w = await make_world(store, 2)
    _, run = await new_run(store, w)
    shared = phone(1)
    await reserve(store, run.id, [(1, "s", [message(1, w.ids[0], shared),
                                            message(2, w.ids[1], w.phones[1])])])
    _, other = await new_run(store, w, name="other")
    await reserve(store, other.id, [(1, "s", [message(1, w.ids[1], shared)])])
    counts = await store.policy_counts(policy("contact"), w.resource_id,
                                       [shared, w.phones[1], phone(77)], time.time())
    assert counts == {shared: 2, w.phones[1]: 1}


@pytest.mark.parametrize("fold_at", [1, 2, 3, sqlite_policy.FOLD_AT])
async def test_contact_counts_hold_across_many_reservations(
    store: Store, monkeypatch: pytest.MonkeyPatch, fold_at: int
) -> None:
    """SQLite appends each reserved contact to a recent log and folds it into the
    per-phone counts every ``FOLD_AT`` messages (made small here, so that folds fall
    between reservations and inside one); the counts read the same whatever was folded."""
    monkeypatch.setattr(sqlite_policy, "FOLD_AT", fold_at)
    w = await make_world(store, 4)
    shared = phone(1)
    expected: Counter[str] = Counter()
    by_profile: Counter[int] = Counter()
    asked = [*w.phones, shared, phone(77)]
    for r in range(5):
        _, run = await new_run(store, w, name=f"m{r}")
        batch = [message(1, w.ids[0], shared), message(2, w.ids[1], w.phones[1])]
        if r % 2:
            batch.append(message(3, w.ids[2], w.phones[2]))
        await reserve(store, run.id, [(1, "s", batch)])
        expected.update(m.phone for m in batch)
        by_profile.update(m.profile_id for m in batch)
        now = time.time()
        assert await store.policy_counts(policy("contact"), w.resource_id, asked,
                                         now) == dict(expected)
        assert await store.policy_counts(policy("profile"), w.resource_id, w.ids,
                                         now) == dict(by_profile)
    assert expected[shared] == 5 and expected[w.phones[2]] == 2
    # folded or recent, a count leaves the window on the same day
    later = time.time() + 3 * DAY
    assert await store.policy_counts(policy("contact", days=3), w.resource_id, asked,
                                     later) == {}
    assert await store.policy_counts(policy("contact", days=4), w.resource_id, asked,
                                     later) == dict(expected)


@pytest.mark.parametrize("fold_at", [2, 5, sqlite_policy.FOLD_AT])
async def test_two_stores_on_one_database_count_each_others_messages(
    store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch, fold_at: int
) -> None:
    """Two processes share the history: what one reserves, the other counts at once,
    and a fold by either (every ``fold_at`` messages on SQLite) counts nothing twice
    or not at all in the other's next read."""
    monkeypatch.setattr(sqlite_policy, "FOLD_AT", fold_at)
    w = await make_world(store, 3)
    other = await open_store(store_url)
    try:
        expected: Counter[str] = Counter()
        for r in range(4):
            mine, theirs = (store, other) if r % 2 == 0 else (other, store)
            _, run = await new_run(mine, w, name=f"m{r}")
            batch = [message(1, w.ids[0], w.phones[0]), message(2, w.ids[1], w.phones[r % 3])]
            await reserve(mine, run.id, [(1, "s", batch)])
            expected.update(m.phone for m in batch)
            for reader in (theirs, mine, theirs):
                assert await reader.policy_counts(policy("contact"), w.resource_id,
                                                  w.phones, time.time()) == dict(expected)
        assert expected[w.phones[0]] == 6
    finally:
        await other.aclose()


async def test_a_reader_that_missed_a_fold_counts_each_message_once(
    store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other store reads between two reservations of this one, the second of which
    folds (SQLite: ``FOLD_AT`` 3) and is followed by more before it reads again."""
    monkeypatch.setattr(sqlite_policy, "FOLD_AT", 3)
    w = await make_world(store, 2)
    other = await open_store(store_url)
    try:
        contact = policy("contact")
        batch = messages(w, [1, 2])
        for r, expected in enumerate(({w.phones[0]: 1, w.phones[1]: 1},
                                      {w.phones[0]: 3, w.phones[1]: 3})):
            for k in range(1 if r == 0 else 2):  # the first of the two folds
                _, run = await new_run(store, w, name=f"m{r}-{k}")
                await reserve(store, run.id, [(1, "s", batch)])
            assert await other.policy_counts(contact, w.resource_id, w.phones,
                                             time.time()) == expected
    finally:
        await other.aclose()
