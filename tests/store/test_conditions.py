"""Segment conditions on every store: what a dynamic segment selects, with the store's SQL
and ``Condition.residual`` together, equals what ``{if ...}`` selects, profile by profile.

Each store decides what its dialect can reproduce faithfully and leaves the rest to Python;
whatever it decides, the result must be the template language's. Everything goes through
the store's protocols (profiles are imported, read back and paged): no SQL here. The SQLite
translator's own checks (which rows its SQL decides) are in ``tests/test_segments.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.core.templates import compile_template
from engine.errors import InputError
from engine.segments import DATE_FUNCTIONS, Now, compile_condition, create_segment, lead_view
from engine.store.base import ImportRecord, Store
from engine.store.models import AudienceSource

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)

_names = itertools.count()


class Profiles:
    """Profiles as a store holds them: ids, and (id, fields, phone, email) read back."""

    def __init__(self, database: str, ids: list[int], rows: list[tuple[Any, ...]]) -> None:
        self.database = database
        self.ids = ids
        self.rows = rows

    def positions(self, ids: Sequence[int]) -> list[int]:
        """1-based positions of ``ids`` in the order the profiles were given."""
        return [self.ids.index(i) + 1 for i in ids]


async def fill(store: Store, profiles: Sequence[dict[str, Any]]) -> Profiles:
    """The profiles in a new database of their own: each dict is the profile's fields, with
    the keys ``"@phone"`` and ``"@email"`` holding its columns. Ids ascend in order."""
    database = f"db{next(_names)}"
    db = await store.database_id(database, create=True)
    records = [
        ImportRecord(None, p.get("@phone"), p.get("@email"),
                     {k: v for k, v in p.items() if not k.startswith("@")})
        for p in profiles
    ]
    result = await store.import_profiles(db, records, matching="phone", resource_id=None,
                                         mode="add")
    assert result.added == len(profiles), result
    read = await store.audience_chunk(AudienceSource("list", db), 0, 0, len(profiles) + 1)
    ids = [int(r[0]) for r in read]
    assert len(ids) == len(profiles)
    rows = [(pid, r[1], p.get("@phone"), p.get("@email"))
            for pid, r, p in zip(ids, read, profiles, strict=True)]
    return Profiles(database, ids, rows)


def _at(now: Now) -> datetime:
    return now if isinstance(now, datetime) else datetime.fromtimestamp(now, UTC)


def oracle(text: str, profiles: Profiles, now: Now) -> list[int]:
    """The ids a condition selects by the template language itself: ``{if EXPR}``
    rendered for each stored profile."""
    template = compile_template(f"{{if {text}}}1{{else}}0{{end}}", functions=DATE_FUNCTIONS)
    return [r[0] for r in profiles.rows
            if template.render({"lead": lead_view(*r), "now": _at(now)}) == "1"]


async def selected(store: Store, text: str, profiles: Profiles, now: Now = NOW, *,
                   chunk: int = 3) -> list[int]:
    """The ids a dynamic segment with this condition selects, paged through
    ``segment_page``; checks that ``count_segment`` and ``segment_sample`` agree."""
    segment = await create_segment(store, f"s{next(_names)}", profiles.database, text)
    condition = compile_condition(text)
    ids: list[int] = []
    after = 0
    while True:
        rows, last = await store.segment_page(segment, condition, 0, after, chunk, now)
        assert len(rows) <= chunk
        ids += [r[0] for r in rows]
        if last is None:
            break
        assert last > after
        after = last
    assert await store.count_segment(segment, condition, now) == len(ids), text
    sample = await store.segment_sample(segment, condition, now, 4)
    assert [m.id for m in sample] == ids[:4], text
    return ids


async def check(store: Store, text: str, profiles: Profiles, now: Now = NOW) -> list[int]:
    """SQL + residual, and the residual alone, select what the template language selects;
    the positions of the profiles selected."""
    ids = await selected(store, text, profiles, now)
    assert ids == oracle(text, profiles, now), text
    condition = compile_condition(text)
    assert [r[0] for r in profiles.rows if condition.residual(lead_view(*r), now)] == ids
    return profiles.positions(ids)


# -- each operator ----------------------------------------------------------------------------

PROFILES: list[dict[str, Any]] = [
    {"_city": "Paris", "age": 30, "tags": ["vip", "new", 18], "score": 4.5, "vip": True,
     "@phone": "+33600000001", "@email": "a@example.com", "note": "born in Paris"},
    {"_city": "Lyon", "age": "17", "tags": [], "score": "4.50", "vip": False,
     "prefs": {"sms": True}},
    {"_city": "paris", "age": "18", "tags": ["VIP"], "score": 0, "vip": "true",
     "@phone": "+33600000003"},
    {"age": "abc", "tags": "vip,new", "score": "", "prefs": {}},
    {"_city": "", "age": 18.0, "tags": {"vip": 1}, "score": "1e1", "note": "Paris\u0000x"},
    {"_city": "Paris", "age": -5, "tags": ["18"], "score": 1.5e300, "vip": 0},
]

OPERATORS: list[tuple[str, list[int]]] = [
    ('lead._city equal "Paris"', [1, 6]),
    ('lead._city == "Paris"', [1, 6]),
    ('lead._city not equal "Paris"', [2, 3, 4, 5]),
    ('lead._city != "Paris"', [2, 3, 4, 5]),
    ('lead._city equal ""', [4, 5]),
    ('lead.age equal 18', [3, 5]),
    ('lead.age equal "18.0"', [3, 5]),
    ('lead.age greater 18', [1, 4]),
    ('lead.age > 17', [1, 3, 4, 5]),
    ('lead.age less 18', [2, 6]),
    ('lead.age < "18"', [2, 6]),
    ('lead.age >= 18', [1, 3, 4, 5]),
    ('lead.age <= 17', [2, 6]),
    ('lead._city greater "M"', [1, 3, 6]),
    ('lead._city less "M"', [2, 4, 5]),
    ('18 less lead.age', [1, 4]),
    ('lead.score equal 4.5', [1, 2]),
    ('lead.score greater 1', [1, 2, 5, 6]),
    ('lead.tags contains "vip"', [1, 4, 5]),
    ('lead.tags contains 18', [1, 6]),
    ('lead.tags not contains "vip"', [2, 3, 6]),
    ('"vip" in lead.tags', [1, 4, 5]),
    ('"vip" not in lead.tags', [2, 3, 6]),
    ('lead._city in "Paris Lyon"', [1, 2, 4, 5, 6]),
    ('lead._city not in "Paris Lyon"', [3]),
    ('"Paris, Lyon" contains lead._city', [1, 2, 4, 5, 6]),
    ('lead.note contains "Paris"', [1, 5]),
    ('lead.vip', [1, 3]),
    ('not lead.vip', [2, 4, 5, 6]),
    ('lead.vip equal true', [1, 3]),
    ('lead.prefs', [2]),
    ('lead.prefs.sms', [2]),
    ('lead.tags', [1, 3, 4, 5, 6]),
    ('lead.phone', [1, 3]),
    ('lead.phone contains "+336"', [1, 3]),
    ('lead.email equal "a@example.com"', [1]),
    ('lead._id greater 0', [1, 2, 3, 4, 5, 6]),
    ('lead._city equal "Paris" and (lead.age greater 18 or lead.vip equal 0)', [1, 6]),
    ('lead._city equal "Paris" or lead._city equal "Lyon" and lead.age less 10', [1, 6]),
    ('not (lead._city equal "Paris" or lead._city equal "Lyon")', [3, 4, 5]),
    ('lead["_city"] equal "Paris"', [1, 6]),
    ('lead.tags.0 equal "vip"', [1]),
    ('lead._city equal lead.note', [4]),  # both missing: "" equals ""
    ('upper(lead._city) equal "PARIS"', [1, 3, 6]),
    ('len(lead.tags) greater 1', [1, 4]),
    ('lower(lead._city) equal "paris"', [1, 3, 6]),
    ('lead.note equal "Paris"', []),
]


@pytest.mark.parametrize(("text", "expected"), OPERATORS)
async def test_operators_select_what_the_template_language_selects(
    store: Store, text: str, expected: list[int]
) -> None:
    profiles = await fill(store, PROFILES)
    assert await check(store, text, profiles) == expected


async def test_profile_ids_are_compared_as_numbers(store: Store) -> None:
    profiles = await fill(store, [{}, {}, {}])
    first = profiles.ids[0]
    assert await check(store, f"lead._id greater {first}", profiles) == [2, 3]
    assert await check(store, f'lead._id in "{first} {first + 2}"', profiles) == [1, 3]


# -- the date helpers -------------------------------------------------------------------------

DATED: list[dict[str, Any]] = [
    {"d": "2026-01-10"},                    # 1 today
    {"d": "2025-12-11"},                    # 2 thirty days ago
    {"d": "2025-12-10"},                    # 3 thirty-one days ago
    {"d": "2025-12-11T12:00:00Z"},          # 4 exactly now - 30 days
    {"d": "2025-12-11 11:59:59"},           # 5 a second earlier, naive: UTC
    {"d": "2025-12-11T14:00:00+03:00"},     # 6 = 11:00Z
    {"d": int(NOW.timestamp()) - 86400},    # 7 a Unix timestamp, yesterday
    {"d": "2026-02-30"},                    # 8 not a date
    {"d": "2026-01-05T10:00:00.250Z"},      # 9 fractional seconds
    {"d": "1990-01-15"},                    # 10 a birthday in five days
    {"d": "2000-02-29T23:00:00-05:00"},     # 11 a leap day, as written
    {},                                     # 12 missing
    {"d": "2026-01-10T24:00:00"},           # 13 not a time
    {"d": "20260105"},                      # 14 ISO basic format
]

DATE_CONDITIONS: list[tuple[str, list[int]]] = [
    ("within_days(lead.d 30)", [1, 2, 4, 7, 9, 14]),
    ("within_days(lead.d 0)", [1]),
    ('before(lead.d "2025-12-11")', [3, 10, 11]),
    ('before(lead.d "2025-12-11T12:00:00Z")', [2, 3, 5, 6, 10, 11]),
    ('after(lead.d "2025-12-11")', [1, 4, 5, 6, 7, 9, 14]),
    ('after(lead.d "2026-01-05T10:00:00.25Z")', [1, 7]),
    ("birthday_within(lead.d 5)", [1, 10]),
    ("not within_days(lead.d 30) and lead.d", [3, 5, 6, 8, 10, 11, 13]),
]


@pytest.mark.parametrize(("text", "expected"), DATE_CONDITIONS)
async def test_date_helpers(store: Store, text: str, expected: list[int]) -> None:
    profiles = await fill(store, DATED)
    assert await check(store, text, profiles) == expected


async def test_date_helpers_at_other_moments(store: Store) -> None:
    profiles = await fill(store, DATED)
    leap = datetime(2027, 2, 28, 9, tzinfo=UTC)
    assert await check(store, "birthday_within(lead.d 1)", profiles, leap) == [11]
    assert await check(store, "birthday_within(lead.d 0)", profiles,
                       datetime(2028, 2, 28, tzinfo=UTC)) == []
    assert await check(store, "within_days(lead.d 0)", profiles, NOW.timestamp()) == [1]


# -- the property: SQL + residual == the template language ---------------------------------

_TEXTS = [
    "", "Paris", "paris", "P", "18", "+18", "-0018", "18.0", "18.5", "18.50", ".5", "5.", "1e3",
    "1E-2", "1-2", "+-1", "١٨", "٣.٥", "true", "false", "[1]", "{}", "[", "inf", "nan", "-inf",
    "a\x00b", "18\x00", "\x00", "\\u0000", "é", "Ё", "vip", "VIP", " 18", "18 ", "0x10",
    "1" * 20, "9" * 400, "2026-01-10", "2025-12-11", "2026-01-10T12:00:00Z",
    "2026-01-10 12:00:00+03:00", "2026-02-30", "0000-01-01", "2026-01-10T24:00:00",
    "2026-01-10T10:00:00+23:30", "2026-01-10T10:00:00.5", "20260110", "1990-01-12",
    "2000-02-29", "2026-01-10T12:00:00-00:00", "2026-13-01",
]
_dates = st.integers(-40 * 86400, 3 * 86400).flatmap(
    lambda s: st.sampled_from([
        (NOW + timedelta(seconds=s)).date().isoformat(),
        (NOW + timedelta(seconds=s)).isoformat(),
        (NOW + timedelta(seconds=s)).replace(tzinfo=None).isoformat(sep=" "),
        (NOW + timedelta(seconds=s)).isoformat().replace("+00:00", "Z"),
        (NOW + timedelta(seconds=s)).astimezone(timezone(timedelta(hours=-5))).isoformat(),
        int(NOW.timestamp()) + s,
    ]))
_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-30, 30), st.integers(), st.sampled_from([2**53 + 1, 2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([18.0, 18.5, 17.999999999999, 1e16, 1e-320, 5e-324, -0.0, 0.1 + 0.2]),
    st.sampled_from(_TEXTS), st.text(max_size=6),
    st.from_regex(r"[+-]?\d{0,3}(\.\d{0,3})?([eE][+-]?\d{1,2})?", fullmatch=True),
    _dates,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "18", "vip", "x", ""]), inner, max_size=3),
    max_leaves=5,
)
_profiles = st.fixed_dictionaries({}, optional={
    "a": _values, "b": _values, "tags": _values, "d": _dates | _values,
    "a\\b": _values, "é": _values,
    "@phone": st.sampled_from(["+33600000001", "", "18", "vip"]),
    "@email": st.sampled_from(["a@example.com", "b@example.com"]),
})


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_paths = st.sampled_from([
    "lead.a", "lead.b", "lead.tags", "lead.d", "lead.a.x", "lead.a.vip", 'lead["18"]',
    "lead.tags.0", "lead.phone", "lead.email", "lead._id", "lead.missing", 'lead["a\\\\b"]',
    'lead["é"]', 'lead[""]',
])
_literals = st.one_of(
    st.sampled_from([
        "18", "18.5", "0", "-1", "100000000000000000000", "0.30000000000000004", "true",
        "false",
    ]),
    st.integers(-30, 30).map(str),
    st.sampled_from([t for t in _TEXTS if "\n" not in t]).map(_quote),
    st.text(alphabet="ab1.e+-[{ ", max_size=4).map(_quote),
)
_ops = st.sampled_from([
    "equal", "not equal", "==", "!=", "greater", "less", ">", "<", ">=", "<=", "contains",
    "not contains", "in", "not in",
])
_days = st.sampled_from(["0", "1", "5", "30", "400"])
_bounds = st.sampled_from([
    '"2026-01-10"', '"2025-12-11T12:00:00Z"', '"2026-01-09T23:59:59.999999+00:00"',
    '"2026-01-10T15:00:00+03:00"',
])
_atoms = st.one_of(
    st.tuples(_paths | _literals, _ops, _paths | _literals).map(" ".join),
    st.tuples(_paths, _ops, _literals).map(" ".join),
    st.tuples(_literals, _ops, _paths).map(" ".join),
    _paths,
    st.tuples(st.sampled_from(["within_days", "birthday_within"]), _paths, _days).map(
        lambda t: f"{t[0]}({t[1]} {t[2]})"),
    st.tuples(st.sampled_from(["before", "after"]), _paths, _bounds).map(
        lambda t: f"{t[0]}({t[1]} {t[2]})"),
    _paths.map(lambda p: f'upper({p}) equal "PARIS"'),
    _paths.map(lambda p: f"len({p}) greater 1"),
)
_conditions = st.recursive(
    _atoms,
    lambda inner: st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join)
    | inner.map(lambda e: f"not ({e})") | inner.map(lambda e: f"({e})"),
    max_leaves=4,
)
_nows = st.sampled_from([
    NOW, NOW + timedelta(microseconds=1), NOW - timedelta(microseconds=500_001),
    datetime(2026, 1, 10, 1, 0, tzinfo=timezone(timedelta(hours=3))),
    NOW.timestamp() + 0.25,
])


# The event loop has nothing to do with what a condition means: one backend is enough.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=_conditions, profiles=st.lists(_profiles, max_size=8), now=_nows)
async def test_property_sql_plus_residual_equals_the_template_language(
    store: Store, text: str, profiles: list[dict[str, Any]], now: Now
) -> None:
    # PostgreSQL's text cannot hold NUL: it refuses such a condition (tested below)
    assume(not (store.url.startswith("postgresql") and "\x00" in text))
    stored = await fill(store, profiles)  # each example in a database of its own
    assert await selected(store, text, stored, now) == oracle(text, stored, now)


async def test_a_condition_holding_nul_is_refused_where_the_store_cannot_keep_it(
    store: Store,
) -> None:
    stored = await fill(store, [{"a": "x"}])
    text = 'lead.a equal "a\x00b"'
    if not store.url.startswith("postgresql"):
        assert await selected(store, text, stored) == []
        return
    with pytest.raises(InputError):
        await create_segment(store, "nul", stored.database, text)
