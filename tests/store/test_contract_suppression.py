"""SuppressionStore on every store, and the suppression half of ``lookup``: a global list
applies to every run, another list only where it is attached."""

from __future__ import annotations

import pytest

from engine.errors import InputError, NotFound
from engine.store.base import Store
from tests.store.helpers import make_world, new_run, phone

pytestmark = pytest.mark.anyio


async def test_add_suppressions_counts_only_new_values(store: Store) -> None:
    assert await store.add_suppressions("stop", "phone", [phone(1), phone(2)]) == 2
    assert await store.add_suppressions("stop", "phone", [phone(2), phone(3)]) == 1
    assert await store.add_suppressions("stop", "email", ["a@example.com"]) == 1
    # the same value in another list, or as another kind, is new there
    assert await store.add_suppressions("vip", "phone", [phone(1)], is_global=False) == 1
    assert await store.add_suppressions("stop", "domain", ["example.com"]) == 1
    with pytest.raises(InputError):
        await store.add_suppressions("stop", "fax", ["123"])


async def test_suppression_lists_describe_each_list(store: Store) -> None:
    w = await make_world(store, 1)
    mailing, _ = await new_run(store, w)
    await store.add_suppressions("stop", "phone", [phone(1), phone(2)])
    await store.add_suppressions("stop", "email", ["a@example.com"])
    await store.add_suppressions("local", "phone", [phone(3)], is_global=False)
    await store.add_suppressions("mine", "phone", [phone(4)], is_global=False)
    await store.attach_suppression_list("local", database_id=w.database_id)
    await store.attach_suppression_list("local", database_id=w.database_id)  # once is enough
    await store.attach_suppression_list("mine", mailing_id=mailing.id)
    assert await store.suppression_lists() == [
        {"name": "local", "global": False, "counts": {"phone": 1},
         "databases": ["main"], "mailings": []},
        {"name": "mine", "global": False, "counts": {"phone": 1},
         "databases": [], "mailings": [mailing.id]},
        {"name": "stop", "global": True, "counts": {"phone": 2, "email": 1},
         "databases": [], "mailings": []},
    ]


async def test_attaching_needs_a_list_and_exactly_one_target(store: Store) -> None:
    w = await make_world(store, 1)
    with pytest.raises(NotFound, match="no suppression list named 'nope'"):
        await store.attach_suppression_list("nope", database_id=w.database_id)
    await store.add_suppressions("local", "phone", [phone(1)], is_global=False)
    with pytest.raises(InputError):
        await store.attach_suppression_list("local")
    mailing, _ = await new_run(store, w)
    with pytest.raises(InputError):
        await store.attach_suppression_list(
            "local", database_id=w.database_id, mailing_id=mailing.id)


async def test_lookup_finds_the_phones_of_the_lists_that_apply(store: Store) -> None:
    w = await make_world(store, 1)
    o = await make_world(store, 1, database="other", first=50)
    mailing, run = await new_run(store, w)
    _, other_run = await new_run(store, o, name="other")
    phones = [phone(i) for i in range(1, 6)]
    await store.add_suppressions("stop", "phone", [phone(1)])
    await store.add_suppressions("stop", "email", ["p2@example.com"])  # not a phone
    await store.add_suppressions("db", "phone", [phone(2)], is_global=False)
    await store.add_suppressions("run", "phone", [phone(3)], is_global=False)
    await store.add_suppressions("idle", "phone", [phone(4)], is_global=False)
    assert await store.lookup(run.id, phones, []) == ({phone(1)}, set())
    # attached after the run's first look: the next look sees it
    await store.attach_suppression_list("db", database_id=w.database_id)
    await store.attach_suppression_list("run", mailing_id=mailing.id)
    assert (await store.lookup(run.id, phones, []))[0] == {phone(1), phone(2), phone(3)}
    # and values added later count at once
    await store.add_suppressions("stop", "phone", [phone(5)])
    assert (await store.lookup(run.id, phones, []))[0] == {
        phone(1), phone(2), phone(3), phone(5)}
    # another database's run sees only the global list
    assert (await store.lookup(other_run.id, phones, []))[0] == {phone(1), phone(5)}
    assert await store.lookup(run.id, [], []) == (set(), set())
