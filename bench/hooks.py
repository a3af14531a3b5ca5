"""Events per second an action hook delivers over HTTP, from a SQLite store, on one core.

    python bench/hooks.py                       # 200,000 events, batches of 500
    python bench/hooks.py --events 50000 --batch 500 --secret
    python bench/hooks.py --backend trio

The store is filled through its normal write path: a broadcast's ``store.record`` (one
``send_sms`` per recipient) then ``apply_receipts`` (a ``deliv_sms`` each), so each event
joins its run, mailing, resource and database as a real one does. The hook was seen before
the first event, so its cursor starts at the beginning of the record. Then one
``Deliverer`` (``engine.events.outbox``) with the ``http`` transport (the http driver's
h11 pool) sends it all to a sink in another process on loopback (a raw socket server
answering ``200 OK`` to each request, counting the ``event_id``s it got), until its
cursor is at the end of the record.

Printed: events/s (wall clock) and this process's CPU microseconds per event (the sink's
CPU is not counted), and two parts of it measured alone beforehand: reading the record
(``hook_events``) and building the messages (the rest is HTTP and the cursor's writes).
The issue's goal: at least 50,000 events/s in batches of 500.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from engine.config import HookConfig
from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.events.messages import HookFilter, MessageEncoder
from engine.events.outbox import Deliverer
from engine.events.transports.http import HttpTransport
from engine.runner import Herald
from engine.store.base import ORIGIN, Store
from engine.store.models import AudienceSource
from engine.testing import write_config

CHUNK = 5000


def sink(listener: socket.socket, counts: Any) -> None:
    """Answer each request on ``listener`` with 200 OK; count requests and event ids."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nOK"
    while True:
        conn, _ = listener.accept()
        buf = b""
        with conn:
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    buf += data
                    continue
                head = buf[:head_end].lower() + b"\r\n"
                start = head.index(b"content-length:") + 15
                length = int(head[start:head.index(b"\r\n", start)])
                while len(buf) < head_end + 4 + length:
                    data = conn.recv(1 << 20)
                    if not data:
                        return
                    buf += data
                body = buf[head_end + 4:head_end + 4 + length]
                buf = buf[head_end + 4 + length:]
                with counts.get_lock():
                    counts[0] += 1
                    counts[1] += body.count(b'"event_id"')
                conn.sendall(answer)


async def build(store: Store, n: int) -> None:
    """``n`` events (half sent, half delivered) of one broadcast."""
    recipients = n // 2
    database_id = await store.database_id("bench", create=True)
    _, run = await store.create_run(
        name="bench hooks", resource="news", source=AudienceSource("list", database_id),
        template="Hi", limit=None)
    for batch, first in enumerate(range(1, recipients + 1, CHUNK), 1):
        seqs = range(first, min(first + CHUNK, recipients + 1))
        messages = [Message(seq, f"{run.uid}-{seq}", seq, f"+7916{seq:07d}", "s1", "Hi", 1)
                    for seq in seqs]
        outcomes = [Outcome(seq, "sent", provider_id=f"p{seq}") for seq in seqs]
        await store.record(run.id, batch, "s1", messages, outcomes)
        receipts = [Receipt(f"p{seq}", "delivered") for seq in seqs]
        await store.apply_receipts("gw", receipts, senders=["s1"])


async def bench(args: argparse.Namespace, config_path: Path, url: str, counts: Any) -> None:
    hook = HookConfig(transport="http", url=url, events=["send_sms", "deliv_sms"],
                      batch_size=args.batch, flush_interval=0.0,
                      secret="bench-secret-0123456789" if args.secret else None)
    async with await Herald.open(config_path) as herald:
        store = herald.store
        assert await store.claim_hook("bench", "bench", 60.0) is not None  # at the origin
        await store.release_hook("bench", "bench")
        started = time.perf_counter()
        await build(store, args.events)
        total = len(await store.hook_events(ORIGIN, 10 * args.events))
        print(f"store: {total:,} events built in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)

        # the parts, alone
        c0 = time.process_time()
        after, pages = ORIGIN, []
        while page := await store.hook_events(after, args.batch):
            pages.append(page)
            after = page[-1].position
        read_cpu = time.process_time() - c0
        select, encoder = HookFilter(hook).select, MessageEncoder(1)
        c0 = time.process_time()
        for page in pages:
            encoder.encode_all(select(page))
        encode_cpu = time.process_time() - c0
        del pages

        transport = HttpTransport("bench", hook)
        deliverer = Deliverer("bench", hook, store, transport, account_id=1, owner="bench")
        t0, c0 = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(deliverer.run)
            while True:  # the deliverer polls the record: look as often
                if deliverer.statistics().delivered >= total:
                    break
                await anyio.sleep(0.005)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            tg.cancel_scope.cancel()
        stats = deliverer.statistics()
    print(f"delivered {stats.delivered:,} events in {stats.batches:,} batches of"
          f" {args.batch} in {wall:.2f} s; the sink got {counts[1]:,} events in"
          f" {counts[0]:,} requests")
    print(f"{stats.delivered / wall:,.0f} events/s, {cpu / total * 1e6:.2f} CPU us/event"
          f" (measured alone: reading the record {read_cpu / total * 1e6:.2f}, building"
          f" the messages {encode_cpu / total * 1e6:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--secret", action="store_true", help="sign each request")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", 0))
    counts = multiprocessing.Array("q", 2)
    server = multiprocessing.Process(target=sink, args=(listener, counts), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-hooks-"))
    config = write_config(tmp, driver="null")
    try:
        options = {"use_uvloop": True} if args.backend == "asyncio" else {}
        try:
            import uvloop  # noqa: F401
        except ImportError:
            options = {}
        anyio.run(bench, args, config, url, counts, backend=args.backend,
                  backend_options=options)
    finally:
        server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
