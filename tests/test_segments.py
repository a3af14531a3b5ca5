"""Segments: conditions in the template syntax, and SQLite's translation of them (which
rows its SQL decides); the date helpers; storage, counting and chunked reads; a dynamic
segment that calls a plugin's function, sent; and the ``herald segment`` commands.

What a condition selects on every store (the operators, the date helpers and the property
that SQL + residual equals ``{if ...}``) is ``tests/store/test_conditions.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.errors import InputError, NotFound, TemplateError
from engine.hookspecs import hookimpl
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.segments import (
    Condition,
    compile_condition,
    count_segment,
    create_segment,
    lead_view,
    read_profile_ids,
    show_segment,
)
from engine.segments.dates import after, before, birthday_within, within_days
from engine.store.base import ImportRecord
from engine.store.models import AudienceSource
from engine.store.sqlite import SQLiteStore
from engine.store.sqlite.conditions import verdict_of
from engine.testing import FakeGateway, write_config
from tests.store.test_conditions import DATE_CONDITIONS, DATED, PROFILES, Profiles, check, fill

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore.open(":memory:")
    try:
        yield s
    finally:
        await s.aclose()


def verdicts(store: SQLiteStore, profiles: Profiles, condition: Condition,
             now: datetime) -> dict[int, int | None]:
    """SQLite's verdict on each profile, by position: 1, 0, or None (left to Python)."""
    verdict = verdict_of(condition)
    rows = store.conn.execute(
        f"SELECT p.id, ({verdict.text}) FROM profiles p ORDER BY p.id", verdict.bind(now))
    found = dict(rows.fetchall())
    return {n: found[pid] for n, pid in enumerate(profiles.ids, start=1)}


def undecided(store: SQLiteStore, profiles: Profiles, text: str) -> set[int]:
    found = verdicts(store, profiles, compile_condition(text), NOW)
    return {n for n, v in found.items() if v is None}


def compile_error(text: str) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        compile_condition(text)
    return info.value


# -- compiling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "col", "words"), [
    ('lead._city equal', 1, 17, "expected a value at the end"),
    ('lead._city equal "Paris" lead.age', 1, 26, "unexpected 'lead'"),
    ('(lead.a equal 1', 1, 16, "expected ')'"),
    ('lead.a = 1', 1, 8, "'=='"),
    ('lead.a equal "x', 1, 14, "unterminated string"),
    ('lead.a and\n  lead.b }', 2, 10, "unexpected character '}'"),
    ('lowr(lead.a) equal "x"', 1, 1, "did you mean 'lower'"),
    ('subscription.phone equal "1"', 1, 1, "subscription.* cannot be used"),
    ('lead.a equal json.b', 1, 14, "not 'json.b'"),
    ('lead equal 1', 1, 1, "lead.NAME"),
    ('within_days(lead._bdate -3)', 1, 25, "whole number from 0"),
    ('within_days(lead._bdate)', 1, 1, "2 arguments"),
    ('before(lead._bdate "soon")', 1, 20, 'a date like "2026-01-31"'),
    ('', 1, 1, "expected an expression"),
    ('twice(lead.n) greater 2', 1, 1, "twice"),  # a plugin's function, without the plugin
])
def test_compile_errors_name_the_problem_at_line_and_col(
    text: str, line: int, col: int, words: str
) -> None:
    err = compile_error(text)
    assert (err.line, err.col) == (line, col)
    assert words in err.message
    assert str(err).startswith(f"{line}:{col}: ")


def test_a_condition_is_dialect_free_and_keeps_its_functions() -> None:
    twice = {"twice": lambda x: 2 * int(x)}
    condition = compile_condition("twice(lead.n) greater 2", functions=twice)
    assert (condition.text, dict(condition.functions)) == ("twice(lead.n) greater 2", twice)
    assert condition.residual({"n": "2"}, NOW) and not condition.residual({"n": 1}, NOW)
    assert not hasattr(condition, "verdict")
    again = compile_condition("twice(lead.n) greater 2", functions=dict(twice))
    assert again.key == condition.key != compile_condition("lead.n greater 2").key


# -- what SQLite's SQL decides -----------------------------------------------------------------


async def test_the_issue_example_is_decided_in_sql_for_ordinary_data(
    store: SQLiteStore,
) -> None:
    profiles = await fill(store, [
        {"_city": "Paris", "age": "30"}, {"_city": "Paris", "age": 17}, {"_city": "Lyon"},
        {"_city": "Paris", "age": "18"}, {"_city": "Paris", "age": 18.5}, {},
    ])
    text = 'lead._city equal "Paris" and lead.age greater 18'
    assert await check(store, text, profiles) == [1, 5]
    assert undecided(store, profiles, text) == set()


