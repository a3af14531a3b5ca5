"""Throughput and memory of ``herald import profiles`` on a big CSV.

    python bench/import_csv.py [--rows 1000000] [--compare 100000] [--chunk 1000]
                               [--matching phone|email|field:custom]

Writes CSV files (phone,email,_fname,_city,custom) of ``--compare`` and ``--rows`` rows to a
temporary directory and imports each into a fresh SQLite store in its own process, twice:
first every row is new (added), then the same file again (every row updates its profile).
Prints rows/s for both and the process's peak RSS (``getrusage``) after each, next to the
RSS the process had before importing. Bounded memory: the peak barely moves from the small
file to the big one.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CITIES = ["Moscow", "Kazan", "Sochi", "Omsk", "Perm", "Tver", "Samara", "Ufa"]
NAMES = ["Anna", "Boris", "Chloé", "Dmitry", "Elena", "Fyodor", "Galina", "Ivan"]


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(rows)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("phone,email,_fname,_city,custom\n")
        for i in range(rows):
            out.write(
                f"+7916{i:07d},user{i}@example.com,{rng.choice(NAMES)},"
                f"{rng.choice(CITIES)},c{i}\n"
            )


def peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM``, as ``pipeline.py`` reads it (``ru_maxrss``
    would report the parent's peak whenever it was the larger)."""
    from pipeline import peak_rss_mb

    return peak_rss_mb()


def child(csv_path: str, db_path: str, chunk: int, matching: str) -> None:
    import anyio

    from engine.importing import import_file
    from engine.store.sqlite import SQLiteStore

    store = SQLiteStore.open(db_path)
    out: dict[str, float] = {"baseline_mib": peak_rss_mib()}

    async def once() -> tuple[float, int, int]:
        started = time.perf_counter()
        report = await import_file(
            store, csv_path, database="main", resource="news", matching=matching,
            chunk=chunk,
        )
        assert report.rejected == 0, report.errors[:5]
        return time.perf_counter() - started, report.added, report.updated

    out["add_s"], out["added"], _ = anyio.run(once)
    out["add_peak_mib"] = peak_rss_mib()
    out["update_s"], _, out["updated"] = anyio.run(once)
    out["update_peak_mib"] = peak_rss_mib()
    print(json.dumps(out))


def measure(directory: Path, rows: int, chunk: int, matching: str) -> dict[str, float]:
    csv_path = directory / f"profiles-{rows}.csv"
    write_csv(csv_path, rows)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(csv_path), str(directory / f"{rows}.db"),
         "--chunk", str(chunk), "--matching", matching],
        capture_output=True, text=True, check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout)
    result["rows"] = rows
    result["mib"] = csv_path.stat().st_size / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--compare", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--matching", default="phone")
    parser.add_argument("--child", nargs=2, metavar=("CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.chunk, args.matching)
        return
    print(f"matching {args.matching}, chunk {args.chunk}, SQLite store, one process per file")
    print(f"{'rows':>9} {'CSV MiB':>8} {'add rows/s':>11} {'update rows/s':>14}"
          f" {'RSS before':>11} {'peak add':>9} {'peak update':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (args.compare, args.rows):
            r = measure(Path(tmp), rows, args.chunk, args.matching)
            print(
                f"{rows:>9} {r['mib']:>8.1f} {rows / r['add_s']:>11,.0f}"
                f" {rows / r['update_s']:>14,.0f} {r['baseline_mib']:>8.1f} MiB"
                f" {r['add_peak_mib']:>5.1f} MiB {r['update_peak_mib']:>8.1f} MiB"
            )


if __name__ == "__main__":
    main()
