"""How long the reports take over one mailing of a million recipients, on either store.

    python bench/reports.py                                  # SQLite in a temp dir
    python bench/reports.py --recipients 100000 --repeat 3
    python bench/reports.py --database postgresql://postgres@127.0.0.1:5432/bench_reports

The mailing is built through the store's normal write path, as a run writes it:
``store.record`` in batches of ``--batch`` (every message ``sent``, 1 segment, on senders
``s1`` and ``s2``), then receipts through ``store.apply_receipts`` (``--delivered`` of them
delivered, ``--undelivered`` undelivered over four reasons and none), then people's clicks
through ``store.add_clicks`` on two links (``--clicks``, a tenth of them second clicks).
So the counters are the ones a real run leaves, with a million recipient rows and their
events beside them.

Then each report is timed, best of ``--repeat``: the store's ``report_*`` alone; what
``herald report`` and the API do on top (rows, rates, mailing names, CSV); a request to
``GET /api/v1/reports/channel`` in-process (httpx's ASGI transport, a viewer's token); and
the whole ``herald report channel`` command in a new process (Python's start, opening the
workspace, the report, its JSON). A PostgreSQL database should be a throwaway one: the
bench writes a mailing to it and leaves it there.

The counters are kept per (run, sender, hour), and ``record`` counts in the hour it runs,
so the bench's mailing has a row or two per sender: a real mailing of a million spread
over a day has 24 per sender, still a few hundred rows at most.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from engine.api import TokenStore, create_app
from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.reports import channel_report, clicks_report, render, undeliveries_report
from engine.runner import Herald
from engine.store.base import Click, ReportFilter, Store
from engine.store.models import AudienceSource
from engine.testing import write_config

SENDERS = ("s1", "s2")
REASONS = ("Absent subscriber", "absent  subscriber", "Blocked", "Number not in service", None)
CHUNK = 10_000


async def build(store: Store, args: argparse.Namespace) -> int:
    """The mailing of ``args.recipients`` recipients; its id."""
    database_id = await store.database_id("bench", create=True)
    mailing, run = await store.create_run(
        name="bench reports", resource="news", source=AudienceSource("list", database_id),
        template="Hi https://shop.example/sale", limit=None)
    started = time.perf_counter()
    n = args.recipients
    seqs_of: dict[str, list[int]] = {sender: [] for sender in SENDERS}
    for batch, first in enumerate(range(1, n + 1, args.batch), 1):
        sender = SENDERS[batch % len(SENDERS)]
        seqs = range(first, min(first + args.batch, n + 1))
        messages = [Message(seq, f"{run.uid}-{seq}", seq, f"+7916{seq:07d}", sender,
                            "Hi https://t.example/xxxxxxxxxx", 1) for seq in seqs]
        outcomes = [Outcome(seq, "sent", provider_id=f"p{seq}") for seq in seqs]
        await store.record(run.id, batch, sender, messages, outcomes)
        seqs_of[sender].extend(seqs)
    recorded = time.perf_counter() - started

    started = time.perf_counter()
    delivered = int(n * args.delivered)
    undelivered = int(n * args.undelivered)
    for sender, seqs_sent in seqs_of.items():
        receipts = [
            Receipt(f"p{seq}", "delivered") if seq <= delivered
            else Receipt(f"p{seq}", "undelivered", error=REASONS[seq % len(REASONS)])
            for seq in seqs_sent if seq <= delivered + undelivered
        ]
        for i in range(0, len(receipts), CHUNK):
            await store.apply_receipts(f"gw-{sender}", receipts[i:i + CHUNK], senders=[sender])
    applied = time.perf_counter() - started

    started = time.perf_counter()
    links = await store.ensure_links(run.id, ["https://shop.example/sale",
                                              "https://shop.example/terms"], 0)
    now = time.time()
    people = int(n * args.clicks)
    clicks = [Click(links[seq % 2].id, seq, now, "192.0.2.1", "bench", False)
              for seq in range(1, people + 1)]
    clicks += clicks[: people // 10]  # second clicks: not unique
    for i in range(0, len(clicks), CHUNK):
        await store.add_clicks(clicks[i:i + CHUNK])
    clicked = time.perf_counter() - started
    print(f"built: {n:,} recipients recorded in {recorded:.1f} s"
          f" ({n / recorded:,.0f}/s), {delivered + undelivered:,} receipts in {applied:.1f} s,"
          f" {len(clicks):,} clicks in {clicked:.1f} s", file=sys.stderr)
    return mailing.id


async def best(repeat: int, work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """(the fastest of ``repeat`` runs in ms, the last answer)."""
    times, answer = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        answer = await work()
        times.append((time.perf_counter() - started) * 1000)
    return min(times), answer


async def measure(herald: Herald, config: Path, mailing_id: int, repeat: int) -> None:
    store = herald.store
    one = ReportFilter(mailings=(mailing_id,))
    day = ReportFilter(mailings=(mailing_id,), since=time.time() - 86400, until=time.time() + 60)
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("store.report_channel(by=None)", lambda: store.report_channel(one, None)),
        ("store.report_channel(by=hour)", lambda: store.report_channel(one, "hour")),
        ("store.report_channel(by=sender), since/until",
         lambda: store.report_channel(day, "sender")),
        ("store.report_undeliveries", lambda: store.report_undeliveries(one)),
        ("store.report_clicks", lambda: store.report_clicks(one)),
        ("herald report channel --by mailing (csv)",
         lambda: _csv(channel_report(store, one, "mailing"))),
        ("herald report undeliveries (csv)", lambda: _csv(undeliveries_report(store, one))),
        ("herald report clicks (csv)", lambda: _csv(clicks_report(store, one))),
        ("herald report channel, every mailing", lambda: channel_report(
            store, ReportFilter(), None)),
    ]
    print(f"{'report':<48} {'best ms':>9}  answer")
    for name, work in cases:
        ms, answer = await best(repeat, work)
        print(f"{name:<48} {ms:>9.2f}  {_summary(answer)}")
    secret = (await TokenStore(store).create("viewer", name="bench"))[1]
    transport = httpx.ASGITransport(create_app(herald))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald",
                                 headers={"Authorization": f"Bearer {secret}"}) as client:
        for query in ("", "&by=hour", "&format=csv"):
            path = f"/api/v1/reports/channel?mailing={mailing_id}{query}"

            async def get(path: str = path) -> bytes:
                r = await client.get(path)
                r.raise_for_status()
                return r.content

            ms, answer = await best(repeat, get)
            print(f"{'GET ' + path[len('/api/v1'):]:<48} {ms:>9.2f}  {answer[:60]!r}")
    command = [sys.executable, "-m", "engine.cli", "--config", str(config), "report",
               "channel", "--mailing", str(mailing_id), "--format", "json"]

    async def cli() -> bytes:
        return await anyio.to_thread.run_sync(lambda: subprocess.run(
            command, check=True, capture_output=True).stdout)

    ms, answer = await best(repeat, cli)
    print(f"{'herald report channel (a new process)':<48} {ms:>9.2f}"
          f"  {answer.decode().split()[:3]}")


async def _csv(report: Awaitable[Any]) -> bytes:
    return render(await report, "csv")


def _summary(answer: Any) -> str:
    if isinstance(answer, bytes):
        lines = answer.decode().splitlines()
        return f"{len(lines) - 1} rows: {lines[1][:70] if len(lines) > 1 else ''}"
    if hasattr(answer, "rows"):
        return f"{len(answer.rows)} rows: {answer.rows[:1]}"[:100]
    return f"{len(answer)} rows: {answer[:2]}"[:100]


async def bench(args: argparse.Namespace, config: Path) -> None:
    async with await Herald.open(config) as herald:
        mailing_id = await build(herald.store, args)
        await measure(herald, config, mailing_id, args.repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="a store URL (default: SQLite in a temp dir)")
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000, help="messages per record call")
    parser.add_argument("--delivered", type=float, default=0.9, help="share delivered")
    parser.add_argument("--undelivered", type=float, default=0.05, help="share undelivered")
    parser.add_argument("--clicks", type=float, default=0.02, help="share who click")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-reports-"))
    config = write_config(tmp, driver="null", database=args.database or "herald.db")
    print(f"store: {args.database or tmp / 'herald.db'}", file=sys.stderr)
    try:
        anyio.run(bench, args, config, backend=args.backend)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
