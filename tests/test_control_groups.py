"""Control groups: a stable share of the eligible audience held out (reason ``control``),
per mailing (``MailingOptions.control``) and per database (``[databases.X]
control_group``), the same profiles on every run; the points they come from, fixed
numbers in every process and version; and the config keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.config import load_config
from engine.core.groups import Groups, global_key, in_control, share_point
from engine.errors import ConfigError
from engine.mailing_log import MailingLog, format_log
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.store.base import ImportRecord, ReportFilter
from engine.store.models import Mailing, MailingOptions, RunSpec
from engine.testing import FakeGateway, write_config

pytestmark = pytest.mark.anyio
#: The pipeline tests run on both stores.
both_stores = pytest.mark.usefixtures("any_store")


async def audience(herald: Herald, n: int, *, database: str = "main") -> list[int]:
    """``n`` subscribed profiles with distinct phones, in one import; their ids."""
    store = herald.store
    db = await store.database_id(database, create=True)
    rid = await store.resource_id("news")
    records = [ImportRecord(None, f"+7916{i:07d}", None, {"_fname": f"P{i}"})
               for i in range(n)]
    for i in range(0, n, 2000):
        await store.import_profiles(db, records[i:i + 2000], matching="phone", resource_id=rid)
    ids: list[int] = []
    after = 0
    while True:
        rows = await store.audience_chunk(await mailing_source(herald, database), rid, after,
                                          5000)
        if not rows:
            return ids
        ids += [r[0] for r in rows]
        after = rows[-1][0]


async def mailing_source(herald: Herald, database: str = "main") -> Any:
    from engine.audience import resolve_audience

    return await resolve_audience(herald.store, herald.config, "news", database=database)


async def mailing(herald: Herald, template: str = "Hi {lead._fname}", *,
                  database: str = "main", **options: Any) -> Mailing:
    return await herald.store.create_mailing(
        name="m", kind=options.pop("kind", "broadcast"), resource="news",
        source=await mailing_source(herald, database), template=template, limit=None,
        options=MailingOptions(**options))


async def run(herald: Herald, m: Mailing, spec: RunSpec | None = None) -> MailingLog:
    return await herald.execute(m, await herald.store.start_run(m.id, spec))


async def held_out(herald: Herald, log: MailingLog) -> set[int]:
    return {r.profile_id for r in await herald.store.recipient_rows(log.run_id)
            if r.reason == "control"}


# -- the points -------------------------------------------------------------------------


def test_points_are_the_same_numbers_in_every_process_and_version() -> None:
    # fixed numbers: a change here would move profiles between groups of live mailings
    assert share_point(1, 1) == 0.8387592891228016
    assert share_point(123456789, 42) == 0.5798242399342554
    assert [in_control(p, 7, 10.0) for p in range(1, 41)].count(True) == 5
    assert [p for p in range(1, 200) if in_control(p, global_key(1), 2.5)] == [148, 181]


def test_points_spread_evenly_and_key_spaces_are_apart() -> None:
    ids = range(1, 100_001)
    deciles = [0] * 10
    for p in ids:
        deciles[int(share_point(p, 5) * 10)] += 1
    assert all(9_500 < n < 10_500 for n in deciles)
    ten = {p for p in ids if in_control(p, 5, 10)}
    assert 9_700 < len(ten) < 10_300
    # a mailing's control group is not its first variant's share, nor another mailing's
    # group, nor its database's global group
    assert 800 < len(ten & {p for p in ids if share_point(p, 5) < 0.1}) < 1_200
    assert 800 < len(ten & {p for p in ids if in_control(p, 6, 10)}) < 1_200
    assert 800 < len(ten & {p for p in ids if in_control(p, global_key(5), 10)}) < 1_200
    # fractions of a percent, and the bounds
    assert 200 < sum(in_control(p, 5, 0.25) for p in ids) < 300
    assert not any(in_control(p, 5, 0) for p in range(1, 1000))
    assert all(in_control(p, 5, 100) for p in range(1, 1000))


def test_a_run_s_groups_agree_with_the_functions() -> None:
    groups = Groups(9, (0.1, 0.4), ((9, 10.0), (global_key(2), 2.5)))
    for p in range(1, 5000):
        assert groups.in_share(p) == (0.1 <= share_point(p, 9) < 0.4)
        assert groups.controlled(p) == (in_control(p, 9, 10) or
                                        in_control(p, global_key(2), 2.5))


# -- in the pipeline --------------------------------------------------------------------


@both_stores
async def test_control_10_holds_out_a_tenth_and_the_same_profiles_on_every_run(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, chunk_size=1000, batch_size=500) as herald:
        ids = await audience(herald, 10_000)
        m = await mailing(herald, control=10.0)
        first = await run(herald, m)
        assert 900 <= first.control <= 1_100
        assert first.recipients == first.sent == 10_000 - first.control == len(gateway.texts)
        assert first.subscribers_found == 10_000  # the control group is part of the audience
        out = await held_out(herald, first)
        assert out == {p for p in ids if in_control(p, m.id, 10.0)}
        sent_to = {t.to for t in gateway.texts.values()}
        assert not {f"+7916{ids.index(p):07d}" for p in out} & sent_to
        assert "Control group (control)" in format_log(first)

        second = await run(herald, m)  # a regular mailing's next launch
        assert await held_out(herald, second) == out
        # the reports count them too: the channel report's control, both runs
        (row,) = await herald.store.report_channel(ReportFilter(mailings=(m.id,)))
        assert row.control == first.control + second.control
        assert row.recipients == first.recipients + second.recipients

        other = await run(herald, await mailing(herald, control=10.0))
        assert 900 <= other.control <= 1_100
        assert len(await held_out(herald, other) & out) < 300  # another mailing, another group


GLOBAL = """
[databases.main]
control_group = 5
"""


@both_stores
async def test_the_global_group_is_the_same_in_every_mailing_unless_ignored(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(FakeGateway(), extra=GLOBAL) as herald:
        ids = await audience(herald, 2_000)
        db = await herald.store.database_id("main")
        a = await run(herald, await mailing(herald))
        b = await run(herald, await mailing(herald, template="Other {lead._fname}"))
        expected = {p for p in ids if in_control(p, global_key(db), 5)}
        assert 60 < len(expected) < 140
        assert await held_out(herald, a) == await held_out(herald, b) == expected
        assert a.recipients == 2_000 - len(expected)

        transactional = await run(herald, await mailing(herald, ignore_global_control=True))
        assert transactional.control == 0 and transactional.recipients == 2_000

        both = await mailing(herald, control=10.0)
        log = await run(herald, both)
        own = {p for p in ids if in_control(p, both.id, 10)}
        assert await held_out(herald, log) == expected | own


@both_stores
async def test_control_is_drawn_among_the_eligible(open_herald: Callable[..., Any]) -> None:
    async with await open_herald(FakeGateway()) as herald:
        ids = await audience(herald, 600)
        m = await mailing(herald, control=50.0)
        # suppress a few phones of profiles in the control group: suppression comes first
        out = [p for p in ids if in_control(p, m.id, 50)]
        phones = [f"+7916{ids.index(p):07d}" for p in out[:10]]
        await herald.store.add_suppressions("blocked", "phone", phones)
        log = await run(herald, m)
    assert log.suppressed == 10
    assert log.control == len(out) - 10
    assert log.subscribers_found == log.suppressed + log.control + log.recipients == 600


@both_stores
async def test_a_trigger_mailing_honours_the_global_group(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(FakeGateway(), extra=GLOBAL) as herald:
        ids = await audience(herald, 400)
        db = await herald.store.database_id("main")
        expected = {p for p in ids if in_control(p, global_key(db), 5)}
        m = await mailing(herald, kind="trigger")
        r = await herald.store.start_run(m.id)
        await herald.store.enqueue_triggers(m.id, r.id, [(p, b"{}", None) for p in ids])
        pipelines: list[Any] = []

        async def stop_when_settled() -> None:
            while True:
                await anyio.sleep(0.01)
                counts = (await herald.store.get_run(r.id))[1].counts
                if pipelines and counts.get("received", 0) >= len(ids):
                    pipelines[0].stop()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_settled)
            log = await herald.execute(m, r, started=pipelines.append)
        assert await held_out(herald, log) == expected
        assert log.recipients + log.pending == len(ids) - len(expected)


# -- config -----------------------------------------------------------------------------


def load(tmp_path: Path, extra: str, **engine: Any) -> Any:
    return load_config(write_config(tmp_path, extra=extra, **engine),
                       drivers=load_plugins(FakeGateway().plugin()).drivers)


def test_control_group_and_timezone_in_the_config(tmp_path: Path) -> None:
    config = load(tmp_path, "[databases.main]\ncontrol_group = 2.5\n",
                  timezone="Europe/Moscow")
    assert config.databases["main"].control_group == 2.5
    assert config.engine.timezone == "Europe/Moscow"
    assert load(tmp_path, "").engine.timezone == "UTC"


@pytest.mark.parametrize(("extra", "engine", "path", "says"), [
    ("[databases.main]\ncontrol_group = 100\n", {}, "databases.main.control_group",
     "0 <= x < 100"),
    ("[databases.main]\ncontrol_group = -1\n", {}, "databases.main.control_group",
     "0 <= x < 100"),
    ('[databases.main]\ncontrol_group = "5%"\n', {}, "databases.main.control_group",
     "expected a percent"),
    ("[databases.main]\ncontrol_groups = 5\n", {}, "databases.main.control_groups",
     "unknown key"),
    ("", {"timezone": "Mars/Olympus"}, "engine.timezone", "unknown time zone"),
    ("", {"timezone": "Europe"}, "engine.timezone", "unknown time zone"),
])
def test_bad_values_name_their_key(
    tmp_path: Path, extra: str, engine: dict[str, Any], path: str, says: str,
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, extra, **engine)
    (problem,) = err.value.problems
    assert problem.path == path
    assert says in problem.message
