"""ProfileStore on every store: databases, resources, imports (each matching and mode),
finding profiles, and the SMS subscriptions an import makes."""

from __future__ import annotations

import pytest

from engine.errors import InputError, NotFound
from engine.store.base import ImportRecord, ImportResult, Store
from engine.store.models import AudienceSource
from tests.store.helpers import audience, fields_of, make_world, phone

pytestmark = pytest.mark.anyio


async def test_a_database_is_found_by_name_and_made_only_when_asked(store: Store) -> None:
    with pytest.raises(NotFound, match="no profile database named 'main'"):
        await store.database_id("main")
    main = await store.database_id("main", create=True)
    assert await store.database_id("main") == main
    assert await store.database_id("main", create=True) == main
    other = await store.database_id("other", create=True)
    assert other != main
    assert [await store.database_name(i) for i in (main, other)] == ["main", "other"]
    with pytest.raises(NotFound, match="no profile database with id"):
        await store.database_name(other + main + 1)


async def test_a_resource_keeps_its_id(store: Store) -> None:
    news = await store.resource_id("news")
    assert await store.resource_id("news") == news
    assert await store.resource_id("offers") != news


async def test_add_update_adds_new_profiles_and_merges_the_others(store: Store) -> None:
    w = await make_world(store, 2)
    result = await store.import_profiles(w.database_id, [
        ImportRecord(phone(2), None, "new@example.com", {"name": "Two", "city": "Paris"}),
        ImportRecord(phone(3), phone(3), None, {"name": "Three"}),
    ], matching="phone", resource_id=w.resource_id)
    assert result == ImportResult(added=1, updated=1, skipped=0, rejected=())
    rows = audience(await store.audience_rows(w.source(), w.resource_id, w.ids))
    by_id = {r.profile_id: fields_of(r.fields) for r in rows}
    # the record's fields over the old ones; the ones it does not name stay
    assert by_id[w.ids[1]] == {"n": 2, "name": "Two", "city": "Paris"}
    assert by_id[w.ids[0]] == {"n": 1, "name": "P1"}
    # the email changed, the phone (not given) did not
    assert await store.find_profiles(w.database_id, "email", ["new@example.com"]) == {
        "new@example.com": w.ids[1]}
    assert await store.profile_phone(w.ids[1]) == (w.database_id, phone(2))
    found = await store.find_profiles(w.database_id, "phone", [phone(3)])
    assert found[phone(3)] not in w.ids


async def test_records_for_one_new_key_in_a_batch_apply_in_turn(store: Store) -> None:
    db = await store.database_id("main", create=True)
    result = await store.import_profiles(db, [
        ImportRecord(phone(1), phone(1), None, {"a": 1, "b": 1}),
        ImportRecord(phone(1), None, "one@example.com", {"b": 2}),
    ], matching="phone", resource_id=None)
    assert (result.added, result.updated) == (1, 1)
    pid = (await store.find_profiles(db, "phone", [phone(1)]))[phone(1)]
    assert await store.find_profiles(db, "email", ["one@example.com"]) == {
        "one@example.com": pid}
    news = await store.resource_id("news")
    (row,) = audience(await store.audience_rows(AudienceSource("list", db), news, [pid]))
    assert fields_of(row.fields) == {"a": 1, "b": 2}


async def test_add_skips_matches_and_update_rejects_strangers(store: Store) -> None:
    w = await make_world(store, 2)
    added = await store.import_profiles(w.database_id, [
        ImportRecord(phone(1), phone(1), None, {"name": "changed"}),
        ImportRecord(phone(9), phone(9), None, {"name": "Nine"}),
    ], matching="phone", resource_id=None, mode="add")
    assert added == ImportResult(added=1, updated=0, skipped=1, rejected=())
    (row,) = audience(await store.audience_rows(w.source(), w.resource_id, [w.ids[0]]))
    assert fields_of(row.fields)["name"] == "P1"  # left alone
    updated = await store.import_profiles(w.database_id, [
        ImportRecord(phone(8), phone(8), None, {}),
        ImportRecord(phone(2), None, None, {"name": "Two"}),
    ], matching="phone", resource_id=None, mode="update")
    assert updated == ImportResult(added=0, updated=1, skipped=0,
                                   rejected=((0, "no profile matches"),))
    assert await store.find_profiles(w.database_id, "phone", [phone(8)]) == {}


