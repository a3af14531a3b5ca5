"""Recipients per second with 1, 2 and 4 processes sharing one run, on PostgreSQL.

    python bench/cluster.py --database postgresql://postgres@127.0.0.1/bench --profiles 1000000
    python bench/cluster.py --database ... --profiles 200000 --workers 1 2 4 --driver simulator

The audience is generated once into the database (profile database ``customers``). For
each N, ``herald send`` and N - 1 ``herald worker`` processes share one broadcast run
(``[cluster]``); the send prints the log when every chunk is done. Prints, per N, the
recipients per second (by the send's wall time), the ratio to N = 1, and the CPU per
message of all N processes together, against the single-process engine on a SQLite copy
of the same audience (``--sqlite-baseline``, on by default). ``--driver null`` measures
Herald alone; ``--driver simulator`` sends over HTTP to ``herald simulate``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from engine.demo import generate
from engine.errors import NotFound
from engine.store.models import AudienceSource
from engine.store.open import open_store

TEMPLATE = "Hi {lead._fname}! New arrivals in our {lead._city} store this week."


def config(database: str, driver: str, sim_url: str | None, cluster: bool) -> str:
    gateway = ('driver = "null"' if driver == "null" else
               f'driver = "http"\nurl = "{sim_url}"\nbatch_size = 500\nmax_connections = 8')
    text = f"""\
[engine]
database = "{database}"
default_region = "RU"
chunk_size = 1000
batch_size = 500
[gateways.gw]
{gateway}
[senders.s]
gateway = "gw"
caller_id = "BENCH"
concurrency = 4
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s", percent = 100 }}] }}]
[resources.news]
virtual_sender = "v"
"""
    if cluster:
        text += "[cluster]\nlease_ttl = 10\nchunk_profiles = 20000\n"
    return text


async def build(url: str, profiles: int) -> None:
    store = await open_store(url)
    try:
        try:
            have = await store.count_audience(
                AudienceSource("list", await store.database_id("customers")))
        except NotFound:
            have = 0
        if have != profiles:
            if have:
                raise SystemExit(f"{url} holds {have:,} profiles, not {profiles:,}:"
                                 " give the bench an empty database")
            t0 = time.perf_counter()
            await generate(store, profiles=profiles, database="customers", messy=False)
            print(f"built {profiles:,} profiles in {time.perf_counter() - t0:.1f}s",
                  file=sys.stderr)
    finally:
        await store.aclose()


def herald(ws: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def reap(proc: subprocess.Popen[str]) -> float:
    """Wait for ``proc``; its CPU seconds (user + system)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def one(ws: Path, n: int) -> tuple[int, float, float]:
    """(recipients, wall s, CPU s of all n processes) of a send shared by n processes."""
    workers = [herald(ws, "worker", "--concurrency", "2") for _ in range(n - 1)]
    time.sleep(1.0)  # let them connect
    t0 = time.perf_counter()
    send = herald(ws, "send", "--resource", "news", "--database", "customers",
                  "--template", str(ws / "t.txt"), "--json")
    out = send.stdout.read() if send.stdout else ""
    cpu = reap(send)
    wall = time.perf_counter() - t0
    if send.returncode != 0:
        raise SystemExit(f"herald send exited {send.returncode}: "
                         f"{send.stderr.read() if send.stderr else ''}")
    for w in workers:
        w.send_signal(signal.SIGTERM)
    cpu += sum(reap(w) for w in workers)
    log: dict[str, Any] = json.loads(out)
    return int(log["recipients"]), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, metavar="postgresql://...")
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--driver", choices=["null", "simulator"], default="null")
    parser.add_argument("--no-sqlite-baseline", action="store_true")
    args = parser.parse_args()

    anyio.run(build, args.database, args.profiles)
    ws = Path(tempfile.mkdtemp(prefix="herald-bench-cluster-"))
    (ws / "t.txt").write_text(TEMPLATE, encoding="utf-8")
    sim = None
    sim_url = None
    if args.driver == "simulator":
        port = 18000 + os.getpid() % 1000
        sim = subprocess.Popen([sys.executable, "-m", "engine.cli", "simulate", "--port",
                                str(port), "--latency", "0.005"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sim_url = f"http://127.0.0.1:{port}/send"
        time.sleep(1.5)
    try:
        (ws / "herald.toml").write_text(config(args.database, args.driver, sim_url, True),
                                        encoding="utf-8")
        results: dict[int, tuple[int, float, float]] = {}
        for n in args.workers:
            results[n] = one(ws, n)
            r, wall, cpu = results[n]
            base = results[args.workers[0]]
            print(f"processes={n}  recipients={r:,}  wall={wall:.2f}s"
                  f"  recipients_per_s={r / wall:,.0f}"
                  f"  ratio_to_{args.workers[0]}={(r / wall) / (base[0] / base[1]):.2f}"
                  f"  cpu_us_per_msg={cpu / r * 1e6:.1f}", flush=True)
        if not args.no_sqlite_baseline:
            sq = ws / "sqlite"
            sq.mkdir()
            (sq / "t.txt").write_text(TEMPLATE, encoding="utf-8")
            (sq / "herald.toml").write_text(
                config(str(sq / "herald.db"), args.driver, sim_url, False), encoding="utf-8")
            anyio.run(build, f"sqlite:///{sq / 'herald.db'}", args.profiles)
            t0 = time.perf_counter()
            send = herald(sq, "send", "--resource", "news", "--database", "customers",
                          "--template", str(sq / "t.txt"), "--json")
            out = send.stdout.read() if send.stdout else ""
            cpu = reap(send)
            wall = time.perf_counter() - t0
            r = int(json.loads(out)["recipients"])
            print(f"sqlite, one process  recipients={r:,}  wall={wall:.2f}s"
                  f"  recipients_per_s={r / wall:,.0f}  cpu_us_per_msg={cpu / r * 1e6:.1f}")
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait()


if __name__ == "__main__":
    main()
