"""SubscriptionStore on every store: the API's reads and writes of one profile's or one
phone's SMS subscriptions to a resource."""

from __future__ import annotations

import pytest

from engine.store.base import Store, SubscriptionRow
from tests.store.helpers import audience, make_world, phone

pytestmark = pytest.mark.anyio


async def test_find_subscriptions_by_profile_phone_and_database(store: Store) -> None:
    w = await make_world(store, 3)
    o = await make_world(store, 1, database="other", first=3)  # shares phone(3) with w
    (row,) = await store.find_subscriptions(w.resource_id, profile_id=w.ids[0])
    assert isinstance(row, SubscriptionRow)
    assert row[:6] == (w.ids[0], "main", phone(1), "sms", "subscribed", 0)
    assert row.created_at <= row.updated_at
    both = await store.find_subscriptions(w.resource_id, phone=phone(3))
    assert [(r.profile_id, r.database) for r in both] == [(w.ids[2], "main"), (o.ids[0], "other")]
    assert [r.profile_id for r in await store.find_subscriptions(
        w.resource_id, phone=phone(3), database_id=o.database_id)] == o.ids
    assert [r.profile_id for r in await store.find_subscriptions(
        w.resource_id, database_id=w.database_id, limit=2)] == w.ids[:2]
    offers = await store.resource_id("offers")
    assert await store.find_subscriptions(offers, profile_id=w.ids[0]) == []


async def test_a_profiles_subscriptions_come_oldest_first(store: Store) -> None:
    w = await make_world(store, 1)
    assert await store.subscribe(w.resource_id, w.ids[0], phone(50)) == 1
    rows = await store.find_subscriptions(w.resource_id, profile_id=w.ids[0])
    assert [r.phone for r in rows] == [phone(1), phone(50)]
    # the audience reads the best one: same priority, so the oldest
    (row,) = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 10))
    assert row.phone == phone(1)
    await store.unsubscribe_phone(w.resource_id, phone(1))
    (row,) = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 10))
    assert row.phone == phone(50)


async def test_subscribe_says_whether_anything_changed(store: Store) -> None:
    w = await make_world(store, 1)
    assert await store.subscribe(w.resource_id, w.ids[0], phone(1)) == 0  # already is
    assert await store.unsubscribe_phone(w.resource_id, phone(1)) == 1
    (row,) = await store.find_subscriptions(w.resource_id, profile_id=w.ids[0])
    assert row.status == "unsubscribed"
    assert await store.subscribe(w.resource_id, w.ids[0], phone(1)) == 1  # re-subscribed
    (row,) = await store.find_subscriptions(w.resource_id, profile_id=w.ids[0])
    assert row.status == "subscribed"
    offers = await store.resource_id("offers")
    assert await store.subscribe(offers, w.ids[0], phone(1)) == 1
    assert len(await store.find_subscriptions(offers, phone=phone(1))) == 1


async def test_unsubscribe_phone_narrows_to_the_profile_or_database_given(
    store: Store,
) -> None:
    w = await make_world(store, 2)
    o = await make_world(store, 1, database="other", first=1)  # phone(1) in both
    await store.subscribe(w.resource_id, w.ids[1], phone(1))  # and on a second profile
    assert await store.unsubscribe_phone(w.resource_id, phone(1), profile_id=w.ids[1]) == 1
    assert await store.unsubscribe_phone(
        w.resource_id, phone(1), database_id=o.database_id) == 1
    still = await store.find_subscriptions(w.resource_id, phone=phone(1))
    assert [(r.profile_id, r.status) for r in still] == [
        (w.ids[0], "subscribed"), (w.ids[1], "unsubscribed"), (o.ids[0], "unsubscribed")]
    assert await store.unsubscribe_phone(w.resource_id, phone(1)) == 1
    assert await store.unsubscribe_phone(w.resource_id, phone(1)) == 0
    assert await store.unsubscribe_phone(w.resource_id, phone(99)) == 0


async def test_profile_phone(store: Store) -> None:
    w = await make_world(store, 1)
    assert await store.profile_phone(w.ids[0]) == (w.database_id, phone(1))
    assert await store.profile_phone(w.ids[0] + 1000) is None
