"""Never lose, never duplicate, never exceed: the scenarios of the issue, with figures.

    python bench/guarantees.py                              # all three, asyncio (uvloop)
    python bench/guarantees.py --scenario duplicates --profiles 3000 --backend trio
    python bench/guarantees.py --scenario shared-rate
    python bench/guarantees.py --scenario stop

Every mailing goes in-process (``engine.runner.Herald``, as ``herald send`` does) through
the ``http`` driver (``batch_size = 1``, ``timeout = 3``, not idempotent) to a plain
threaded stdlib HTTP/1.1 server on 127.0.0.1 (``http.server`` + ``ThreadingMixIn``, the
default listen backlog) that accepts everything, counts acceptances per id (it does not
dedupe: an id accepted twice is an SMS sent twice) and timestamps each accepted message.

- ``duplicates``: one broadcast to ``--profiles`` recipients, sender ``rate = 200``,
  ``burst = 10``.
- ``shared-rate``: two broadcasts at once (one task group, one ``Herald``, each on its own
  profile database) on that one sender, ``--shared-profiles`` recipients each.
- ``stop``: ``rate = 100``, ``shutdown_grace = 1``, ``--stop-profiles`` recipients;
  ``pipeline.stop()`` after ``--stop-after`` seconds (what Ctrl-C does), then ``resume``.

Each scenario prints one line of ``key=value`` figures. ``busiest_window``: the most
segments the server accepted in any 1-second window (windows start at an acceptance);
``bound``: ``rate + burst``, what it must not exceed. ``avg_rate``: segments per second
after the first burst (from the ``burst``-th acceptance to the last). ``twice``: ids the
server accepted more than once. States are the run's recipient rows, ``unknown`` and
``failed`` with their reasons (``reason:count``, comma-separated).

Workspaces are made under a temp dir, removed afterwards (``--keep`` keeps them). Each
scenario runs under a deadline (``--deadline`` seconds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any

import anyio

from engine import backends
from engine.mailing_log import MailingLog
from engine.runner import Herald
from engine.store.base import ImportRecord

CONFIG = """\
[engine]
database = "herald.db"
default_region = "RU"
shutdown_grace = {grace}
[gateways.gw]
driver = "http"
url = "{url}"
batch_size = 1
timeout = 3
idempotent = false
[senders.s1]
gateway = "gw"
caller_id = "ACME"
rate = {rate}
burst = {burst}
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1", percent = 100 }}] }}]
[resources.news]
virtual_sender = "v"
"""
TEMPLATE = "Hi! New arrivals in our store this week."  # one GSM-7 segment
RATE, BURST = 200, 10
STOP_RATE, STOP_GRACE = 100, 1


# -- the gateway -----------------------------------------------------------------------------


class _Server(ThreadingMixIn, HTTPServer):
    """The stdlib's threaded server as is: one thread per connection, backlog 5."""

    daemon_threads = True
    gateway: Gateway


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        messages = json.loads(body)["messages"]
        results = [self.server.gateway.accept(m) for m in messages]
        data = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Gateway:
    """A non-idempotent herald-json gateway on 127.0.0.1: accepts everything, every time."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        #: (monotonic time, segments) of each accepted message
        self.timeline: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.gateway = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/send"

    def __enter__(self) -> Gateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def accept(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.accepted[message["id"]] += 1
            self.timeline.append((time.monotonic(), message["segments"]))
            n = len(self.timeline)
        return {"id": message["id"], "status": "accepted", "provider_id": f"gw-{n}",
                "error": None}

    @property
    def twice(self) -> int:
        return sum(1 for n in self.accepted.values() if n > 1)


# -- figures ---------------------------------------------------------------------------------


def busiest_window(timeline: list[tuple[float, int]], width: float = 1.0) -> int:
    """The most segments in any window of ``width`` seconds starting at an event."""
    events = sorted(timeline)
    best = total = j = 0
    for t, n in events:
        total += n
        while events[j][0] <= t - width:
            total -= events[j][1]
            j += 1
        best = max(best, total)
    return best


def average_rate(timeline: list[tuple[float, int]], burst: int) -> float:
    """Segments per second after the first ``burst`` segments, to the last event."""
    events = sorted(timeline)
    done = k = 0
    while k < len(events) and done < burst:
        done += events[k][1]
        k += 1
    if k >= len(events) - 1:
        return 0.0
    span = events[-1][0] - events[k - 1][0]
    return sum(n for _, n in events[k:]) / span if span > 0 else 0.0


def rate_figures(gateway: Gateway, rate: float, burst: int) -> dict[str, object]:
    return {"busiest_window": busiest_window(gateway.timeline), "bound": f"{rate + burst:g}",
            "avg_rate": f"{average_rate(gateway.timeline, burst):.1f}"}


async def states(herald: Herald, run_id: int) -> dict[str, object]:
    """A run's recipient rows: sent, unknown and failed (with reasons), and pending."""
    summary = await herald.store.run_summary(run_id)
    log = await herald.log(run_id)
    out: dict[str, object] = {"sent": sum(summary.get("sent", {}).values())}
    for state in ("unknown", "failed"):
        reasons = summary.get(state, {})
        out[state] = sum(reasons.values())
        if reasons:
            out[f"{state}_reasons"] = ",".join(
                f"{reason or '-'}:{n}" for reason, n in sorted(reasons.items()))
    out["pending"] = log.pending
    return out


