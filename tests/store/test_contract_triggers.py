"""TriggerStore on every store: a trigger mailing's queue hands out seqs in order, keeps
idempotency keys per mailing, and is read back in queue order with each profile."""

from __future__ import annotations

import msgspec
import pytest

from engine.core.states import Outcome
from engine.errors import InputError
from engine.store.base import ORIGIN, ImportRecord, Store, TriggerRow
from engine.store.models import Mailing, Run
from tests.store.helpers import World, fields_of, make_world, messages, reserve

pytestmark = pytest.mark.anyio

_encode = msgspec.json.encode


async def trigger_run(store: Store, w: World, name: str = "welcome") -> tuple[Mailing, Run]:
    mailing = await store.create_mailing(
        name=name, kind="trigger", resource="news", source=w.source(), template="hi",
        limit=None)
    return mailing, await store.start_run(mailing.id)


async def test_enqueue_hands_out_seqs_in_order_and_moves_next_seq(store: Store) -> None:
    w = await make_world(store, 3)
    mailing, run = await trigger_run(store, w)
    out = await store.enqueue_triggers(mailing.id, run.id, [
        (w.ids[0], _encode({"a": 1}), None),
        (w.ids[1], _encode({"a": 2}), "k1"),
        (w.ids[0], _encode({"a": 3}), None),  # no key: never a repeat
    ])
    assert out == [(1, False), (2, False), (3, False)]
    _, now = await store.get_run(run.id)
    assert now.next_seq == 4
    # reserving them (next_seq None: the queue hands out seqs) leaves next_seq alone
    await reserve(store, run.id, [(1, "s", messages(w, [1, 2, 3]))], next_seq=None)
    _, now = await store.get_run(run.id)
    assert now.next_seq == 4
    assert await store.enqueue_triggers(mailing.id, run.id, [(w.ids[2], b"{}", None)]) == [
        (4, False)]


async def test_an_idempotency_key_queues_once_per_mailing(store: Store) -> None:
    w = await make_world(store, 2)
    mailing, run = await trigger_run(store, w)
    first = await store.enqueue_triggers(mailing.id, run.id, [
        (w.ids[0], b'{"n": 1}', "order-1"),
        (w.ids[0], b'{"n": 2}', "order-1"),  # repeated in the same call
    ])
    assert first == [(1, False), (1, True)]
    again = await store.enqueue_triggers(mailing.id, run.id, [
        (w.ids[1], b'{"n": 3}', "order-2"), (w.ids[0], b'{"n": 4}', "order-1")])
    assert again == [(2, False), (1, True)]
    rows = await store.trigger_chunk(run.id, w.resource_id, 0, 10)
    assert [(r.seq, msgspec.json.decode(r.content or b"")) for r in rows] == [
        (1, {"n": 1}), (2, {"n": 3})]
    # another mailing's keys are its own
    other, other_run = await trigger_run(store, w, "other")
    assert await store.enqueue_triggers(other.id, other_run.id, [
        (w.ids[0], b"{}", "order-1")]) == [(1, False)]


