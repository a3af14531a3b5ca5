"""How many GCRA calls per second one sender's Redis limit sustains.

One process, one ``RedisSenderLimits`` and one sender at a rate far above what Redis can
serve, so every call is a grant: the grants per second are the script calls per second
one worker can make for one sender (one waiter at the head, one call at a time). With
``--workers N``, N processes do it at once on the same sender (the cluster's ceiling for
one sender's pace, whatever its ``rate``).

    python bench/redis_limit.py [--redis URL] [--seconds 2] [--backend asyncio|trio]
                                [--workers N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import secrets
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cluster.limits import RedisSenderLimits
from engine.config import SenderConfig


async def run(url: str, prefix: str, seconds: float) -> tuple[int, float]:
    config = SenderConfig(gateway="gw", caller_id="Bench", rate=10_000_000, burst=1)
    async with RedisSenderLimits(url, prefix=prefix) as limits:
        limit = limits.get("bench", config)
        await limit.acquire(1)  # connect and load the script
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            await limit.acquire(1)
            n += 1
        return n, time.perf_counter() - t0


def one(url: str, prefix: str, seconds: float, backend: str) -> float:
    n, elapsed = anyio.run(run, url, prefix, seconds, backend=backend)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    prefix = f"bench-{secrets.token_hex(4)}"
    if args.workers == 1:
        rates = [one(args.redis, prefix, args.seconds, args.backend)]
    else:
        with multiprocessing.Pool(args.workers) as pool:
            rates = pool.starmap(
                one, [(args.redis, prefix, args.seconds, args.backend)] * args.workers)
    print(f"{args.backend}, {args.workers} worker(s) on one sender: "
          f"{sum(rates):,.0f} calls/s ({', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