def test_python_only_parts_are_named() -> None:
    store = SQLiteStore.open(":memory:")
    condition = compile_condition(
        'lead.a equal lead.b or upper(lead._city) equal "PARIS" and lead.x greater 1')
    plan = store.condition_plan(condition)
    assert plan.python_only == ("lead.a equal lead.b", 'upper(lead._city) equal "PARIS"')
    assert not plan.decided
    assert store.condition_plan(compile_condition("lead._id greater 3")).decided
    store.conn.close()


def test_parts_that_read_no_field_are_evaluated_once() -> None:
    verdict = verdict_of(compile_condition('upper("a") equal "A" and lead._id > 1'))
    assert verdict.python_only == ()
    assert 1 in verdict.bind(NOW)


@pytest.mark.parametrize("text", [
    'lead._city equal "Paris"', 'lead._city not equal "Lyon"', 'lead.age greater 18',
    "lead.age <= 17", 'lead._city less "M"', 'lead.tags contains "vip"',
    'lead._city in "Paris Lyon"', "lead.vip", "lead.prefs", "lead.phone", "lead._id > 2",
    'lead.email equal "a@example.com"', 'lead.score greater 1',
])
async def test_ordinary_values_are_decided_in_sql(store: SQLiteStore, text: str) -> None:
    """SQL decides every profile, except those it cannot judge faithfully: the text
    holding a NUL (profile 5) and the numbers only Python compares exactly."""
    profiles = await fill(store, PROFILES)
    assert undecided(store, profiles, text) <= {2, 4, 5}, text


@pytest.mark.parametrize(("text", "expected", "left_to_python"), [
    # "4.50" == 4.5 needs an exact float parse; "1e1" has an exponent; 1.5e300 is fine.
    ("lead.score equal 4.5", [1, 2], {1, 2, 5}),
    # Text containing NUL: SQLite would cut it at the NUL.
    ('lead.note equal "Paris"', [], {5}),
    # Functions: only Python.
    ('lower(lead._city) equal "paris"', [1, 3, 6], {1, 2, 3, 4, 5, 6}),
])
async def test_python_decides_what_sql_cannot(
    store: SQLiteStore, text: str, expected: list[int], left_to_python: set[int]
) -> None:
    profiles = await fill(store, PROFILES)
    assert undecided(store, profiles, text) == left_to_python
    assert await check(store, text, profiles) == expected


async def test_residual_alone_agrees_with_the_template_language(store: SQLiteStore) -> None:
    profiles = await fill(store, PROFILES)
    condition = compile_condition('lead.tags contains "vip" and lead._id less 5')
    assert [r[0] for r in profiles.rows if condition.residual(lead_view(*r), NOW)] == [
        profiles.ids[0], profiles.ids[3]]


@pytest.mark.parametrize("text", [text for text, _ in DATE_CONDITIONS])
async def test_sql_decides_the_usual_date_shapes(store: SQLiteStore, text: str) -> None:
    profiles = await fill(store, DATED)
    # not dates, not times, fractions of seconds and ISO basic dates are Python's
    assert undecided(store, profiles, text) <= {8, 9, 13, 14}


# -- date helpers -----------------------------------------------------------------------------


def test_within_days_counts_back_from_now_inclusively() -> None:
    assert within_days(NOW, "2026-01-10", 0)
    assert within_days(NOW, "2025-12-11", 30)
    assert not within_days(NOW, "2025-12-10", 30)
    assert not within_days(NOW, "2026-01-11", 30)  # the future is not "within the last"
    assert within_days(NOW, "2025-12-11T12:00:00Z", 30)
    assert not within_days(NOW, "2025-12-11T11:59:59Z", 30)
    assert within_days(NOW, "2025-12-11T14:59:59+03:00", 30) is False
    assert within_days(NOW, "2025-12-11 12:00:00", 30)  # no zone: UTC
    assert within_days(NOW, NOW.timestamp() - 86400, 1)  # a Unix timestamp
    assert not within_days(NOW, "2026-02-30", 100)
    assert not within_days(NOW, "soon", 100)
    assert not within_days(NOW, None, 100)
    assert not within_days(NOW, "2026-01-01", "many")
    # "today" is the date of now in now's own zone
    tokyo = NOW.astimezone(timezone(timedelta(hours=14)))
    assert within_days(tokyo, "2026-01-11", 0)
    assert not within_days(NOW, "2026-01-11", 0)