async def test_trigger_chunk_reads_the_queue_in_order_with_each_profile(store: Store) -> None:
    w = await make_world(store, 3)
    mailing, run = await trigger_run(store, w)
    await store.set_subscription_status(w.resource_id, [w.ids[2]], "unsubscribed")
    await store.enqueue_triggers(mailing.id, run.id, [
        (w.ids[2], _encode({"i": 0}), None),
        (w.ids[0], _encode({"i": 1}), None),
        (w.ids[1], _encode({"i": 2}), None),
        (w.ids[0], _encode({"i": 3}), None),
    ])
    rows = await store.trigger_chunk(run.id, w.resource_id, 0, 3)
    assert all(isinstance(r, TriggerRow) for r in rows)
    assert [(r.seq, r.profile_id, r.phone) for r in rows] == [
        (1, w.ids[2], None), (2, w.ids[0], w.phones[0]), (3, w.ids[1], w.phones[1])]
    assert fields_of(rows[1].fields) == {"n": 1, "name": "P1"}
    assert rows[1].sub_fields is None
    assert [msgspec.json.decode(r.content or b"") for r in rows] == [
        {"i": 0}, {"i": 1}, {"i": 2}]
    ids = [r.queue_id for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == 3
    rest = await store.trigger_chunk(run.id, w.resource_id, rows[-1].queue_id, 3)
    assert [(r.seq, r.profile_id) for r in rest] == [(4, w.ids[0])]
    assert await store.trigger_chunk(run.id, w.resource_id, rest[-1].queue_id, 3) == []
    # another run's queue is not this one's
    _, later = await trigger_run(store, w, "later")
    assert await store.trigger_chunk(later.id, w.resource_id, 0, 10) == []


async def test_custom_data_is_kept_with_its_message_and_a_repeat_keeps_the_first(
    store: Store,
) -> None:
    w = await make_world(store, 3)
    mailing, run = await trigger_run(store, w)
    out = await store.enqueue_triggers(mailing.id, run.id, [
        (w.ids[0], b"{}", "k1"), (w.ids[1], b"{}", None), (w.ids[2], b"{}", None),
    ], custom_data=[b'{"order": 1}', None, b'{"order": 3}'])
    assert out == [(1, False), (2, False), (3, False)]
    # a repeated key queues nothing: its custom_data is the first call's
    assert await store.enqueue_triggers(mailing.id, run.id, [(w.ids[0], b"{}", "k1")],
                                        custom_data=[b'{"order": 99}']) == [(1, True)]
    # the queue's rows are as before (custom_data is never rendered)
    rows = await store.trigger_chunk(run.id, w.resource_id, 0, 10)
    assert [r.seq for r in rows] == [1, 2, 3]
    msgs = messages(w, [1, 2, 3])
    await reserve(store, run.id, [(1, "s", msgs)], next_seq=None)
    await store.record(run.id, 1, "s", msgs, [Outcome(m.seq, "sent") for m in msgs])
    events = await store.hook_events(ORIGIN, 10)
    assert [(e.seq, msgspec.json.decode(e.custom_data) if e.custom_data else None)
            for e in events] == [(1, {"order": 1}), (2, None), (3, {"order": 3})]
    with pytest.raises(ValueError, match="one per item"):
        await store.enqueue_triggers(mailing.id, run.id, [(w.ids[0], b"{}", None)],
                                     custom_data=[])


async def test_find_profiles_by_a_custom_fields_value_as_text(store: Store) -> None:
    w = await make_world(store, 3)
    await store.import_profiles(w.database_id, [
        ImportRecord(w.phones[0], None, None, {"code": "A-1", "vip": True}),
        ImportRecord(w.phones[1], None, None, {"code": 7, "vip": False}),
    ], matching="phone", resource_id=None)
    # fields {"n": i, "name": "P<i>", ...}: a number matches its JSON text, a string as
    # is (case and all), a boolean as 1 or 0
    assert await store.find_profiles(w.database_id, "field:n", ["1", "3", "7"]) == {
        "1": w.ids[0], "3": w.ids[2]}
    assert await store.find_profiles(w.database_id, "field:name", ["P2", "p2"]) == {
        "P2": w.ids[1]}
    assert await store.find_profiles(w.database_id, "field:code", ["A-1", "7", "a-1"]) == {
        "A-1": w.ids[0], "7": w.ids[1]}
    assert await store.find_profiles(w.database_id, "field:vip", ["1", "0"]) == {
        "1": w.ids[0], "0": w.ids[1]}
    assert await store.find_profiles(w.database_id, "field:missing", ["1"]) == {}
    assert await store.find_profiles(w.database_id, "field:n", []) == {}
    other = await store.database_id("other", create=True)
    assert await store.find_profiles(other, "field:n", ["1"]) == {}
    # the oldest profile wins, as by phone
    await store.import_profiles(w.database_id, [
        ImportRecord("+15550000001", "+15550000001", None, {"code": "A-1"})],
        matching="phone", resource_id=None)
    assert await store.find_profiles(w.database_id, "field:code", ["A-1"]) == {
        "A-1": w.ids[0]}
    with pytest.raises(InputError):
        await store.find_profiles(w.database_id, "city", ["x"])
