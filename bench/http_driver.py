"""Client CPU of the ``http`` driver, per message and per request, for each HTTP client stack.

The gateway simulator runs in a child process (127.0.0.1 only), so the time measured here,
``time.process_time()`` of this process, is the client's alone. For every stack, on
asyncio+uvloop and on trio, the driver is driven the way the engine drives it:

- batch mode: ``batch_size = 500``, calls of 500 messages (one request each), one at a time;
- single mode: ``batch_size = 1``, calls of 64 messages, i.e. 64 concurrent one-message
  requests over ``max_connections = 64`` kept-alive connections.

Stacks (each behind the driver's ``Transport`` interface, so only the client differs):
``herald`` (the bundled client: h11 on anyio streams, the chosen one), ``httpx`` (0.28,
httpcore pool), ``aiohttp`` and ``httpx+aiohttp`` (httpx's API over an aiohttp transport;
both asyncio only). Stacks that are not installed are skipped. Each measurement stops
after ``--seconds`` or ``--calls``, whichever comes first, after two warm-up calls that
open the connections.

    python bench/http_driver.py                       # everything, about a minute
    python bench/http_driver.py --stacks herald --seconds 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

if not __package__:  # run as a script: make the repository root importable, and the
    # bundled plugins too, for an editable install made before herald_http existed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.append(str(Path(__file__).resolve().parent.parent / "plugins"))

# Both first-party, whether or not the isort settings list herald_http yet:
# isort: off
from engine.drivers import OutboundMessage
from herald_http import HttpConfig, HttpDriver, Progress, Response, Transport, TransportError

# isort: on

ROOT = Path(__file__).resolve().parent.parent

SINGLE_CONCURRENCY = 64
BATCH = 500
BACKENDS = ("uvloop", "trio")


# --- the candidate stacks ------------------------------------------------------------------


class HttpxTransport:
    """httpx's AsyncClient, pool sized like ours; no proxies from the environment."""

    def __init__(self, url: str, headers: dict[str, str], max_connections: int) -> None:
        import httpx

        self._httpx = httpx
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            limits=limits, timeout=None, trust_env=False,
            headers={"content-type": "application/json", **headers},
        )
        self._url = url

    async def post(self, body: bytes, progress: Progress | None = None) -> Response:
        try:
            r = await self._client.post(self._url, content=body)
        except self._httpx.HTTPError as err:
            raise TransportError(str(err), sent=True) from err
        return Response(r.status_code, dict(r.headers), r.content)

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpTransport:
    """aiohttp's ClientSession (asyncio only)."""

    def __init__(self, url: str, headers: dict[str, str], max_connections: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        connector = aiohttp.TCPConnector(limit=max_connections)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"content-type": "application/json", **headers}
        )
        self._url = url

    async def post(self, body: bytes, progress: Progress | None = None) -> Response:
        try:
            async with self._session.post(self._url, data=body) as r:
                content = await r.read()
                return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, content)
        except (self._aiohttp.ClientError, OSError) as err:
            raise TransportError(str(err), sent=True) from err

    async def aclose(self) -> None:
        await self._session.close()


