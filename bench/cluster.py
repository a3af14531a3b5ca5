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

Every round meets the same database: the sending-policy history is emptied and the tables
vacuumed and checkpointed before it (each run's upserts of today's history otherwise
leave the next round some 800,000 dead rows to wade through, and the later rounds, the
larger N, pay for the earlier ones). ``--rounds K`` runs the list of N K times,
alternating, and keeps each N's best. Where the server runs on this machine and its
processes can be read (``/proc``, as root), each line also has the PostgreSQL server's CPU
per message (``server_us_per_msg``) and the share of both cores the run kept busy.
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


async def settle(url: str) -> None:
    """The same database for every round: no policy history, no dead rows, no checkpoint
    pending."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        await c.execute("TRUNCATE history_profile, history_contact")
        await c.execute("VACUUM ANALYZE")
        await c.execute("CHECKPOINT")


def server_cpu() -> float | None:
    """CPU seconds of the PostgreSQL server's processes so far (the postmaster's children
    that have exited, and those alive), or None where they cannot be read."""
    try:
        import pwd

        uid = pwd.getpwnam("postgres").pw_uid
    except KeyError:
        return None
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total or None


def one(ws: Path, n: int, url: str) -> tuple[int, float, float, float | None]:
    """(recipients, wall s, CPU s of all n processes, the server's CPU s or None) of a
    send shared by n processes."""
    anyio.run(settle, url)
    workers = [herald(ws, "worker", "--concurrency", "2") for _ in range(n - 1)]
    time.sleep(1.0)  # let them connect
    t0, s0 = time.perf_counter(), server_cpu()
    send = herald(ws, "send", "--resource", "news", "--database", "customers",
                  "--template", str(ws / "t.txt"), "--json")
    out = send.stdout.read() if send.stdout else ""
    cpu = reap(send)
    wall, s1 = time.perf_counter() - t0, server_cpu()
    if send.returncode != 0:
        raise SystemExit(f"herald send exited {send.returncode}: "
                         f"{send.stderr.read() if send.stderr else ''}")
    for w in workers:
        w.send_signal(signal.SIGTERM)
    cpu += sum(reap(w) for w in workers)
    log: dict[str, Any] = json.loads(out)
    server = None if s0 is None or s1 is None else s1 - s0
    return int(log["recipients"]), wall, cpu, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, metavar="postgresql://...")
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--driver", choices=["null", "simulator"], default="null")
    parser.add_argument("--no-sqlite-baseline", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, metavar="K",
                        help="run the list of N K times, alternating; keep each N's best")
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
        results: dict[int, tuple[int, float, float, float | None]] = {}
        for k in range(args.rounds):
            for n in args.workers:
                got = one(ws, n, args.database)
                if n not in results or got[1] < results[n][1]:
                    results[n] = got
                if args.rounds > 1:
                    print(f"round {k + 1}: processes={n}  recipients_per_s="
                          f"{got[0] / got[1]:,.0f}", file=sys.stderr, flush=True)
        base = results[args.workers[0]]
        for n in args.workers:
            r, wall, cpu, server = results[n]
            line = (f"processes={n}  recipients={r:,}  wall={wall:.2f}s"
                    f"  recipients_per_s={r / wall:,.0f}"
                    f"  ratio_to_{args.workers[0]}={(r / wall) / (base[0] / base[1]):.2f}"
                    f"  cpu_us_per_msg={cpu / r * 1e6:.1f}")
            if server is not None:
                busy = (cpu + server) / wall / (os.cpu_count() or 1)
                line += f"  server_us_per_msg={server / r * 1e6:.1f}  cores_busy={busy:.0%}"
            print(line, flush=True)
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
