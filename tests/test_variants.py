"""A multivariate mailing's runs in the pipeline: each run sends its variant's template to
its share of the audience, the shares cover every profile exactly once, a resumed run
sends the same variant, the log says what each run was for, and the channel report
groups by variant."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.cli import main
from engine.core.groups import share_point
from engine.errors import InputError
from engine.mailing_log import format_log
from engine.reports import channel_report, report_filter
from engine.store.models import RunSpec
from engine.testing import FakeGateway, write_config
from tests.test_control_groups import audience, mailing, run

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("any_store")]

VARIANTS = ["A {lead._fname}", "B {lead._fname}", "C {lead._fname}"]


def variant_specs(n: int, test_share: float) -> list[RunSpec]:
    """The test runs of ``n`` variants at ``test_share`` percent (as engine.mailings
    makes them: the last test share ends where the winner's starts)."""
    s = test_share / 100
    return [RunSpec(phase="test", variant=k,
                    share=(k * s / n, s if k == n - 1 else (k + 1) * s / n))
            for k in range(n)]


async def test_three_variants_at_30_and_the_winner_cover_every_profile_once(
    open_herald: Callable[..., Any], capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, chunk_size=300) as herald:
        ids = await audience(herald, 3_000)
        m = await mailing(herald, kind="multivariate", variants=VARIANTS, test_share=30.0,
                          winner="clicks", wait=5.0)
        logs = [await run(herald, m, spec) for spec in variant_specs(3, 30)]
        logs.append(await run(herald, m, RunSpec(
            phase="winner", variant=1, share=(0.3, 1.0),
            decided={"1": 4.0, "2": 11.0, "3": 2.0})))
        got: Counter[int] = Counter()
        for log in logs:
            rows = await herald.store.recipient_rows(log.run_id)
            got.update(r.profile_id for r in rows)
            # the others are no part of the run: read, counted apart, never recorded
            assert log.subscribers_received + log.other_share == 3_000
            assert log.subscribers_received == log.subscribers_found == len(rows)
        assert got == Counter(ids)  # every profile exactly once over the four runs
        letters = Counter(t.text[0] for t in gateway.texts.values())
        assert letters["A"] == logs[0].recipients and letters["C"] == logs[2].recipients
        assert letters["B"] == logs[1].recipients + logs[3].recipients
        for k, log in enumerate(logs[:3]):
            assert log.phase == "test" and log.variant == k + 1
            assert 200 < log.recipients < 400  # 10% each
        assert 1_950 < logs[3].recipients < 2_250  # the other 70%
        # a profile's variant is its point's: the same in any process
        first = await herald.store.recipient_rows(logs[0].run_id)
        assert all(share_point(r.profile_id, m.id) < 0.1 for r in first)

        text = format_log(logs[3])
        assert "Phase (phase)" in text and "winner" in text
        assert "Variant (variant)" in text
        assert "variant 2 won by clicks (variant 1: 4, variant 2: 11, variant 3: 2)" in text
        assert "In other runs' shares (other_share)" in text

        report = await channel_report(herald.store, report_filter(mailings=[m.id]),
                                      by="variant")
        assert report.columns[0] == "variant"
        assert [(r["variant"], r["recipients"]) for r in report.rows] == [
            (1, logs[0].recipients), (2, logs[1].recipients + logs[3].recipients),
            (3, logs[2].recipients)]

    # the same store through the command line (a config of its own: the fake driver is
    # this process's plugin only)
    (tmp_path / "cli").mkdir()
    config = str(write_config(tmp_path / "cli", driver="null",
                              database=str(tmp_path / "herald.db")))
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(main, [
        "--config", config, "report", "channel", "--mailing", str(m.id), "--by", "variant",
        "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [row["variant"] for row in json.loads(out)] == [1, 2, 3]


async def test_a_resumed_run_sends_its_own_variant(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        await audience(herald, 50)
        m = await mailing(herald, kind="multivariate", variants=VARIANTS, test_share=100.0)
        r = await herald.store.start_run(m.id, RunSpec(phase="test", variant=2,
                                                       share=(0.0, 1.0)))
        await herald.store.set_run_status(r.id, "interrupted")  # killed before it sent
        log = await herald.resume(r.id)
    assert log.recipients == 50
    assert {t.text[0] for t in gateway.texts.values()} == {"C"}


async def test_a_run_for_a_variant_the_mailing_lacks_is_refused(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(FakeGateway()) as herald:
        await audience(herald, 5)
        m = await mailing(herald, kind="multivariate", variants=VARIANTS[:2])
        with pytest.raises(InputError, match="variant 3"):
            await run(herald, m, RunSpec(phase="test", variant=2))


async def test_a_log_says_when_launches_were_missed(open_herald: Callable[..., Any]) -> None:
    async with await open_herald(FakeGateway()) as herald:
        await audience(herald, 5)
        m = await mailing(herald)
        log = await run(herald, m, RunSpec(due=1_800_000_000.0, missed=2))
    assert log.due == "2027-01-15T08:00:00.000+00:00" and log.missed == 2
    assert log.variant is None  # one template
    text = format_log(log)
    assert "2 launches missed while nothing ran; run once" in text
    assert "Due (due)" in text and "Phase" not in text
