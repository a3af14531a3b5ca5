"""The herald-json gateway simulator from the command line, and a benchmark of it.

The simulator lives in ``engine.simulator`` (its docstring describes the wire format); its
names are re-exported here for code that imports them from ``bench.gateway_sim``. Command line:
``python bench/gateway_sim.py --port 8025 --latency 0.01 --max-throughput 2000`` serves like
``herald simulate`` (the URL is the first line on stdout; statistics go to stderr on stop);
``--bench`` measures the simulator itself (server in a child process, raw load from here).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.cli.simulate import add_option_arguments, options_from_args, serve
from engine.errors import HeraldError
from engine.simulator import GatewaySimulator, Receipt, ReceiptSink, SimOptions, SimStats
from engine.simulator.http import DEFAULT_HOST

__all__ = ["GatewaySimulator", "Receipt", "ReceiptSink", "SimOptions", "SimStats"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8025, help="0 picks a free port")
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="uvloop")
    parser.add_argument("--bench", action="store_true", help="measure the simulator and exit")
    parser.add_argument("--bench-seconds", type=float, default=5.0)
    parser.add_argument("--bench-batch", type=int, default=1, help="messages per request")
    parser.add_argument("--bench-connections", type=int, default=8)
    # Kept for older callers: the URL is now always the first line on stdout.
    parser.add_argument("--announce", action="store_true", help=argparse.SUPPRESS)
    add_option_arguments(parser)
    return parser


def _option_flags(options: SimOptions) -> list[str]:
    """Command-line flags that recreate ``options``."""
    flags = []
    for field in msgspec.structs.fields(SimOptions):
        value = getattr(options, field.name)
        if value == field.default:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def _run(main: Callable[[], Awaitable[Any]], backend: str) -> Any:
    """Run on ``backend``; "uvloop" is asyncio on uvloop (plain asyncio without it)."""
    if backend == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            backend = "asyncio"
        else:
            return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(main, backend=backend)


async def _load(port: int, seconds: float, batch: int, connections: int) -> tuple[int, int]:
    messages = [
        {"id": f"m{i}", "to": "+15551234567", "from": "HERALD", "text": "x" * 60, "segments": 1}
        for i in range(batch)
    ]
    body = msgspec.json.encode({"messages": messages})
    request = (
        b"POST /send HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    ) + body
    done = [0, 0]  # requests, failures
    deadline = anyio.current_time() + seconds

    async def one_connection() -> None:
        async with await anyio.connect_tcp(DEFAULT_HOST, port) as stream:
            buffer = bytearray()
            while anyio.current_time() < deadline:
                await stream.send(request)
                while (end := buffer.find(b"\r\n\r\n")) < 0:
                    buffer += await stream.receive(65536)
                head = bytes(buffer[:end])
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buffer) < end + 4 + length:
                    buffer += await stream.receive(65536)
                del buffer[: end + 4 + length]
                done[0 if head.startswith(b"HTTP/1.1 200") else 1] += 1

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(one_connection)
    return done[0], done[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a child process (Linux /proc); 0.0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bench(args: argparse.Namespace, options: SimOptions) -> None:
    cmd = [sys.executable, __file__, *_option_flags(options), "--port", "0"]
    cmd += ["--backend", args.backend]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline().strip().rsplit(":", 1)[1])
            cpu_before = _cpu_seconds(child.pid)
            started = time.perf_counter()
            box: list[tuple[int, int]] = []

            async def main() -> None:
                box.append(
                    await _load(port, args.bench_seconds, args.bench_batch, args.bench_connections)
                )

            _run(main, "uvloop")
            wall = time.perf_counter() - started
            cpu = _cpu_seconds(child.pid) - cpu_before
        finally:
            child.terminate()
    ok, failed = box[0]
    print(
        f"backend={args.backend} batch={args.bench_batch} connections={args.bench_connections}: "
        f"{ok / wall:,.0f} requests/s, {ok * args.bench_batch / wall:,.0f} messages/s "
        f"({failed} non-200) over {wall:.1f} s"
    )
    if cpu:
        print(
            f"simulator CPU: {cpu / wall:.0%} of one core, {cpu / max(ok, 1) * 1e6:,.0f} µs "
            f"per request -> about {ok / cpu:,.0f} requests/s per core"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    if args.bench:
        _bench(args, options)
        return
    try:
        stats = _run(lambda: serve(options, port=args.port), args.backend)
    except HeraldError as err:
        parser.exit(1, f"{parser.prog}: {err}\n")
    print(msgspec.json.encode(stats).decode(), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