async def test_matching_by_email_and_by_a_custom_field(store: Store) -> None:
    w = await make_world(store, 3)
    by_email = await store.import_profiles(w.database_id, [
        ImportRecord("p1@example.com", None, None, {"crm": "A-1"}),
    ], matching="email", resource_id=None)
    assert (by_email.added, by_email.updated) == (0, 1)
    # a custom field's value matches as text, a number stored in the field too
    by_field = await store.import_profiles(w.database_id, [
        ImportRecord("A-1", None, None, {"tier": "gold"}),
        ImportRecord("2", None, None, {"tier": "silver"}),
    ], matching="field:n", resource_id=None)
    assert (by_field.added, by_field.updated) == (1, 1)
    rows = {r.profile_id: fields_of(r.fields)
            for r in audience(await store.audience_rows(w.source(), w.resource_id, w.ids))}
    assert rows[w.ids[0]] == {"n": 1, "name": "P1", "crm": "A-1"}
    assert rows[w.ids[1]] == {"n": 2, "name": "P2", "tier": "silver"}


async def test_matching_by_id_adds_under_that_id_but_not_another_databases(
    store: Store,
) -> None:
    w = await make_world(store, 2)
    other = await store.database_id("other", create=True)
    result = await store.import_profiles(other, [
        ImportRecord(w.ids[0], phone(7), None, {}),
        ImportRecord(5000, phone(8), None, {"x": 1}),
        ImportRecord(None, phone(9), None, {}),
    ], matching="id", resource_id=None)
    assert result.added == 1 and result.updated == 0
    assert result.rejected == (
        (0, f"id {w.ids[0]} belongs to a profile of another database"),
        (2, "no id to match on"),
    )
    assert await store.profile_ids_in(other, [5000, w.ids[0]]) == {5000}
    again = await store.import_profiles(other, [ImportRecord(5000, None, None, {"y": 2})],
                                        matching="id", resource_id=None)
    assert (again.added, again.updated) == (0, 1)


async def test_an_import_refuses_an_unknown_mode_or_matching(store: Store) -> None:
    db = await store.database_id("main", create=True)
    record = ImportRecord(phone(1), phone(1), None, {})
    with pytest.raises(InputError, match="mode"):
        await store.import_profiles(db, [record], matching="phone", resource_id=None,
                                    mode="replace")
    with pytest.raises(InputError, match="matching"):
        await store.import_profiles(db, [record], matching="nickname", resource_id=None)
    assert await store.find_profiles(db, "phone", [phone(1)]) == {}


async def test_find_profiles_picks_the_oldest_and_leaves_out_the_unknown(
    store: Store,
) -> None:
    db = await store.database_id("main", create=True)
    # two profiles share a phone (matched on email, so both are added)
    await store.import_profiles(db, [
        ImportRecord("a@example.com", phone(1), "a@example.com", {}),
        ImportRecord("b@example.com", phone(1), "b@example.com", {}),
    ], matching="email", resource_id=None)
    emails = await store.find_profiles(db, "email", ["a@example.com", "b@example.com"])
    oldest = min(emails.values())
    assert await store.find_profiles(db, "phone", [phone(1), phone(2)]) == {phone(1): oldest}
    other = await store.database_id("other", create=True)
    assert await store.find_profiles(other, "phone", [phone(1)]) == {}
    with pytest.raises(InputError):
        await store.find_profiles(db, "fields", ["x"])


async def test_profile_ids_in_names_only_the_databases_profiles(store: Store) -> None:
    w = await make_world(store, 3)
    o = await make_world(store, 2, database="other", first=10)
    assert await store.profile_ids_in(w.database_id, [*w.ids, *o.ids, 99_999]) == set(w.ids)
    assert await store.profile_ids_in(w.database_id, []) == set()


async def test_an_import_subscribes_phones_only_to_the_resource_given(store: Store) -> None:
    w = await make_world(store, 2, subscribe=False)
    rows = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 10))
    assert [r.phone for r in rows] == [None, None]
    await store.import_profiles(w.database_id, [ImportRecord(phone(1), phone(1), None, {})],
                                matching="phone", resource_id=w.resource_id)
    rows = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 10))
    assert [r.phone for r in rows] == [phone(1), None]
    offers = await store.resource_id("offers")
    rows = audience(await store.audience_chunk(w.source(), offers, 0, 10))
    assert [r.phone for r in rows] == [None, None]


async def test_set_subscription_status_takes_profiles_in_and_out(store: Store) -> None:
    w = await make_world(store, 3)
    changed = await store.set_subscription_status(w.resource_id, w.ids[:2], "unsubscribed")
    assert changed == 2
    rows = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 10))
    assert [r.phone for r in rows] == [None, None, w.phones[2]]
    offers = await store.resource_id("offers")
    assert await store.set_subscription_status(offers, w.ids, "suspended") == 0
    assert await store.set_subscription_status(w.resource_id, [w.ids[0]], "subscribed") == 1
    rows = audience(await store.audience_chunk(w.source(), w.resource_id, 0, 10))
    assert [r.phone for r in rows] == [w.phones[0], None, w.phones[2]]
