"""Reports: rows and rates over a fake ``ReportStore`` (keys, division by zero), the output
formats read back (CSV, xlsx, JSON, the table), dates of ``--since``/``--until``, the
command line's exit codes, and, on both real stores, reports that match exactly the
recipients recorded and the receipts posted."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, cast

import pytest

from engine.cli import main
from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.errors import NotFound
from engine.reports import (
    channel_report,
    clicks_report,
    parse_time,
    render,
    report_filter,
    table,
    undeliveries_report,
)
from engine.store.base import ChannelRow, Click, LinkStat, ReportFilter, Store
from engine.store.models import AudienceSource, Mailing
from engine.testing import in_workspace, write_config

COUNTS = ("recipients", "sent", "delivered", "undelivered", "failed", "unknown", "segments",
          "clicks", "unique_clicks", "unsubscribed", "control")


def channel(key: str | int | None, recipients: int = 0, sent: int = 0, delivered: int = 0,
            undelivered: int = 0, unique_clicks: int = 0, **more: int) -> ChannelRow:
    counts = {"failed": 0, "unknown": 0, "segments": sent, "clicks": unique_clicks,
              "unsubscribed": 0, **more}
    return ChannelRow(key, recipients, sent, delivered, undelivered, unique_clicks=unique_clicks,
                      **counts)


class FakeReports:
    """The store's report role, answering what it was given, and remembering what it was
    asked."""

    def __init__(self, channel: Sequence[ChannelRow] = (),
                 undeliveries: Sequence[tuple[str, int]] = (),
                 clicks: Sequence[LinkStat] = (), mailings: dict[int, str] | None = None) -> None:
        self.channel = list(channel)
        self.undeliveries = list(undeliveries)
        self.clicks = list(clicks)
        self.mailings = mailings or {}
        self.asked: list[tuple[str, ReportFilter, str | None]] = []

    async def report_channel(self, where: ReportFilter, by: str | None = None) -> list[ChannelRow]:
        self.asked.append(("channel", where, by))
        return self.channel

    async def report_undeliveries(self, where: ReportFilter) -> list[tuple[str, int]]:
        self.asked.append(("undeliveries", where, None))
        return self.undeliveries

    async def report_clicks(self, where: ReportFilter) -> list[LinkStat]:
        self.asked.append(("clicks", where, None))
        return self.clicks

    async def get_mailing(self, mailing_id: int) -> Mailing:
        if mailing_id not in self.mailings:
            raise NotFound(f"no mailing {mailing_id}")
        return Mailing(id=mailing_id, name=self.mailings[mailing_id], resource="news",
                       source=AudienceSource("list", 1), template="x", created_at=0.0)

    def store(self) -> Store:
        return cast(Store, self)


# -- rows and rates ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_channel_rows_carry_the_counts_and_rates_in_the_contract_order() -> None:
    fake = FakeReports([channel(None, recipients=1000, sent=990, delivered=900, undelivered=60,
                                unique_clicks=45, failed=10, unknown=30, clicks=70,
                                unsubscribed=3, segments=1500, control=12)])
    report = await channel_report(fake.store(), ReportFilter(), None)
    assert report.columns == (*COUNTS, "delivery_rate", "ctr")
    assert report.rows == [{
        "recipients": 1000, "sent": 990, "delivered": 900, "undelivered": 60, "failed": 10,
        "unknown": 30, "segments": 1500, "clicks": 70, "unique_clicks": 45, "unsubscribed": 3,
        "control": 12, "delivery_rate": 0.9091, "ctr": 0.05,
    }]
    assert list(report.rows[0]) == list(report.columns)


@pytest.mark.anyio
async def test_a_rate_over_nothing_is_none_not_zero() -> None:
    fake = FakeReports([channel(None, recipients=5, sent=0, delivered=0),
                        channel(None, recipients=5, sent=5, delivered=0)])
    rows = (await channel_report(fake.store(), ReportFilter())).rows
    assert [(r["delivery_rate"], r["ctr"]) for r in rows] == [(None, None), (0.0, None)]


@pytest.mark.anyio
@pytest.mark.parametrize(("by", "key", "columns"), [
    ("day", "2024-05-01", ("day",)),
    ("hour", "2024-05-01T13:00Z", ("hour",)),
    ("resource", "news", ("resource",)),
    ("sender", "s1", ("sender",)),
])
async def test_the_group_key_comes_first_under_its_name(
    by: str, key: str, columns: tuple[str, ...]
) -> None:
    fake = FakeReports([channel(key, recipients=1, sent=1, delivered=1)])
    report = await channel_report(fake.store(), ReportFilter(), by)  # type: ignore[arg-type]
    assert report.columns[:len(columns) + 1] == (*columns, "recipients")
    assert report.rows[0][by] == key
    assert fake.asked == [("channel", ReportFilter(), by)]


@pytest.mark.anyio
async def test_by_mailing_names_each_mailing() -> None:
    fake = FakeReports([channel(1, recipients=2, sent=2), channel(7, recipients=1, sent=1)],
                       mailings={1: "spring sale"})  # 7 is gone
    report = await channel_report(fake.store(), ReportFilter(), "mailing")
    assert report.columns[:3] == ("mailing_id", "mailing", "recipients")
    assert [(r["mailing_id"], r["mailing"]) for r in report.rows] == [
        (1, "spring sale"), (7, None)]


@pytest.mark.anyio
async def test_undeliveries_share_of_all_undeliveries() -> None:
    fake = FakeReports(undeliveries=[("absent subscriber", 3), ("blocked", 2),
                                     ("undefined", 1)])
    report = await undeliveries_report(fake.store(), ReportFilter(mailings=(4,)))
    assert report.rows == [
        {"reason": "absent subscriber", "count": 3, "share": 0.5},
        {"reason": "blocked", "count": 2, "share": 0.3333},
        {"reason": "undefined", "count": 1, "share": 0.1667},
    ]
    assert fake.asked == [("undeliveries", ReportFilter(mailings=(4,)), None)]


@pytest.mark.anyio
async def test_clicks_share_is_unique_clickers_over_recipients_of_the_same_filter() -> None:
    where = ReportFilter(resource="news", since=10.0)
    fake = FakeReports([channel(None, recipients=400, sent=400)],
                       clicks=[LinkStat("https://a.example/x", 30, 20),
                               LinkStat("https://a.example/y", 5, 5)])
    report = await clicks_report(fake.store(), where)
    assert report.columns == ("url", "clicks", "unique_clicks", "share")
    assert report.rows == [
        {"url": "https://a.example/x", "clicks": 30, "unique_clicks": 20, "share": 0.05},
        {"url": "https://a.example/y", "clicks": 5, "unique_clicks": 5, "share": 0.0125},
    ]
    assert ("channel", where, None) in fake.asked


@pytest.mark.anyio
async def test_empty_reports_have_their_columns() -> None:
    fake = FakeReports()
    for report in (await channel_report(fake.store(), ReportFilter(), "day"),
                   await undeliveries_report(fake.store(), ReportFilter()),
                   await clicks_report(fake.store(), ReportFilter())):
        assert report.rows == []
        assert render(report, "csv").decode().splitlines() == [",".join(report.columns)]
        assert json.loads(render(report, "json")) == []
        assert "(nothing in this range)" in table(report)


# -- output formats ----------------------------------------------------------------------


async def sample() -> Any:
    fake = FakeReports([channel(1, recipients=10, sent=8, delivered=6, undelivered=2,
                                unique_clicks=3),
                        channel(2, recipients=4, sent=0)], mailings={1: "a, \"quoted\"", 2: "b"})
    return await channel_report(fake.store(), ReportFilter(), "mailing")


@pytest.mark.anyio
async def test_csv_is_a_header_and_a_line_per_row() -> None:
    rows = list(csv.reader(io.StringIO(render(await sample(), "csv").decode())))
    assert rows[0] == ["mailing_id", "mailing", *COUNTS, "delivery_rate", "ctr"]
    assert rows[1] == ["1", 'a, "quoted"', "10", "8", "6", "2", "0", "0", "8", "3", "3", "0", "0",
                       "0.75", "0.5"]
    assert rows[2][-2:] == ["", ""]  # no rate over nothing sent
    assert len(rows) == 3


@pytest.mark.anyio
async def test_xlsx_reads_back_with_numbers_as_numbers(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    path = tmp_path / "r.xlsx"
    path.write_bytes(render(await sample(), "xlsx"))
    sheet = load_workbook(path).active
    assert sheet is not None and sheet.title == "channel"
    values = list(sheet.iter_rows(values_only=True))
    assert values[0] == ("mailing_id", "mailing", *COUNTS, "delivery_rate", "ctr")
    assert values[1] == (1, 'a, "quoted"', 10, 8, 6, 2, 0, 0, 8, 3, 3, 0, 0, 0.75, 0.5)
    assert values[2][-2:] == (None, None)
    assert all(cell.font.bold for cell in sheet[1])
    assert sheet.cell(row=2, column=len(values[0])).number_format == "0.00%"


@pytest.mark.anyio
async def test_json_is_the_list_of_rows() -> None:
    report = await sample()
    assert json.loads(render(report, "json")) == report.rows


@pytest.mark.anyio
async def test_the_table_shows_rates_as_percentages() -> None:
    lines = table(await sample()).splitlines()
    assert lines[0].split()[:3] == ["MAILING_ID", "MAILING", "RECIPIENTS"]
    assert lines[1].split()[-2:] == ["75.00%", "50.00%"]
    assert lines[2].split()[-2:] == ["-", "-"]


# -- dates --------------------------------------------------------------------------------


def ts(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01", ts(2024, 5, 1)),
    ("2024-05-01T12:30", ts(2024, 5, 1, 12, 30)),  # naive: UTC
    ("2024-05-01 12:30:15", ts(2024, 5, 1, 12, 30, 15)),
    ("2024-05-01T12:30Z", ts(2024, 5, 1, 12, 30)),
    ("2024-05-01T15:30+03:00", ts(2024, 5, 1, 12, 30)),
])
def test_dates_and_datetimes(text: str, expected: float) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "2024-02-30", "1714567890",
                                  "2024-05-01T25:00", ""])
def test_a_bad_date_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a date"):
        parse_time(text)


def test_the_filter_dedupes_mailings_and_refuses_an_empty_range() -> None:
    assert report_filter(mailings=[3, 1, 3], since=1.0, until=2.0) == ReportFilter(
        (1, 3), None, 1.0, 2.0)
    with pytest.raises(ValueError, match="later than since"):
        report_filter(since=2.0, until=2.0)


# -- the command line, before any workspace ------------------------------------------------


@pytest.mark.parametrize(("args", "says"), [
    (["report", "channel", "--since", "2024-13-01"], "argument --since: not a date"),
    (["report", "undeliveries", "--until", "soon"], "argument --until: not a date"),
    (["report", "clicks", "--mailing", "x"], "argument --mailing: not a mailing id"),
    (["report", "channel", "--by", "week"], "argument --by: invalid choice"),
    (["report", "channel", "--format", "pdf"], "argument --format: invalid choice"),
])
def test_bad_options_exit_2_naming_the_option(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_report_alone_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "channel" in out and "undeliveries" in out and "clicks" in out


# -- end to end, on both stores ------------------------------------------------------------

PROMO = '\n[resources.promo]\nchannel = "sms"\nvirtual_sender = "v"\n'


class Seeded(NamedTuple):
    spring: int
    promo: int


async def seed(store: Store) -> Seeded:
    """Two mailings as runs leave them. ``spring`` (resource news): 8 recipients, 7 sent
    (one of 2 segments) and 1 failed; receipts: 3 delivered, 4 undelivered (twice "Absent
    subscriber", written two ways, once "Blocked", once with no error); 3 clicks by people
    (2 of them firsts) and one by a bot. ``promo`` (resource promo): 2 sent, 1 delivered."""
    source = AudienceSource("list", await store.database_id("main", create=True))
    spring, run = await store.create_run(name="spring", resource="news", source=source,
                                         template="x", limit=None)
    messages = [Message(seq, f"{run.uid}-{seq}", seq, f"+4479000000{seq:02d}", "s1", "x",
                        2 if seq == 1 else 1) for seq in range(1, 9)]
    outcomes = [Outcome(seq, "sent", provider_id=f"p{seq}") for seq in range(1, 8)]
    outcomes.append(Outcome(8, "failed", error="rejected"))
    await store.record(run.id, 1, "s1", messages, outcomes)
    await store.apply_receipts("gw", [
        Receipt("p1", "delivered"), Receipt("p2", "delivered"), Receipt("p3", "delivered"),
        Receipt("p4", "undelivered", error="Absent subscriber"),
        Receipt("p5", "undelivered", error="  absent   SUBSCRIBER "),
        Receipt("p6", "undelivered", error="Blocked"),
        Receipt("p7", "undelivered"),
    ], senders=["s1"])
    [link] = await store.ensure_links(run.id, ["https://shop.example/sale"], 0)
    now = time.time()
    await store.add_clicks([
        Click(link.id, 1, now, "192.0.2.1", "Mozilla/5.0", False),
        Click(link.id, 1, now, "192.0.2.1", "Mozilla/5.0", False),
        Click(link.id, 2, now, "192.0.2.2", "Mozilla/5.0", False),
        Click(link.id, 3, now, "192.0.2.3", "TelegramBot (like TwitterBot)", True),
    ])
    promo, run = await store.create_run(name="promo", resource="promo", source=source,
                                        template="x", limit=None)
    await store.record(run.id, 1, "s1", [
        Message(seq, f"{run.uid}-{seq}", 100 + seq, f"+4479000001{seq:02d}", "s1", "x", 1)
        for seq in (1, 2)], [Outcome(seq, "sent", provider_id=f"b{seq}") for seq in (1, 2)])
    await store.apply_receipts("gw", [Receipt("b1", "delivered")], senders=["s1"])
    return Seeded(spring.id, promo.id)


SPRING = {"recipients": 8, "sent": 7, "delivered": 3, "undelivered": 4, "failed": 1,
          "unknown": 0, "segments": 8, "clicks": 3, "unique_clicks": 2, "unsubscribed": 0,
          "control": 0, "delivery_rate": 0.4286, "ctr": 0.6667}
PROMO_ROW = {"recipients": 2, "sent": 2, "delivered": 1, "undelivered": 0, "failed": 0,
             "unknown": 0, "segments": 2, "clicks": 0, "unique_clicks": 0, "unsubscribed": 0,
             "control": 0, "delivery_rate": 0.5, "ctr": 0.0}
SPRING_REASONS = [{"reason": "absent subscriber", "count": 2, "share": 0.5},
                  {"reason": "blocked", "count": 1, "share": 0.25},
                  {"reason": "undefined", "count": 1, "share": 0.25}]
SPRING_CSV = ("recipients,sent,delivered,undelivered,failed,unknown,segments,clicks,"
              "unique_clicks,unsubscribed,control,delivery_rate,ctr\r\n"
              "8,7,3,4,1,0,8,3,2,0,0,0.4286,0.6667\r\n")
REASONS_CSV = ("reason,count,share\r\nabsent subscriber,2,0.5\r\nblocked,1,0.25\r\n"
               "undefined,1,0.25\r\n")


@pytest.fixture
def workspace(tmp_path: Path, any_store: str) -> tuple[Path, Seeded]:
    """A workspace (on each store) with the two mailings of ``seed``; (config, ids)."""
    config = write_config(tmp_path, driver="null", extra=PROMO)
    return config, in_workspace(config, seed)


def report(capsys: pytest.CaptureFixture[str], config: Path,
           *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``herald report ...``."""
    capsys.readouterr()
    code = main(["--config", str(config), "report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def rows_of(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> Any:
    """The rows of ``herald report ... --format json``, which must exit 0."""
    code, out, err = report(capsys, config, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_the_reports_count_what_was_recorded_and_posted(
    workspace: tuple[Path, Seeded], capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = workspace
    spring = ("--mailing", str(ids.spring))
    assert rows_of(capsys, config, "channel", *spring) == [SPRING]
    assert rows_of(capsys, config, "undeliveries", *spring) == SPRING_REASONS
    assert report(capsys, config, "channel", *spring, "--format", "csv")[:2] == (
        0, SPRING_CSV)
    assert report(capsys, config, "undeliveries", *spring, "--format", "csv")[:2] == (
        0, REASONS_CSV)
    assert rows_of(capsys, config, "clicks", *spring) == [
        {"url": "https://shop.example/sale", "clicks": 3, "unique_clicks": 2, "share": 0.25}]


def test_grouping_and_filters(
    workspace: tuple[Path, Seeded], capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = workspace
    assert rows_of(capsys, config, "channel", "--by", "mailing") == [
        {"mailing_id": ids.spring, "mailing": "spring", **SPRING},
        {"mailing_id": ids.promo, "mailing": "promo", **PROMO_ROW}]
    assert rows_of(capsys, config, "channel", "--by", "resource") == [
        {"resource": "news", **SPRING}, {"resource": "promo", **PROMO_ROW}]
    assert rows_of(capsys, config, "channel", "--resource", "promo") == [PROMO_ROW]
    [row] = rows_of(capsys, config, "channel", "--by", "sender")
    assert row["sender"] == "s1" and row["recipients"] == 10
    # one day, or two when the test straddles midnight UTC
    days = rows_of(capsys, config, "channel", "--by", "day", "--mailing", str(ids.spring))
    assert sum(d["recipients"] for d in days) == 8
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d["day"]) for d in days)
    hours = rows_of(capsys, config, "channel", "--by", "hour", "--mailing", str(ids.spring))
    assert sum(h["delivered"] for h in hours) == 3
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:00Z", h["hour"]) for h in hours)
    today = datetime.now(UTC).date()
    later = (today + timedelta(days=2)).isoformat()
    assert rows_of(capsys, config, "channel", "--since", later) == []
    assert rows_of(capsys, config, "undeliveries", "--mailing", str(ids.spring), "--since",
                   (today - timedelta(days=1)).isoformat(), "--until", later) == SPRING_REASONS


def test_files_and_the_table(
    workspace: tuple[Path, Seeded], capsys: pytest.CaptureFixture[str]
) -> None:
    from openpyxl import load_workbook

    config, ids = workspace
    out_csv = config.parent / "channel.csv"
    code, out, err = report(capsys, config, "channel", "--mailing", str(ids.spring),
                            "--output", str(out_csv))  # the suffix picks the format
    assert (code, out) == (0, "") and f"(1 rows) to {out_csv}" in err
    assert out_csv.read_bytes().decode() == SPRING_CSV
    out_xlsx = config.parent / "reasons.xlsx"
    assert report(capsys, config, "undeliveries", "--mailing", str(ids.spring),
                  "--format", "xlsx", "--output", str(out_xlsx))[0] == 0
    rows = list(load_workbook(out_xlsx).active.iter_rows(values_only=True))  # type: ignore[union-attr]
    assert rows == [("reason", "count", "share"), ("absent subscriber", 2, 0.5),
                    ("blocked", 1, 0.25), ("undefined", 1, 0.25)]
    code, out, _ = report(capsys, config, "channel", "--by", "mailing")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["MAILING_ID", "MAILING", "RECIPIENTS"]
    assert lines[1].split()[1:3] == ["spring", "8"] and lines[1].split()[-2:] == [
        "42.86%", "66.67%"]


@pytest.mark.parametrize(("args", "says"), [
    (["channel", "--mailing", "999"], "--mailing: no mailing 999"),
    (["clicks", "--resource", "nope"], "--resource: no resource 'nope' in the config"),
    (["channel", "--since", "2024-05-02", "--until", "2024-05-01"],
     "--until: must be later than --since"),
])
def test_unknown_names_and_empty_ranges_exit_2(
    workspace: tuple[Path, Seeded], capsys: pytest.CaptureFixture[str], args: list[str],
    says: str,
) -> None:
    config, _ = workspace
    code, out, err = report(capsys, config, *args)
    assert (code, out) == (2, "")
    assert says in err
