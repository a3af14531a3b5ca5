"""Creating mailings of every kind (what is refused, and the field it names), launching
one now, test sends, and the start and cancel of scheduled mailings through the service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

import engine.service
from engine import mailings
from engine.demo import generate
from engine.errors import InputError, StoreError, TemplateError
from engine.mailings import MailingSpec, create_mailing, launch, test_mailing
from engine.service import MailingService
from engine.store.models import AudienceSource
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

NOW = datetime(2030, 12, 1, tzinfo=UTC).timestamp()


def spec(**fields: Any) -> MailingSpec:
    base: dict[str, Any] = {"name": "m", "kind": "broadcast", "resource": "news",
                            "template": "Hi", "database": "main"}
    base.update(fields)
    return MailingSpec(**base)


MV = {"kind": "multivariate", "template": None, "templates": ["A", "B", "C"],
      "test_share": 30.0, "winner": "clicks", "wait": 5.0}


@pytest.mark.parametrize("fields, field", [
    ({"kind": "multivariate", "template": None, "templates": ["A"], "test_share": 30.0,
      "winner": "clicks"}, "templates"),
    ({**MV, "templates": [f"T{i}" for i in range(9)]}, "templates"),
    ({"templates": ["A", "B"], "template": None}, "templates"),
    ({"templates": ["A"]}, "templates"),
    ({**MV, "test_share": 0.0}, "test_share"),
    ({**MV, "test_share": 101.0}, "test_share"),
    ({**MV, "test_share": None}, "test_share"),
    ({**MV, "winner": None}, "winner"),
    ({**MV, "test_share": 100.0}, "winner"),
    ({**MV, "wait": -1.0}, "wait"),
    ({"winner": "clicks"}, "winner"),
    ({"control": 100.0}, "control"),
    ({"control": -1.0}, "control"),
    ({"at": "2031-01-01T10:00", "schedule": "0 10 * * *"}, "at"),
    ({"kind": "regular"}, "schedule"),
    ({"kind": "regular", "schedule": "0 10 * *"}, "schedule"),
    ({"kind": "regular", "schedule": "0 10 * * * 2031"}, "schedule"),
    ({"kind": "regular", "schedule": "61 10 * * *"}, "schedule"),
    ({"schedule": "0 10 * * *"}, "schedule"),
    ({"at": "tomorrow"}, "at"),
    ({"at": "2031-01-01T10:00", "timezone": "Mars/Olympus"}, "timezone"),
    ({"at": "2020-01-01T10:00"}, "at"),
    ({"kind": "regular", "schedule": "0 10 * * *", "until": "2030-11-01T00:00"}, "until"),
    ({"until": "2031-01-01T00:00"}, "until"),
    ({"kind": "trigger", "at": "2031-01-01T10:00"}, "at"),
    ({"kind": "trigger", "database": None, "segment": "x"}, "database"),
    ({"limit": -1}, "limit"),
    ({"resource": "nope"}, "resource"),
])
async def test_a_bad_mailing_is_refused_naming_its_field(
    open_herald: Callable[..., Any], fields: dict[str, Any], field: str,
) -> None:
    async with await open_herald() as herald:
        await herald.store.database_id("main", create=True)
        with pytest.raises(InputError, match=f"^{field}: "):
            await create_mailing(herald, spec(**fields), now=NOW)
        assert await herald.store.list_mailings() == []


async def test_every_template_of_a_multivariate_mailing_is_compiled_first(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald() as herald:
        await herald.store.database_id("main", create=True)
        with pytest.raises(TemplateError, match=r"templates\[2\]: .*empty"):
            await create_mailing(herald, spec(**{**MV, "templates": ["A", "  ", "C"]}))
        with pytest.raises(TemplateError, match=r"templates\[3\]"):
            await create_mailing(herald, spec(**{**MV, "templates": ["A", "B", "{lead.x"]}))


async def test_schedules_and_options_are_kept_and_a_schedule_makes_it_scheduled(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(timezone="Europe/Moscow") as herald:
        await herald.store.database_id("main", create=True)
        at = await create_mailing(herald, spec(at="2030-12-24T10:00"), now=NOW)
        regular = await create_mailing(herald, spec(
            kind="regular", schedule="0 9 * * MON#1", timezone="UTC", control=2.5,
            until="2031-06-01T00:00"), now=NOW)
        mv = await create_mailing(herald, spec(**MV), now=NOW)
        split = await create_mailing(herald, spec(**{**MV, "test_share": 100.0,
                                                     "winner": None}), now=NOW)
        draft = await create_mailing(herald, spec(), now=NOW)
    assert (at.state, at.next_launch) == (
        "scheduled", datetime(2030, 12, 24, 7, 0, tzinfo=UTC).timestamp())
    assert at.options.schedule is not None and at.options.schedule.timezone == "Europe/Moscow"
    assert (regular.state, regular.next_launch) == (
        "scheduled", datetime(2030, 12, 2, 9, 0, tzinfo=UTC).timestamp())
    assert regular.options.control == 2.5
    assert (mv.template, mv.options.variants, mv.options.test_share, mv.options.winner,
            mv.options.wait) == ("A", ["A", "B", "C"], 30.0, "clicks", 5.0)
    assert (split.options.winner, split.options.wait) == (None, None)
    assert (mv.state, draft.state, draft.next_launch) == ("draft", "draft", None)


def test_the_spec_is_one_class_wherever_it_is_imported_from() -> None:
    assert engine.service.MailingSpec is mailings.MailingSpec
    decoded = msgspec.convert({"name": "n", "kind": "regular", "resource": "r",
                               "template": "t", "schedule": "* * * * *"}, MailingSpec)
    assert decoded.schedule == "* * * * *"


async def test_a_broadcast_launched_by_hand_runs_once_and_its_schedule_is_taken(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        plan = await generate(herald.store, profiles=20, database="main")
        m = await create_mailing(herald, spec(at="2031-01-01T10:00"))
        [log] = await launch(herald, m)
        again = await herald.store.get_mailing(m.id)
        with pytest.raises(StoreError, match="launched already"):
            await launch(herald, again)
    assert log.sent == plan.unique == len(gateway.accepted)
    assert (again.state, again.next_launch) == ("done", None)


async def test_a_mailing_sent_at_once_is_done_and_cannot_be_launched_again(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        plan = await generate(herald.store, profiles=10, database="main")
        log = await herald.send(resource="news", database="main", template="Hi")
        mailing = await herald.store.get_mailing(log.mailing_id)
        with pytest.raises(StoreError, match="launched already"):
            await launch(herald, mailing)
    assert log.sent == plan.unique == len(gateway.accepted)
    assert (mailing.state, mailing.next_launch) == ("done", None)


async def test_a_broadcast_with_a_run_is_never_launched_again_whatever_its_state(
    open_herald: Callable[..., Any],
) -> None:
    """``herald send`` makes the run, then marks the mailing done, in two transactions; a
    kill -9 between them leaves a draft with a run. Starting it would send everyone a
    second message: it is refused (``herald resume`` finishes the run)."""
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        await generate(herald.store, profiles=10, database="main")
        mailing, run = await herald.store.create_run(
            name="cut short", resource="news", source=AudienceSource(
                "list", await herald.store.database_id("main")), template="Hi", limit=None)
        assert (await herald.store.get_mailing(mailing.id)).state == "draft"
        with pytest.raises(StoreError, match=f"sent already \\(run {run.id}"):
            await launch(herald, mailing)
        assert not gateway.accepted
        assert [r.id for r in await herald.store.mailing_runs(mailing.id)] == [run.id]


async def test_a_run_counts_its_audience_beside_its_messages_and_logs_its_first_submit(
    open_herald: Callable[..., Any],
) -> None:
    """The dedupe filter is sized by the bound (both ends of the database's ids, which
    another database's profiles widen here); progress ends on the exact count; the log
    says when the first batch went."""
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        first = await generate(herald.store, profiles=10, database="main")
        await generate(herald.store, profiles=10, database="other", seed=2)
        more = await generate(herald.store, profiles=10, database="main", seed=3)
        source = (await herald.store.get_mailing(
            (await herald.send(resource="news", database="main", template="Hi",
                               limit=0)).mailing_id)).source
        assert await herald.store.audience_bound(source) == 30 > 20
        seen: list[Any] = []
        log = await herald.send(resource="news", database="main", template="Hi",
                                progress=seen.append)
    assert seen[-1].total == first.profiles + more.profiles == 20
    assert log.sent == first.unique + more.unique
    assert log.first_submit_ms is not None
    assert 0 < log.first_submit_ms < 60_000


async def test_a_test_send_is_a_trial_run_per_variant_before_any_start(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(FakeGateway(), default_region="RU") as herald:
        await generate(herald.store, profiles=5, database="main")
        m = await create_mailing(herald, spec(**MV))
        with pytest.raises(InputError, match="phones"):
            await test_mailing(herald, m.id, ["not a phone"])
        with pytest.raises(InputError, match="profile"):
            await test_mailing(herald, m.id, ["+79990000001"], profile_id=10_000)
        logs = await test_mailing(herald, m.id, ["+79990000001", "89990000002"])
        runs = await herald.store.mailing_runs(m.id)
        mailing = await herald.store.get_mailing(m.id)
    assert [(r.spec.phase, r.spec.variant, r.spec.is_test) for r in runs] == [
        ("trial", 0, True), ("trial", 1, True), ("trial", 2, True)]
    assert runs[0].spec.phones == ["+79990000001", "+79990000002"]
    assert len(logs) == 3 and mailing.state == "draft"  # still never started


async def test_the_service_starts_cancels_and_picks_by_the_rules(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(FakeGateway(), default_region="RU") as herald:
        await generate(herald.store, profiles=5, database="main")
        async with MailingService.running(herald, schedule=False) as service:
            regular = await service.create(spec(kind="regular", schedule="0 10 * * *"))
            assert regular.state == "scheduled" and regular.next_launch is not None
            cancelled = await service.cancel(regular.id)
            assert (cancelled.state, cancelled.next_launch) == ("cancelled", None)
            with pytest.raises(StoreError, match="cancelled"):
                await service.start(regular.id)
            mv = await service.create(spec(**{**MV, "winner": "manual"}))
            with pytest.raises(StoreError, match="not waiting"):
                await service.pick(mv.id, 1)
            with pytest.raises(InputError, match="variant"):
                await service.pick(mv.id, 4)
            plain = await service.create(spec())
            with pytest.raises(InputError, match="only a multivariate"):
                await service.pick(plain.id, 1)
