"""SegmentStore on every store: static and dynamic segments, found by name or id, counted,
sampled and paged as of a fake ``now``, and read as a run's audience. What each condition
means is ``test_conditions.py``'s business; this is the role's contract."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import InputError, NotFound
from engine.segments.condition import compile_condition
from engine.store.base import ImportRecord, Member, SegmentRow, Store
from engine.store.models import AudienceSource
from tests.store.helpers import T0, audience, make_world, phone

pytestmark = pytest.mark.anyio

NOW = datetime.fromtimestamp(T0, UTC)


async def test_a_static_segment_holds_its_profiles(store: Store) -> None:
    w = await make_world(store, 5)
    picked = [w.ids[3], w.ids[0], w.ids[3], w.ids[2]]  # a repeat counts once
    seg = await store.create_segment("picked", w.database_id, profile_ids=picked)
    assert isinstance(seg, SegmentRow)
    assert seg[1:6] == ("picked", "main", w.database_id, "static", None)
    assert await store.get_segment("picked") == seg
    assert await store.segment_by_id(seg.id) == seg
    assert await store.segment_id("picked") == (seg.id, w.database_id)
    assert await store.count_segment(seg, None, NOW) == 3
    assert await store.segment_sample(seg, None, NOW, 2) == [
        Member(w.ids[0], phone(1), "p1@example.com"), Member(w.ids[2], phone(3), "p3@example.com")]
    source = AudienceSource("segment", w.database_id, seg.id)
    assert await store.count_audience(source) == 3
    assert await store.audience_bound(source) == w.ids[3] - w.ids[0] + 1 >= 3
    rows, last = await store.segment_page(seg, None, w.resource_id, 0, 2, NOW)
    assert [(r.profile_id, r.phone) for r in audience(rows)] == [
        (w.ids[0], phone(1)), (w.ids[2], phone(3))]
    assert last == w.ids[2]
    rows, last = await store.audience_page(source, w.resource_id, w.ids[2], 2, T0)
    assert [r.profile_id for r in audience(rows)] == [w.ids[3]]
    assert await store.audience_chunk(source, w.resource_id, 0, 10) == (
        await store.segment_page(seg, None, w.resource_id, 0, 10, NOW))[0]


async def test_a_segment_needs_a_free_name_and_the_databases_profiles(store: Store) -> None:
    w = await make_world(store, 2)
    o = await make_world(store, 1, database="other", first=10)
    await store.create_segment("taken", w.database_id, profile_ids=w.ids)
    with pytest.raises(InputError, match="already exists"):
        await store.create_segment("taken", w.database_id, condition="lead.n greater 1")
    strangers = [*o.ids, *range(90_001, 90_008)]
    with pytest.raises(InputError) as err:
        await store.create_segment("mixed", w.database_id, profile_ids=[w.ids[0], *strangers])
    named = [i for i in strangers if str(i) in str(err.value)]
    assert 1 <= len(named) <= 5
    with pytest.raises(NotFound):
        await store.get_segment("mixed")  # nothing of it was kept
    with pytest.raises(NotFound, match="no segment named 'nope'"):
        await store.segment_id("nope")
    with pytest.raises(NotFound):
        await store.segment_by_id(90_000)


async def test_a_dynamic_segment_is_judged_when_read(store: Store) -> None:
    w = await make_world(store, 6)
    text = "lead.n greater 2"
    seg = await store.create_segment("big", w.database_id, condition=text)
    assert (seg.kind, seg.condition, seg.database) == ("dynamic", text, "main")
    cond = compile_condition(text)
    assert await store.count_segment(seg, cond, NOW) == 4
    assert [m.id for m in await store.segment_sample(seg, cond, NOW, 3)] == w.ids[2:5]
    # more profiles match at once: a dynamic segment is never a snapshot
    await store.import_profiles(w.database_id, [ImportRecord(phone(1), None, None, {"n": 9})],
                                matching="phone", resource_id=None)
    assert await store.count_segment(seg, cond, NOW) == 5
    # audience_page compiles the stored text itself when given no condition
    source = AudienceSource("segment", w.database_id, seg.id)
    rows, _ = await store.audience_page(source, w.resource_id, 0, 100, T0)
    assert [r.profile_id for r in audience(rows)] == [w.ids[0], *w.ids[2:]]
    # the cursor's count is the database's: an upper bound, cheap to get
    assert await store.count_audience(source) == 6
    assert await store.audience_bound(source) >= 6


async def test_segment_pages_scan_up_to_the_limit_and_say_where_they_stopped(
    store: Store,
) -> None:
    w = await make_world(store, 7)
    text = "lead.n greater 4"
    seg = await store.create_segment("odd", w.database_id, condition=text)
    cond = compile_condition(text)
    got: list[int] = []
    after, pages = 0, 0
    while True:
        rows, last = await store.segment_page(seg, cond, w.resource_id, after, 2, NOW)
        assert len(rows) <= 2
        if last is None:
            break
        got += [r.profile_id for r in audience(rows)]
        assert last > after
        after, pages = last, pages + 1
        assert pages < 10
    assert got == w.ids[4:]
    source = AudienceSource("segment", w.database_id, seg.id)
    rows, last = await store.audience_page(source, w.resource_id, 0, 100, T0)
    assert [(r.profile_id, r.phone) for r in audience(rows)] == list(
        zip(w.ids[4:], w.phones[4:], strict=True))


async def test_a_dynamic_segment_is_judged_as_of_now(store: Store) -> None:
    db = await store.database_id("main", create=True)
    news = await store.resource_id("news")
    await store.import_profiles(db, [
        ImportRecord(phone(1), phone(1), None, {"last": "2026-01-08"}),
        ImportRecord(phone(2), phone(2), None, {"last": "2025-11-01"}),
        ImportRecord(phone(3), phone(3), None, {}),
    ], matching="phone", resource_id=news)
    text = "within_days(lead.last 7)"
    seg = await store.create_segment("recent", db, condition=text)
    cond = compile_condition(text)
    assert await store.count_segment(seg, cond, NOW) == 1
    assert await store.count_segment(seg, cond, T0 + 30 * 86_400) == 0
    source = AudienceSource("segment", db, seg.id)
    rows, _ = await store.audience_page(source, news, 0, 10, T0)
    assert [r.phone for r in audience(rows)] == [phone(1)]
    rows, _ = await store.audience_page(source, news, 0, 10, T0 + 30 * 86_400)
    assert rows == []


async def test_a_plugin_function_is_left_to_python_and_still_judged(store: Store) -> None:
    w = await make_world(store, 4)
    functions = {"twice": lambda x: 2 * int(x)}
    text = "twice(lead.n) greater 5"
    cond = compile_condition(text, functions=functions)
    plan = store.condition_plan(cond)
    assert not plan.decided and plan.python_only and all("twice" in p for p in plan.python_only)
    assert store.condition_plan(compile_condition("lead._id greater 3")) == (True, ())
    seg = await store.create_segment("twice", w.database_id, condition=text)
    assert await store.count_segment(seg, cond, NOW) == 2
    assert [m.id for m in await store.segment_sample(seg, cond, NOW, 10)] == w.ids[2:]
    source = AudienceSource("segment", w.database_id, seg.id)
    rows, _ = await store.audience_page(source, w.resource_id, 0, 10, T0, condition=cond)
    assert [r.profile_id for r in audience(rows)] == w.ids[2:]
