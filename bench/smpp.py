"""Submits per second of the ``smpp`` driver to the SMPP simulator over loopback, and the
client CPU each costs.

The simulator (``herald simulate --smpp``, ``--no-record``) runs in a child process, so the
CPU measured here, ``time.process_time()`` of this process, is the driver's alone. The
driver is driven as the engine drives it: ``--calls-in-flight`` concurrent ``send_batch``
calls (the engine's default sender ``concurrency``, 4), each of ``--batch`` messages (at
most the driver's ``max_batch``, sessions x window), for ``--seconds``, after a warm-up
call that binds the sessions. Measured twice per client backend (asyncio+uvloop, trio):

- 1 session, ``window = 50`` (goal: 5,000 submits/s);
- 4 sessions, ``window = 50`` each (goal: 10,000 submits/s).

    python bench/smpp.py                         # both, on uvloop and trio, ~20 s
    python bench/smpp.py --seconds 2 --backends uvloop
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

if not __package__:  # run as a script: make the repository root and the plugins importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.append(str(Path(__file__).resolve().parent.parent / "plugins"))

from engine.drivers import Driver, OutboundMessage
from engine.plugins import load_plugins

SCENARIOS = ((1, 50, 5_000), (4, 50, 10_000))  # sessions, window, goal submits/s
BACKENDS = ("uvloop", "trio")
TEXT = "Your parcel is on its way: track it at https://ex.am/ple (reply STOP to opt out)"


def _start_simulator(backend: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "engine.cli", "simulate", "--smpp", "--port", "0",
           "--no-record", "--backend", "asyncio" if backend == "uvloop" else backend]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if not line.startswith("smpp://127.0.0.1:"):
        child.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return child, int(line.rsplit(":", 1)[1])


def _stop_simulator(child: subprocess.Popen[str]) -> dict[str, Any]:
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=20)
    lines = out.strip().splitlines()
    return msgspec.json.decode(lines[-1]) if lines else {}


def _driver(port: int, sessions: int, window: int) -> Driver:
    cls = load_plugins().drivers["smpp"]
    options = {"host": "127.0.0.1", "port": port, "system_id": "herald",
               "password": "secret", "sessions": sessions, "window": window}
    return cls(msgspec.convert(options, cls.Config), gateway="bench")


async def _measure(port: int, sessions: int, window: int,
                   args: argparse.Namespace) -> tuple[float, float, int]:
    """(submits/s, client CPU µs per submit, submits) of one scenario."""
    driver = _driver(port, sessions, window)
    batch = min(args.batch, driver.capabilities.max_batch or args.batch)
    serial = iter(range(10**12))
    done = 0

    def messages() -> list[OutboundMessage]:
        return [OutboundMessage(f"m{next(serial)}", "+447911123456", "HERALD", TEXT, 1)
                for _ in range(batch)]

    try:
        await driver.send_batch(messages())  # warm up: bind every session
        prepared = [messages() for _ in range(args.calls_in_flight * 8)]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        deadline = wall0 + args.seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                chunk = prepared.pop() if prepared else messages()
                results = await driver.send_batch(chunk)
                bad = [r for r in results if r.status != "accepted"]
                if bad:
                    raise AssertionError(f"not accepted: {bad[:3]}")
                done += len(results)

        async with anyio.create_task_group() as tg:
            for _ in range(args.calls_in_flight):
                tg.start_soon(worker)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await driver.aclose()
    return done / wall, cpu / max(done, 1) * 1e6, done


def _run(backend: str, main: Callable[[], Any]) -> None:
    if backend == "uvloop":
        anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        anyio.run(main, backend=backend)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--backends", nargs="+", choices=["uvloop", "asyncio", "trio"],
                        default=list(BACKENDS))
    parser.add_argument("--batch", type=int, default=500, help="messages per send_batch")
    parser.add_argument("--calls-in-flight", type=int, default=4,
                        help="concurrent send_batch calls (the engine's concurrency)")
    parser.add_argument("--server-backend", default="uvloop", choices=["uvloop", "trio"])
    args = parser.parse_args(argv)
    child, port = _start_simulator(args.server_backend)
    submitted = 0
    try:
        print(f"simulator at 127.0.0.1:{port} ({args.server_backend}, own process);"
              " client CPU of this process only\n")
        header = (f"{'sessions':>8}{'window':>8}  {'backend':<8}{'submits/s':>11}"
                  f"{'µs CPU/submit':>15}{'goal':>9}")
        print(header)
        print("-" * len(header))
        for backend in args.backends:
            for sessions, window, goal in SCENARIOS:
                box: list[tuple[float, float, int]] = []

                async def one(s: int = sessions, w: int = window,
                              box: list[Any] = box) -> None:
                    box.append(await _measure(port, s, w, args))

                _run(backend, one)
                rate, cpu, n = box[0]
                submitted += n
                mark = "ok" if rate >= goal else "MISSED"
                print(f"{sessions:>8}{window:>8}  {backend:<8}{rate:>11,.0f}{cpu:>15.1f}"
                      f"{goal:>7,} {mark}", flush=True)
    finally:
        stats = _stop_simulator(child)
    if stats:
        print(f"\nsimulator: {stats.get('accepted', 0):,} submits accepted,"
              f" {stats.get('binds', 0)} binds, max in flight {stats.get('max_in_flight', 0)}"
              f" (client counted {submitted:,} after warm-ups)")


if __name__ == "__main__":
    main()
