"""``herald worker [--concurrency N] [--metrics-port P]``: lease chunks of cluster runs from
the store and send them, until SIGTERM or Ctrl-C (which give the chunks held back).

Each worker also runs the scheduler (``engine.scheduling``): a due mailing's launch is
taken by exactly one process of the cluster (``set_launch``), which cuts its runs into
chunks for every worker (``queue_launch``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from engine.backends import run as run_backend
from engine.cli.workspace import open_herald

__all__ = ["add_worker_parser", "exposition", "serve_metrics"]

#: Per sender (label ``sender``): metric, kind, help, and the value from a ``SenderGauge``.
_SENDER_METRICS: tuple[tuple[str, str, str, Callable[[Any], float]], ...] = (
    ("herald_sender_limit_rate", "gauge",
     "The sender's pace in segments per second, cluster-wide (0: unlimited).",
     lambda g: g.gcra.rate),
    ("herald_sender_limit_burst", "gauge", "The sender's burst in segments.",
     lambda g: g.gcra.burst),
    ("herald_sender_limit_tokens", "gauge",
     "Segments the sender could send right now, as this worker last saw its GCRA.",
     lambda g: round(g.gcra.tokens, 3)),
    ("herald_sender_limit_unreachable", "gauge",
     "1 while Redis is unreachable for the sender: this worker sends nothing through it.",
     lambda g: int(g.unreachable)),
    ("herald_sender_in_flight", "gauge", "Messages of this worker at the sender's gateway.",
     lambda g: g.in_flight),
    ("herald_sender_sent_total", "counter", "Messages the sender's gateway accepted.",
     lambda g: g.sent),
    ("herald_sender_failed_total", "counter", "Messages that failed at the sender.",
     lambda g: g.failed),
    ("herald_sender_throttled_total", "counter",
     "Times the sender's gateway asked this worker to slow down.", lambda g: g.throttled),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(stats: Any) -> str:
    """A worker's ``WorkerStats`` in Prometheus' text format: the worker's chunks and
    messages, and each sender's limit (GCRA, window, Redis reachable) and counts."""
    out: list[str] = []
    label = f'worker="{_label(stats.worker)}"'
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
    senders = sorted(stats.senders.items())
    for metric, kind, help_text, value_of in _SENDER_METRICS:
        if not senders:
            break
        out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        out += [f'{metric}{{{label},sender="{_label(name)}"}} {value_of(gauge)}'
                for name, gauge in senders]
    return "\n".join(out) + "\n"


async def serve_metrics(
    port: int, worker: Any, *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """``GET /metrics`` (any path, in fact) on ``port`` (0: any free one; the port is
    what ``task_status.started`` gets): one small answer per connection."""

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
    task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.serve(handle)


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.cluster.worker import Worker
    from engine.listening import listen_gateways
    from engine.mailings import Launch
    from engine.scheduling import Scheduler, queue_launch
    from engine.store.models import Mailing

    # warnings (Redis unreachable and back, leases lost) to stderr, unless the host has
    # configured logging already
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def go() -> int:
        herald = await open_herald(args)
        async with herald:
            worker = Worker(herald, concurrency=args.concurrency)
            print(f"herald worker {worker.name}: {args.concurrency} slot(s)", file=sys.stderr,
                  flush=True)

            async def start(mailing: Mailing, launch: Launch) -> None:
                await queue_launch(herald, mailing, launch)

            async with anyio.create_task_group() as tg:
                if args.metrics_port is not None:
                    tg.start_soon(serve_metrics, args.metrics_port, worker)
                tg.start_soon(listen_gateways, herald)  # SMPP receipts between chunks
                if herald.config.cluster is not None:  # Worker refuses to run without
                    tg.start_soon(Scheduler(herald, start).run)
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