def test_before_and_after_are_strict_and_read_dates_as_midnight_utc() -> None:
    assert before("2025-12-31", "2026-01-01")
    assert not before("2026-01-01", "2026-01-01")
    assert after("2026-01-01T00:00:01Z", "2026-01-01")
    assert not after("2026-01-01T02:00:00+03:00", "2026-01-01")
    assert before(0, "1970-01-02")
    assert not before("never", "2026-01-01")
    assert not after(True, "2026-01-01")


def test_birthday_within_wraps_the_year_and_keeps_29_february() -> None:
    assert birthday_within(NOW, "1990-01-10", 0)
    assert birthday_within(NOW, "1990-01-17T08:00:00+05:00", 7)
    assert not birthday_within(NOW, "1990-01-18", 7)
    assert not birthday_within(NOW, "1990-01-09", 7)
    dec = datetime(2026, 12, 28, tzinfo=UTC)
    assert birthday_within(dec, "2000-01-02", 5)
    feb = datetime(2027, 2, 27, tzinfo=UTC)  # 2027 has no 29 February
    assert birthday_within(feb, "2000-02-29", 1)
    assert not birthday_within(datetime(2028, 2, 27, tzinfo=UTC), "2000-02-29", 1)
    assert birthday_within(NOW, "1990-07-01", 365)


# -- storage and chunks ------------------------------------------------------------------------


async def test_chunks_have_the_row_shape_of_audience_chunk(store: SQLiteStore) -> None:
    records = [
        ImportRecord(f"+3360000000{i}", f"+3360000000{i}", None,
                     {"_city": "Paris" if i % 2 else "Lyon", "n": i})
        for i in range(1, 10)
    ]
    db = await store.database_id("main", create=True)
    rid = await store.resource_id("news")
    await store.import_profiles(db, records, matching="phone", resource_id=rid)
    store.conn.execute(  # a second, higher-priority subscription is the one picked
        "INSERT INTO subscriptions (profile_id, resource_id, channel, phone, priority, fields,"
        " created_at, updated_at) VALUES (3, ?, 'sms', '+33699999999', 5, '{\"x\":1}', 0, 0)",
        (rid,),
    )
    store.conn.execute("UPDATE subscriptions SET status = 'unsubscribed' WHERE profile_id = 5")
    segment = await create_segment(store, "paris", "main", 'lead._city equal "Paris"')
    source = AudienceSource("segment", db, segment.id)
    rows, last = await store.audience_page(source, rid, 0, 100, NOW.timestamp())
    whole = await store.audience_chunk(AudienceSource("list", db), rid, 0, 100)
    assert rows == [r for r in whole if r[0] % 2]
    assert [r[2] for r in rows] == ["+33600000001", "+33699999999", None, "+33600000007",
                                    "+33600000009"]
    assert last == 9
    assert await store.audience_page(source, rid, 9, 100, NOW.timestamp()) == ([], None)


async def test_a_chunk_may_be_short_while_more_remain(store: SQLiteStore) -> None:
    profiles = await fill(store, [{"n": i} for i in range(10)])
    segment = await create_segment(store, "odd", profiles.database, 'upper(lead.n) in "13579"')
    rows, last = await store.segment_page(segment, None, 1, 0, 1, NOW)
    assert (rows, last) == ([], 1)  # profile 1 has n = 0: scanned, rejected
    rows, last = await store.segment_page(segment, None, 1, last, 1, NOW)
    assert [r[0] for r in rows] == [2] and last == 2


async def test_dynamic_segments_are_recounted_each_time(store: SQLiteStore) -> None:
    profiles = await fill(store, [{"_city": "Paris"}, {"_city": "Lyon"}])
    await create_segment(store, "paris", profiles.database, 'lead._city equal "Paris"')
    assert await count_segment(store, "paris", NOW) == 1
    store.conn.execute("""UPDATE profiles SET fields = '{"_city":"Paris"}' WHERE id = 2""")
    assert await count_segment(store, "paris", NOW) == 2
    await create_segment(store, "recent", profiles.database, "within_days(lead.seen 1)")
    store.conn.execute("""UPDATE profiles SET fields = '{"seen":"2026-01-09"}' WHERE id = 1""")
    assert await count_segment(store, "recent", NOW) == 1
    assert await count_segment(store, "recent", NOW + timedelta(days=2)) == 0


