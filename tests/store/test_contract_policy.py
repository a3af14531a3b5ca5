"""PolicyStore on every store: the message history that sending policies count, from the
moment messages are reserved, per profile or per phone, over a window of days."""

from __future__ import annotations

import time

import pytest

from engine.core.policy import Policy
from engine.core.prepare import Skipped
from engine.core.states import Outcome
from engine.store.base import Store
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