def figures(prefix: str = "", **values: object) -> str:
    """``key=value`` pairs, each key prefixed; a dict value is spread into its own pairs."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out.append(figures(f"{prefix}{key}_", **value))
        else:
            out.append(f"{prefix}{key}={value}")
    return " ".join(out)


# -- workspaces ------------------------------------------------------------------------------


async def open_workspace(
    ws: Path, url: str, *, rate: float, burst: int, grace: float,
    audiences: dict[str, int],
) -> Herald:
    """A Herald on a fresh workspace whose profile databases hold ``audiences`` (name ->
    recipients, each a distinct E.164 phone subscribed to ``news``)."""
    path = anyio.Path(ws / "herald.toml")
    await path.parent.mkdir(parents=True)
    await path.write_text(CONFIG.format(url=url, rate=rate, burst=burst, grace=grace),
                          encoding="utf-8")
    herald = await Herald.open(Path(path))
    rid = await herald.store.resource_id("news")
    base = 9_000_000_000
    for name, n in audiences.items():
        db = await herald.store.database_id(name, create=True)
        await herald.store.import_profiles(
            db, [ImportRecord(None, f"+7{base + i}", None, {}) for i in range(n)],
            matching="phone", resource_id=rid,
        )
        base += n
    return herald


# -- the scenarios ---------------------------------------------------------------------------


async def duplicates(ws: Path, args: argparse.Namespace) -> str:
    with Gateway() as gateway:
        herald = await open_workspace(ws, gateway.url, rate=RATE, burst=BURST, grace=10,
                                      audiences={"main": args.profiles})
        async with herald:
            t0 = time.perf_counter()
            log = await herald.send(resource="news", database="main", template=TEMPLATE)
            wall = time.perf_counter() - t0
            recorded = await states(herald, log.run_id)
    return figures(recipients=log.recipients, accepted=gateway.accepted.total(),
                   twice=gateway.twice, **recorded, **rate_figures(gateway, RATE, BURST),
                   wall_s=f"{wall:.1f}")


async def shared_rate(ws: Path, args: argparse.Namespace) -> str:
    n = args.shared_profiles
    with Gateway() as gateway:
        herald = await open_workspace(ws, gateway.url, rate=RATE, burst=BURST, grace=10,
                                      audiences={"a": n, "b": n})
        async with herald:
            logs: dict[str, MailingLog] = {}

            async def one(database: str) -> None:
                logs[database] = await herald.send(resource="news", database=database,
                                                   template=TEMPLATE)

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "a")
                tg.start_soon(one, "b")
            wall = time.perf_counter() - t0
            recorded = {db: await states(herald, log.run_id) for db, log in sorted(logs.items())}
    return figures(recipients=sum(log.recipients for log in logs.values()),
                   accepted=gateway.accepted.total(), twice=gateway.twice, **recorded,
                   **rate_figures(gateway, RATE, BURST), wall_s=f"{wall:.1f}")


async def stop(ws: Path, args: argparse.Namespace) -> str:
    with Gateway() as gateway:
        herald = await open_workspace(ws, gateway.url, rate=STOP_RATE, burst=BURST,
                                      grace=STOP_GRACE, audiences={"main": args.stop_profiles})
        async with herald:

            async def stop_later() -> None:
                await anyio.sleep(args.stop_after)
                assert herald.pipeline is not None, "the run ended before the stop"
                herald.pipeline.stop()  # the default grace, shutdown_grace, as on Ctrl-C

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_later)
                first = await herald.send(resource="news", database="main", template=TEMPLATE)
            stopped_after = time.perf_counter() - t0
            after_stop = {"status": first.status, "recipients": first.recipients,
                          **await states(herald, first.run_id),
                          "accepted": gateway.accepted.total()}
            final = await herald.resume(first.run_id)
            after_resume = {"status": final.status, **await states(herald, final.run_id)}
            wall = time.perf_counter() - t0
    return figures(recipients=final.recipients, stopped_after_s=f"{stopped_after:.1f}",
                   stop=after_stop, resume=after_resume, accepted=gateway.accepted.total(),
                   twice=gateway.twice, wall_s=f"{wall:.1f}")


SCENARIOS: dict[str, Callable[[Path, argparse.Namespace], Awaitable[str]]] = {
    "duplicates": duplicates,
    "shared-rate": shared_rate,
    "stop": stop,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--profiles", type=int, default=3000,
                        help="recipients of the duplicates scenario")
    parser.add_argument("--shared-profiles", type=int, default=1500,
                        help="recipients of each mailing of the shared-rate scenario")
    parser.add_argument("--stop-profiles", type=int, default=2600,
                        help="recipients of the stop scenario")
    parser.add_argument("--stop-after", type=float, default=3.0,
                        help="seconds before the stop scenario's stop")
    parser.add_argument("--deadline", type=float, default=120.0,
                        help="seconds a scenario may take before it is cancelled")
    parser.add_argument("--dir", type=Path, default=None, help="where to make workspaces")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces")
    args = parser.parse_args()

    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    base = Path(tempfile.mkdtemp(prefix="herald-guarantees-", dir=args.dir))
    failed = False
    try:
        for name in names:
            ws = base / f"{name}-{args.backend}"

            async def scenario(name: str = name, ws: Path = ws) -> str:
                with anyio.fail_after(args.deadline):
                    return await SCENARIOS[name](ws, args)

            try:
                line = backends.run(scenario, args.backend)
            except TimeoutError:
                failed = True
                line = figures(error="deadline_exceeded", deadline_s=args.deadline)
            print(f"{name} backend={args.backend} {line}", flush=True)
    finally:
        if args.keep:
            print(f"workspaces in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