async def test_static_segments_from_ids_and_from_a_file(
    store: SQLiteStore, tmp_path: Path
) -> None:
    profiles = await fill(store, [{"n": i} for i in range(5)])
    main = profiles.database
    segment = await create_segment(store, "picked", main, profile_ids=[2, 4, 2])
    assert segment.kind == "static" and segment.condition is None
    assert await count_segment(store, "picked", NOW) == 2
    rows, last = await store.segment_page(segment, None, 1, 0, 10, NOW)
    assert [r[0] for r in rows] == [2, 4] and last == 4
    path = tmp_path / "ids.csv"
    path.write_text("id\n1\n3, 5\n# a comment\n\n", encoding="utf-8")
    assert read_profile_ids(path) == [1, 3, 5]
    await create_segment(store, "from-file", main, profile_ids=read_profile_ids(path))
    info = await show_segment(store, "from-file", NOW, sample=2)
    assert (info.kind, info.count, [m.id for m in info.sample]) == ("static", 3, [1, 3])
    assert (info.decided_in_sql, info.python_only) == (True, [])
    path.write_text("1\nx2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"ids.csv:2: not a profile id: 'x2'"):
        read_profile_ids(path)
    with pytest.raises(InputError, match=f"no profile with id 77 in database '{main}'"):
        await create_segment(store, "bad", main, profile_ids=[1, 77])


async def test_segment_errors(store: SQLiteStore) -> None:
    profiles = await fill(store, [{}])
    main = profiles.database
    await create_segment(store, "x", main, "lead.a")
    with pytest.raises(InputError, match="already exists"):
        await create_segment(store, "x", main, "lead.b")
    with pytest.raises(NotFound, match="no profile database named 'nope'"):
        await create_segment(store, "y", "nope", "lead.b")
    with pytest.raises(NotFound, match="no segment named 'z'"):
        await count_segment(store, "z", NOW)
    with pytest.raises(TemplateError):
        await create_segment(store, "y", main, "lead.a equal")
    with pytest.raises(InputError, match="either a condition or a list"):
        await create_segment(store, "y", main)


async def test_show_reports_the_condition_count_and_sample(store: SQLiteStore) -> None:
    profiles = await fill(store, [{"_city": "Paris", "@phone": f"+3360000000{i}"}
                                  for i in range(5)])
    where = 'lead._city equal "Paris" and lead._id > 1'
    await create_segment(store, "paris", profiles.database, where)
    info = await show_segment(store, "paris", NOW, sample=3)
    assert info.count == 4
    assert [(m.id, m.phone) for m in info.sample] == [
        (2, "+33600000001"), (3, "+33600000002"), (4, "+33600000003")]
    assert (info.kind, info.database, info.condition) == ("dynamic", profiles.database, where)
    assert info.python_only == []  # SQL answers every part (bar text it may mangle)
    await create_segment(store, "shout", profiles.database, 'upper(lead._city) equal "PARIS"')
    info = await show_segment(store, "shout", NOW)
    assert (info.count, info.decided_in_sql) == (5, False)
    assert info.python_only == ['upper(lead._city) equal "PARIS"']


async def test_a_dynamic_segment_over_100k_profiles_streams(store: SQLiteStore) -> None:
    """Even when Python judges every profile, memory holds one chunk, not the audience."""
    db = await store.database_id("main", create=True)
    store.conn.executemany(
        "INSERT INTO profiles (id, database_id, fields, created_at, updated_at)"
        " VALUES (?, ?, ?, 0, 0)",
        ((i, db, f'{{"_city":"{"Paris" if i % 3 == 0 else "Lyon"}","n":"{i}",'
                 f'"pad":"{"x" * 200}"}}') for i in range(1, 100_001)),
    )
    await create_segment(store, "sql", "main", 'lead._city equal "Paris"')
    await create_segment(store, "python", "main", 'upper(lead._city) equal "PARIS"')
    assert await count_segment(store, "sql", NOW) == 33_333
    tracemalloc.start()
    try:
        assert await count_segment(store, "python", NOW) == 33_333
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # the 100k rows' fields alone are over 20 MB
    segment = await create_segment(store, "python2", "main", 'upper(lead._city) equal "PARIS"')
    source = AudienceSource("segment", db, segment.id)
    seen, after_id = 0, 0
    while True:
        rows, last = await store.audience_page(source, 1, after_id, 5000, NOW.timestamp())
        if last is None:
            break
        seen, after_id = seen + len(rows), last
    assert seen == 33_333


# -- a plugin's function in a dynamic segment --------------------------------------------------


class _Initials:
    """A plugin with a template function of its own."""

    @hookimpl
    def herald_template_functions(self) -> dict[str, Any]:
        return {"initial": lambda text: str(text)[:1].upper()}


async def test_a_dynamic_segment_that_uses_a_plugin_function_sends(tmp_path: Path) -> None:
    """The issue: such a segment was created, but its launch failed with "unknown
    function": the run compiled the condition without the workspace's plugins."""
    gateway = FakeGateway()
    config = write_config(tmp_path)
    plugins = load_plugins(gateway.plugin(), _Initials())
    async with await Herald.open(config, plugins=plugins) as herald:
        store = herald.store
        db = await store.database_id("main", create=True)
        news = await store.resource_id("news")
        names = ["paul", "anna", "pierre", "zoe", "Petra"]
        records = [ImportRecord(f"+4479110000{i:02d}", f"+4479110000{i:02d}", None,
                                {"_fname": name}) for i, name in enumerate(names)]
        await store.import_profiles(db, records, matching="phone", resource_id=news)
        functions = herald.plugins.template_functions()
        where = 'initial(lead._fname) equal "P"'
        with pytest.raises(TemplateError, match="initial"):  # unknown without the plugin
            await create_segment(store, "p", "main", where)
        await create_segment(store, "p", "main", where, functions=functions)
        assert await count_segment(store, "p", NOW, functions=functions) == 3
        log = await herald.send(resource="news", segment="p", template="Hi {lead._fname}")
    assert log.status == "finished"
    assert log.sent == 3
    assert sorted(m.text for m in gateway.texts.values()) == [
        "Hi Petra", "Hi paul", "Hi pierre"]


# -- the command line --------------------------------------------------------------------------


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args], capture_output=True, text=True, check=False,
        timeout=60,
    )


