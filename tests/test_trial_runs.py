"""Trial runs (``mailing test``): one profile's text to each given phone through the
mailing's real routing, with no dedupe, no policy and no control group; a suppressed
phone stays suppressed; and they show in neither a later run's dedupe nor the reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import InputError
from engine.mailing_log import format_log
from engine.reports import channel_report, report_filter
from engine.store.models import RunSpec
from engine.testing import FakeGateway
from tests.test_control_groups import audience, mailing, run

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("any_store")]

TEST_PHONES = ["+447911000001", "+447911000002"]


def trial(*phones: str, profile_id: int | None = None, variant: int = 0) -> RunSpec:
    return RunSpec(phase="trial", is_test=True, variant=variant, phones=list(phones),
                   profile_id=profile_id)


async def test_one_sms_per_phone_rendered_for_the_audience_s_first_profile(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        ids = await audience(herald, 3)
        m = await mailing(herald, "Hi {lead._fname} ({lead._id}) {subscription.phone}",
                          control=100.0)  # a control group holds nobody out of a trial
        log = await run(herald, m, trial(*TEST_PHONES, "not a phone"))
        assert log.phase == "trial" and log.is_test
        assert log.recipients == log.sent == 2 and log.invalid_phones == 1
        assert log.control == 0
        assert sorted((t.to, t.text, t.sender) for t in gateway.texts.values()) == [
            (phone, f"Hi P0 ({ids[0]}) {phone}", "ACME") for phone in TEST_PHONES]
        text = format_log(log)
        assert "trial (test send)" in text and ", ".join(TEST_PHONES) in text

        gateway.texts.clear()
        await run(herald, m, trial(TEST_PHONES[0], profile_id=ids[2]))
        assert [t.text for t in gateway.texts.values()] == [
            f"Hi P2 ({ids[2]}) {TEST_PHONES[0]}"]
        with pytest.raises(InputError, match="no profile 999999"):
            await run(herald, m, trial(TEST_PHONES[0], profile_id=999_999))


async def test_a_variant_s_trial_sends_that_variant(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        await audience(herald, 2)
        m = await mailing(herald, kind="multivariate", variants=["A", "B {lead._fname}"])
        for k in range(2):
            log = await run(herald, m, trial(TEST_PHONES[0], variant=k))
            assert log.variant == k + 1
    assert sorted(t.text for t in gateway.texts.values()) == ["A", "B P0"]


async def test_an_empty_audience_can_be_tested(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        await herald.store.database_id("main", create=True)
        m = await mailing(herald, "Hello{lead._fname}!")
        log = await run(herald, m, trial(TEST_PHONES[0]))
    assert log.recipients == 1
    assert [t.text for t in gateway.texts.values()] == ["Hello!"]


async def test_no_dedupe_but_suppression(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        await audience(herald, 2)
        await herald.store.add_suppressions("blocked", "phone", [TEST_PHONES[1]])
        log = await run(herald, await mailing(herald),
                        trial(TEST_PHONES[0], TEST_PHONES[0], TEST_PHONES[1]))
    assert log.duplicate_phones == 0 and log.suppressed == 1
    assert Counter(t.to for t in gateway.texts.values()) == {TEST_PHONES[0]: 2}


ONE_A_DAY = 'policy = { max_messages = 1, period_days = 1, scope = "profile" }\n'


async def test_a_trial_ignores_the_policy(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, extra=ONE_A_DAY) as herald:
        await audience(herald, 3)
        m = await mailing(herald)
        assert (await run(herald, m)).recipients == 3
        # every profile had its one message today: the trial of the first goes anyway
        log = await run(herald, m, trial(*TEST_PHONES))
        assert log.recipients == 2 and log.policy == 0


async def test_a_trial_counts_for_no_policy(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, extra=ONE_A_DAY) as herald:
        await audience(herald, 3)
        m = await mailing(herald)
        await run(herald, m, trial(*TEST_PHONES))  # renders the first profile
        log = await run(herald, m)
    assert log.policy == 0 and log.recipients == 3


async def test_a_trial_is_in_no_later_run_s_dedupe_nor_in_the_reports(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        await audience(herald, 20)
        m = await mailing(herald)
        own = "+79160000003"  # the phone of a profile of the audience
        await run(herald, m, trial(own, *TEST_PHONES))
        log = await run(herald, m)
        assert log.recipients == 20 and log.duplicate_phones == 0
        assert Counter(t.to for t in gateway.texts.values())[own] == 2
        (row,) = (await channel_report(herald.store, report_filter(mailings=[m.id]))).rows
        assert row["recipients"] == row["sent"] == 20
