"""Cost and accuracy of the rate-limit core.

    python bench/ratelimit.py [--rate 1000] [--burst 50] [--seconds 60]

Prints µs per ``Gcra.reserve`` / ``try_acquire`` and ``InFlightWindow`` take+release, then
drives a simulated sender (a fake clock, batches of 1-10 segments, always busy) for a minute
and prints the achieved rate and the busiest 1-second window against ``rate + burst``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.ratelimit import Gcra, InFlightWindow


def per_call_us(rate: float, burst: int, calls: int) -> tuple[float, float, float]:
    gcra = Gcra(rate, burst)
    reserve = gcra.reserve
    now = 0.0
    started = time.perf_counter()
    for _ in range(calls):
        now += reserve(1, now)
    reserve_us = (time.perf_counter() - started) / calls * 1e6

    gcra = Gcra(rate, burst)
    try_acquire = gcra.try_acquire
    step = 0.5 / rate  # half the calls succeed
    now = 0.0
    started = time.perf_counter()
    for _ in range(calls):
        try_acquire(1, now)
        now += step
    try_us = (time.perf_counter() - started) / calls * 1e6

    window = InFlightWindow(100)
    take, release = window.take, window.release
    started = time.perf_counter()
    for _ in range(calls):
        take(1)
        release(1)
    window_us = (time.perf_counter() - started) / calls * 1e6
    return reserve_us, try_us, window_us


def accuracy(rate: float, burst: int, seconds: float) -> tuple[float, float, int]:
    """(rate over the whole run, rate after the first second, busiest 1 s window)."""
    gcra = Gcra(rate, burst)
    rng = random.Random(1)
    now = 0.0
    sent: list[tuple[float, int]] = []
    while True:
        cost = rng.randint(1, min(10, max(burst, 1)))
        now += gcra.reserve(cost, now)
        if now >= seconds:
            break
        sent.append((now, cost))
    total = sum(c for _, c in sent)
    steady = sum(c for t, c in sent if t >= 1.0) / (seconds - 1.0)
    busiest = units = 0
    j = 0
    for i, (start, _) in enumerate(sent):
        while j < len(sent) and sent[j][0] < start + 1.0 - 1e-9:
            units += sent[j][1]
            j += 1
        busiest = max(busiest, units)
        units -= sent[i][1]
    return total / seconds, steady, busiest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()

    reserve_us, try_us, window_us = per_call_us(args.rate, args.burst, args.calls)
    print(f"Gcra.reserve:        {reserve_us:.3f} µs per call (loop included)")
    print(f"Gcra.try_acquire:    {try_us:.3f} µs per call")
    print(f"InFlightWindow take+release: {window_us:.3f} µs")

    whole, steady, busiest = accuracy(args.rate, args.burst, args.seconds)
    print(
        f"rate {args.rate:g}/s burst {args.burst} over {args.seconds:g} simulated s: "
        f"{whole:.2f}/s overall ({(whole / args.rate - 1) * 100:+.3f}%, the initial burst "
        f"included), {steady:.2f}/s after the first second ({(steady / args.rate - 1) * 100:+.3f}%)"
    )
    print(f"busiest 1 s window: {busiest} units (bound rate + burst = {args.rate + args.burst:g})")


if __name__ == "__main__":
    main()