_CLI = "import sys, engine.cli as cli; raise SystemExit(cli.main(sys.argv[1:]))"


def test_cli_create_count_show(tmp_path: Path) -> None:
    config = write_config(tmp_path, driver="null")
    records = [ImportRecord(f"+3360000{i:04d}", f"+3360000{i:04d}", None,
                            {"_city": "Paris" if i < 4 else "Lyon", "age": str(15 + i)})
               for i in range(8)]

    async def load() -> None:
        store = SQLiteStore.open(tmp_path / "herald.db")
        db = await store.database_id("main", create=True)
        await store.import_profiles(db, records, matching="phone", resource_id=None)
        await store.aclose()

    anyio.run(load)
    cfg = ("--config", str(config))
    where = 'lead._city equal "Paris" and lead.age greater 16'
    proc = herald(*cfg, "segment", "create", "adults", "--database", "main", "--where", where)
    assert proc.returncode == 0, proc.stderr
    assert "created dynamic segment 'adults'" in proc.stdout
    proc = herald(*cfg, "segment", "count", "adults")
    assert (proc.returncode, proc.stdout) == (0, "2\n")
    proc = herald(*cfg, "segment", "count", "adults", "--json")
    assert json.loads(proc.stdout)["count"] == 2
    proc = herald(*cfg, "segment", "show", "adults", "--json")
    shown = json.loads(proc.stdout)
    assert (shown["kind"], shown["condition"], shown["count"]) == ("dynamic", where, 2)
    assert [m["phone"] for m in shown["sample"]] == ["+33600000002", "+33600000003"]
    proc = herald(*cfg, "segment", "show", "adults")
    assert proc.returncode == 0
    assert "where     " + where in proc.stdout and "count     2" in proc.stdout

    ids = tmp_path / "ids.txt"
    ids.write_text("1\n2\n", encoding="utf-8")
    proc = herald(*cfg, "segment", "create", "two", "--database", "main", "--ids", str(ids))
    assert proc.returncode == 0, proc.stderr
    assert herald(*cfg, "segment", "count", "two").stdout == "2\n"

    proc = herald(*cfg, "segment", "create", "bad", "--database", "main",
                  "--where", "lead._city equal")
    assert proc.returncode == 2
    assert "1:17: expected a value at the end" in proc.stderr
    assert "^" in proc.stderr
    proc = herald(*cfg, "segment", "create", "adults", "--database", "main", "--where", "lead.a")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    proc = herald(*cfg, "segment", "count", "nobody")
    assert proc.returncode == 2 and "no segment named 'nobody'" in proc.stderr
    proc = herald(*cfg, "segment", "create", "x", "--database", "main")
    assert proc.returncode == 2  # argparse: --where or --ids is required
