"""``herald worker [--concurrency N] [--metrics-port P]``: lease chunks of cluster runs from
the store and send them, until SIGTERM or Ctrl-C (which give the chunks held back)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import anyio.abc

from engine.backends import run as run_backend
from engine.cli.workspace import open_herald

__all__ = ["add_worker_parser", "exposition"]


def exposition(stats: Any) -> str:
    """A worker's ``WorkerStats`` in Prometheus' text format."""
    out: list[str] = []
    label = f'worker="{stats.worker}"'
    for metric, kind, value, help_text in (
        ("herald_worker_chunks_held", "gauge", stats.chunks_held, "Chunks leased now."),
        ("herald_worker_chunks_done_total", "counter", stats.chunks_done,
         "Chunks this worker finished."),
        ("herald_worker_chunks_lost_total", "counter", stats.chunks_lost,
         "Chunks whose lease was taken over while this worker held them."),
        ("herald_worker_sent_total", "counter", stats.sent, "Messages gateways accepted."),
        ("herald_worker_failed_total", "counter", stats.failed, "Messages that failed."),
        ("herald_worker_unknown_total", "counter", stats.unknown,
         "Messages whose fate is unknown."),
    ):
        out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}",
                f"{metric}{{{label}}} {value}"]
    return "\n".join(out) + "\n"


async def _serve_metrics(port: int, worker: Any) -> None:
    """``GET /metrics`` (any path, in fact) on ``port``: one small answer per connection."""

    async def handle(client: anyio.abc.SocketStream) -> None:
        async with client:
            with anyio.move_on_after(5):
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 8192:
                    chunk = await client.receive(4096)
                    if not chunk:
                        return
                    data += chunk
                body = exposition(worker.statistics()).encode()
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4;"
                        f" charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                        f"Connection: close\r\n\r\n").encode()
                await client.send(head + body)

    listener = await anyio.create_tcp_listener(local_port=port)
    await listener.serve(handle)


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.cluster.worker import Worker

    async def go() -> int:
        herald = await open_herald(args)
        async with herald:
            worker = Worker(herald, concurrency=args.concurrency)
            print(f"herald worker {worker.name}: {args.concurrency} slot(s)", file=sys.stderr,
                  flush=True)
            async with anyio.create_task_group() as tg:
                if args.metrics_port is not None:
                    tg.start_soon(_serve_metrics, args.metrics_port, worker)
                await worker.run(handle_signals=True)
                tg.cancel_scope.cancel()
        return 0

    return run_backend(go)


def _slots(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def add_worker_parser(sub: Any) -> None:
    """Register ``worker`` on the ``herald`` sub-command parsers."""
    p = sub.add_parser("worker", help="work on the cluster's runs (needs [cluster])")
    p.add_argument("--concurrency", type=_slots, default=1, metavar="N",
                   help="chunks worked on at once (default 1)")
    p.add_argument("--metrics-port", type=int, metavar="P",
                   help="serve this worker's Prometheus /metrics on port P")
    p.set_defaults(func=cmd_worker)