class HttpxOverAiohttpTransport(HttpxTransport):
    """httpx's API with an aiohttp session doing the HTTP (asyncio only)."""

    def __init__(self, url: str, headers: dict[str, str], max_connections: int) -> None:
        import aiohttp
        import httpx

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections))

        class Bridge(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                async with session.request(
                    request.method, str(request.url), data=await request.aread(),
                    headers=dict(request.headers),
                ) as r:
                    return httpx.Response(r.status, headers=r.raw_headers,
                                          content=await r.read())

            async def aclose(self) -> None:
                await session.close()

        self._httpx = httpx
        self._client = httpx.AsyncClient(
            transport=Bridge(), timeout=None,
            headers={"content-type": "application/json", **headers},
        )
        self._url = url


Factory = Callable[[str, dict[str, str], int], Transport] | None

STACKS: dict[str, tuple[Factory, tuple[str, ...]]] = {
    "herald": (None, ("uvloop", "asyncio", "trio")),
    "httpx": (HttpxTransport, ("uvloop", "asyncio", "trio")),
    "aiohttp": (AiohttpTransport, ("uvloop", "asyncio")),
    "httpx+aiohttp": (HttpxOverAiohttpTransport, ("uvloop", "asyncio")),
}
REQUIRES = {"httpx": ("httpx",), "aiohttp": ("aiohttp",),
            "httpx+aiohttp": ("httpx", "aiohttp")}


def _installed(stack: str) -> bool:
    for module in REQUIRES.get(stack, ()):
        try:
            __import__(module)
        except ImportError:
            return False
    return True


# --- measuring -----------------------------------------------------------------------------


def _messages(n: int, prefix: str) -> list[OutboundMessage]:
    text = "Your parcel is on its way: track it at https://ex.am/ple (reply STOP to opt out)"
    return [OutboundMessage(f"{prefix}{i}", "+15551234567", "HERALD", text, 1) for i in range(n)]


async def _measure(
    driver: HttpDriver, messages: Sequence[OutboundMessage], seconds: float, max_calls: int
) -> tuple[float, int, float]:
    """(client CPU seconds, calls, wall seconds) over up to ``max_calls`` calls."""
    for _ in range(2):  # warm up: open the connections, fill the caches
        await driver.send_batch(messages)
    calls = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while calls < max_calls and time.perf_counter() - wall0 < seconds:
        results = await driver.send_batch(messages)
        if len(results) != len(messages):
            raise AssertionError(f"{len(results)} results for {len(messages)} messages")
        calls += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    bad = [r for r in results if r.status != "accepted"]
    if bad:
        raise AssertionError(f"not accepted: {bad[:3]}")
    return cpu, calls, wall


async def _bench_stack(
    url: str, stack: str, args: argparse.Namespace
) -> tuple[float, float, float, float]:
    """(batch µs/message, messages/s, single µs/request, requests/s) of one stack."""
    factory = STACKS[stack][0]
    out: list[float] = []
    for batch_size, n, max_calls in (
        (BATCH, BATCH, args.calls),
        (1, SINGLE_CONCURRENCY, args.calls),
    ):
        config = HttpConfig(url=url, batch_size=batch_size, max_connections=SINGLE_CONCURRENCY)
        transport = None if factory is None else factory(url, {}, SINGLE_CONCURRENCY)
        driver = HttpDriver(config, transport=transport)
        try:
            cpu, calls, wall = await _measure(driver, _messages(n, stack), args.seconds, max_calls)
        finally:
            await driver.aclose()
        units = calls * n
        out += [cpu / units * 1e6, units / wall]
    return out[0], out[1], out[2], out[3]


def _run(backend: str, main: Callable[[], Any]) -> None:
    if backend == "uvloop":
        anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        anyio.run(main, backend=backend)


def _start_simulator(backend: str) -> tuple[subprocess.Popen[str], str]:
    script = ROOT / "bench" / "gateway_sim.py"
    cmd = [sys.executable, str(script), "--port", "0", "--announce", "--backend", backend,
           "--no-track-ids"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if not line.startswith("http://127.0.0.1:"):
        child.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return child, f"{line}/send"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stacks", nargs="+", choices=list(STACKS), default=list(STACKS))
    parser.add_argument("--backends", nargs="+", choices=["uvloop", "asyncio", "trio"],
                        default=list(BACKENDS))
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement, at most")
    parser.add_argument("--calls", type=int, default=400, help="per measurement, at most")
    parser.add_argument("--server-backend", default="uvloop", choices=["uvloop", "trio"])
    args = parser.parse_args(argv)
    child, url = _start_simulator(args.server_backend)
    rows: list[tuple[str, str, float, float, float, float]] = []
    try:
        print(f"simulator at {url} ({args.server_backend}); client CPU of this process only")
        print(f"batch: calls of {BATCH} messages, one request each; single: calls of "
              f"{SINGLE_CONCURRENCY} messages, {SINGLE_CONCURRENCY} concurrent requests\n")
        header = (f"{'stack':<15}{'backend':<9}{'batch µs/msg':>14}{'msg/s':>10}"
                  f"{'single µs/req':>15}{'req/s':>9}")
        print(header)
        print("-" * len(header))
        for backend in args.backends:
            for stack in args.stacks:
                if backend not in STACKS[stack][1] or not _installed(stack):
                    continue
                box: list[tuple[float, float, float, float]] = []

                async def one(stack: str = stack, box: list[Any] = box) -> None:
                    box.append(await _bench_stack(url, stack, args))

                _run(backend, one)
                b, mps, s, rps = box[0]
                rows.append((stack, backend, b, mps, s, rps))
                print(f"{stack:<15}{backend:<9}{b:>14.2f}{mps:>10,.0f}{s:>15.1f}{rps:>9,.0f}",
                      flush=True)
    finally:
        child.terminate()
        child.wait(10)
    chosen = [r for r in rows if r[0] == "herald"]
    if chosen:
        print("\nchosen (herald): " + "; ".join(
            f"{backend}: batch {b:.2f} µs/message, single {s:.0f} µs/request"
            for _, backend, b, _, s, _ in chosen
        ))


if __name__ == "__main__":
    main()
