"""A fake SMS gateway speaking herald-json, fast enough never to be the bottleneck.

Wire format ("herald-json", HTTP/1.1 with keep-alive, on 127.0.0.1 only):

- ``POST /send`` (any path but ``/stats`` is treated as a send) with
  ``{"messages": [{"id", "to", "from", "text", "segments"}]}`` is answered ``200`` with
  ``{"results": [{"id", "status": "accepted"|"rejected"|"retry", "provider_id", "error"}]}``,
  one result per message, in order.
- ``429`` (throttled; whole request refused): header ``Retry-After`` in whole seconds, rounded
  up as RFC 9110 wants, and body ``{"error": "throttled", "retry_after": <exact seconds>}``.
- ``500``: a simulated server error (whole request refused). ``400``: the body is not valid
  herald-json. A simulated timeout never answers and closes after ``hang`` seconds.
- ``GET /stats``: the ``SimStats`` counters as JSON.
- Delivery receipts, when ``receipt_url`` is set (loopback only), are POSTed there
  ``receipt_delay`` seconds after acceptance, many per request:
  ``{"receipts": [{"provider_id", "id", "status": "delivered"|"undelivered", "error"}]}``.

Messages are processed, and counted, when the request arrives; ``latency`` delays only the
answer, as with a real gateway, so a client that times out may see its retry accepted twice.
``accepted_ids`` counts acceptances per message id for "none accepted twice" assertions.
With ``idempotent``, a resubmitted id that was already accepted gets its first provider id
back and is not accepted again.

Python: ``async with GatewaySimulator(latency=0.01) as sim: ... sim.url ...``; change the
behaviour mid-test with ``sim.configure(error_rate=1.0)``; ``ReceiptSink`` collects receipts
(``GatewaySimulator(receipt_url=sink.url)``, ``await sink.wait(n)``). Command line:
``python bench/gateway_sim.py --port 8025 --latency 0.01 --max-throughput 2000``;
``--bench`` measures the simulator itself (server in a child process, raw load from here).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import anyio
import httpx
import msgspec
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.ratelimit import Gcra

__all__ = ["GatewaySimulator", "Receipt", "ReceiptSink", "SimOptions", "SimStats"]

HOST = "127.0.0.1"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_RECEIPTS_PER_POST = 1000
_CLOSE = b"\r\nconnection: close\r\n\r\n"


class WireMessage(msgspec.Struct):
    id: str
    to: str
    from_: str = msgspec.field(name="from")
    text: str = ""
    segments: int = 1


class SendRequest(msgspec.Struct):
    messages: list[WireMessage]


class WireResult(msgspec.Struct):
    id: str
    status: Literal["accepted", "rejected", "retry"]
    provider_id: str | None = None
    error: str | None = None


class SendResponse(msgspec.Struct):
    results: list[WireResult]


class Receipt(msgspec.Struct, frozen=True):
    """One delivery receipt as POSTed to ``receipt_url``."""

    provider_id: str
    id: str
    status: Literal["delivered", "undelivered"]
    error: str | None = None


class ReceiptBatch(msgspec.Struct):
    receipts: list[Receipt]


class SimOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the simulated gateway behaves. Rates are probabilities in [0, 1]; times seconds.

    Per request, in this order: ``error_rate`` answers 500, ``timeout_rate`` hangs for
    ``hang`` seconds without answering (processing the messages first if ``hang_accepts``),
    ``throttle_rate`` answers 429 with ``retry_after``; over ``max_throughput`` messages per
    second (0 = unlimited; ``burst`` at once, 0 = one second's worth) answers 429 with the
    exact wait. Per message: ``reject_rate`` rejects with ``reject_code``, ``retry_rate``
    answers "retry", the rest are accepted. Receipts go to ``receipt_url`` after
    ``receipt_delay``, ``undelivered_rate`` of them "undelivered".
    """

    latency: float = 0.0
    jitter: float = 0.0
    max_throughput: float = 0.0
    burst: int = 0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang: float = 3600.0
    hang_accepts: bool = False
    throttle_rate: float = 0.0
    retry_after: float = 1.0
    reject_rate: float = 0.0
    reject_code: str = "invalid_number"
    retry_rate: float = 0.0
    idempotent: bool = False
    receipt_url: str | None = None
    receipt_delay: float = 0.0
    undelivered_rate: float = 0.0
    undelivered_code: str = "expired"
    track_ids: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        rates = ("error_rate", "timeout_rate", "throttle_rate", "reject_rate", "retry_rate")
        for name in (*rates, "undelivered_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_rate + self.timeout_rate + self.throttle_rate > 1.0:
            raise ValueError("error_rate + timeout_rate + throttle_rate must not exceed 1")
        if self.reject_rate + self.retry_rate > 1.0:
            raise ValueError("reject_rate + retry_rate must not exceed 1")
        for name in ("latency", "jitter", "max_throughput", "hang", "retry_after"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0")
        if self.receipt_url is not None:
            parts = urlsplit(self.receipt_url)
            if parts.scheme != "http" or parts.hostname not in _LOOPBACK:
                raise ValueError(
                    f"receipt_url must be http:// on loopback (127.0.0.1), not {self.receipt_url!r}"
                )


class SimStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a simulator.

    ``duplicates``: accepted ids submitted again (answered from memory when ``idempotent``,
    accepted again otherwise); ``accepted_twice``: ids accepted more than once, the number a
    "nothing sent twice" test wants at 0. Both need ``track_ids`` (or ``idempotent``).
    """

    requests: int
    messages: int
    accepted: int
    rejected: int
    retried: int
    errors: int
    timeouts: int
    throttled: int
    bad_requests: int
    duplicates: int
    accepted_twice: int
    receipts_sent: int
    receipts_failed: int


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
}

_encode = msgspec.json.Encoder().encode
_decode_send = msgspec.json.Decoder(SendRequest).decode
_decode_receipts = msgspec.json.Decoder(ReceiptBatch).decode


def _response(status: int, body: bytes, *, close: bool = False, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%s\r\n"
    connection = b"connection: close\r\n" if close else b""
    reason = _REASONS.get(status, b"Simulated")
    return head % (status, reason, len(body), extra, connection) + body


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(
    stream: SocketStream, buffer: bytearray
) -> tuple[bytes, bytes, bytes, bool] | None:
    """Read one HTTP/1.1 request: (method, target, body, keep-alive), or None at EOF."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > _MAX_HEAD:
            raise _BadRequest(431, "request head too large")
        try:
            buffer += await stream.receive(65536)
        except anyio.EndOfStream:
            return None
    lines = bytes(buffer[:end]).lstrip(b"\r\n").split(b"\r\n")
    del buffer[: end + 4]
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    length = 0
    keep_alive = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise _BadRequest(400, "bad content-length") from None
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token != b"close" and (keep_alive or token == b"keep-alive")
        elif name == b"transfer-encoding":
            raise _BadRequest(411, "chunked bodies are not supported: send content-length")
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            await stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    if length < 0:
        raise _BadRequest(400, "bad content-length")
    if length > _MAX_BODY:
        raise _BadRequest(413, "body too large")
    while len(buffer) < length:
        buffer += await stream.receive(65536)
    body = bytes(buffer[:length])
    del buffer[:length]
    return method, target, body, keep_alive


class _LoopbackServer:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 living inside ``async with``."""

    def __init__(self, port: int) -> None:
        self._requested_port = port
        self.port = 0
        self.bad_requests = 0
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the base URL (once started)."""
        return f"http://{HOST}:{self.port}"

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            listener = await anyio.create_tcp_listener(
                local_host=HOST, local_port=self._requested_port
            )
            stack.push_async_callback(listener.aclose)
            self.port = listener.extra(SocketAttribute.local_port)
            await self._open(stack)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            self._start(task_group)
            task_group.start_soon(listener.serve, self._serve_connection)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        """Open what the server's tasks use; ``stack`` closes it after they have ended."""

    def _start(self, task_group: TaskGroup) -> None:
        """Start the server's own tasks besides the listener."""

    async def _answer(self, method: bytes, target: bytes, body: bytes) -> bytes | None:
        """The response to one request, or None to hang up without answering."""
        raise NotImplementedError

    async def _serve_connection(self, stream: SocketStream) -> None:
        async with stream:
            buffer = bytearray()
            with contextlib.suppress(
                anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                while True:
                    try:
                        request = await _read_request(stream, buffer)
                    except _BadRequest as err:
                        self.bad_requests += 1
                        body = _encode({"error": str(err)})
                        await stream.send(_response(err.status, body, close=True))
                        return
                    if request is None:
                        return
                    method, target, body, keep_alive = request
                    answer = await self._answer(method, target, body)
                    if answer is None:
                        return
                    if not keep_alive:
                        await stream.send(answer.replace(b"\r\n\r\n", _CLOSE, 1))
                        return
                    await stream.send(answer)


class ReceiptSink(_LoopbackServer):
    """Collects delivery receipts POSTed to ``url`` (any path); answers ``status``.

    ``async with ReceiptSink() as sink: ...GatewaySimulator(receipt_url=sink.url)...``, then
    ``await sink.wait(n)`` (under a cancel scope) until ``n`` receipts have come.
    """

    def __init__(self, *, port: int = 0, status: int = 200) -> None:
        super().__init__(port)
        self.status = status
        self.receipts: list[Receipt] = []
        self.posts = 0
        self._changed: anyio.Event | None = None

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        self._changed = anyio.Event()

    async def wait(self, count: int) -> list[Receipt]:
        """Wait until at least ``count`` receipts have come; return all of them."""
        while len(self.receipts) < count:
            if self._changed is None:
                raise RuntimeError("the sink is not running: use it as `async with`")
            await self._changed.wait()
        return self.receipts

    async def _answer(self, method: bytes, target: bytes, body: bytes) -> bytes | None:
        if method != b"POST":
            return _response(405, _encode({"error": "POST receipts"}))
        try:
            receipts = _decode_receipts(body).receipts
        except msgspec.DecodeError as err:
            self.bad_requests += 1
            return _response(400, _encode({"error": f"not herald-json receipts: {err}"}))
        if self.status != 200:
            return _response(self.status, b"{}")
        self.posts += 1
        self.receipts.extend(receipts)
        if self._changed is not None:
            self._changed.set()
        self._changed = anyio.Event()
        return _response(200, b"{}")


class GatewaySimulator(_LoopbackServer):
    """A herald-json gateway on 127.0.0.1; use as ``async with GatewaySimulator(...) as sim``.

    Takes a ``SimOptions`` and/or its fields as keywords. ``port=0`` picks a free port;
    ``url`` is the base URL once started, ``send_url`` the send endpoint.
    """

    def __init__(self, options: SimOptions | None = None, /, *, port: int = 0, **changes: Any):
        super().__init__(port)
        self.options = SimOptions()
        self.accepted_ids: Counter[str] = Counter()
        self._provider_ids: dict[str, str] = {}
        self._serial = itertools.count(1)
        self._counts: Counter[str] = Counter()
        self._gcra: Gcra | None = None
        self._rng = random.Random()
        self._receipts_in: MemoryObjectSendStream[tuple[float, str, list[Receipt]]] | None = None
        self.configure(options, **changes)

    def configure(self, options: SimOptions | None = None, /, **changes: Any) -> None:
        """Replace the options, or change some of them, while running or not."""
        base = options if options is not None else self.options
        self.options = SimOptions(**{**msgspec.structs.asdict(base), **changes})
        opts = self.options
        if options is not None or "seed" in changes:
            self._rng = random.Random(opts.seed)
        if opts.max_throughput:
            burst = opts.burst or max(1, round(opts.max_throughput))
            self._gcra = Gcra(opts.max_throughput, burst)
        else:
            self._gcra = None

    @property
    def send_url(self) -> str:
        """The send endpoint, ``{url}/send``."""
        return f"{self.url}/send"

    def statistics(self) -> SimStats:
        """A snapshot of the counters."""
        c = self._counts
        return SimStats(
            requests=c["requests"],
            messages=c["messages"],
            accepted=c["accepted"],
            rejected=c["rejected"],
            retried=c["retried"],
            errors=c["errors"],
            timeouts=c["timeouts"],
            throttled=c["throttled"],
            bad_requests=self.bad_requests,
            duplicates=c["duplicates"],
            accepted_twice=sum(1 for n in self.accepted_ids.values() if n > 1),
            receipts_sent=c["receipts_sent"],
            receipts_failed=c["receipts_failed"],
        )

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        # trust_env=False: no proxy from the environment may carry receipts off loopback.
        client = httpx.AsyncClient(timeout=10.0, trust_env=False)
        self._client = await stack.enter_async_context(client)
        item = tuple[float, str, list[Receipt]]
        send, self._receipts_out = anyio.create_memory_object_stream[item](10_000)
        self._receipts_in = stack.enter_context(send)
        stack.enter_context(self._receipts_out)

    def _start(self, task_group: TaskGroup) -> None:
        task_group.start_soon(self._post_receipts, self._receipts_out, self._client)

    async def _answer(self, method: bytes, target: bytes, body: bytes) -> bytes | None:
        if target == b"/stats":
            if method != b"GET":
                return _response(405, _encode({"error": "GET /stats"}))
            return _response(200, _encode(self.statistics()))
        if method != b"POST":
            return _response(405, _encode({"error": "POST herald-json to /send"}))
        counts = self._counts
        counts["requests"] += 1
        opts = self.options
        try:
            messages = _decode_send(body).messages
        except msgspec.DecodeError as err:
            self.bad_requests += 1
            return _response(400, _encode({"error": f"not herald-json: {err}"}))
        roll = self._rng.random()
        if roll < opts.error_rate:
            counts["errors"] += 1
            answer = _response(500, b'{"error":"simulated server error"}')
        elif roll < opts.error_rate + opts.timeout_rate:
            counts["timeouts"] += 1
            if opts.hang_accepts:
                await self._process(messages)
            await anyio.sleep(opts.hang)
            return None
        elif roll < opts.error_rate + opts.timeout_rate + opts.throttle_rate:
            counts["throttled"] += 1
            answer = self._throttled(opts.retry_after)
        elif (wait := self._over_throughput(len(messages))) is not None:
            counts["throttled"] += 1
            answer = self._throttled(wait)
        else:
            answer = _response(200, _encode(SendResponse(await self._process(messages))))
        latency = opts.latency
        if opts.jitter:
            latency = max(0.0, self._rng.uniform(latency - opts.jitter, latency + opts.jitter))
        if latency:
            await anyio.sleep(latency)
        return answer

    def _over_throughput(self, messages: int) -> float | None:
        """None if ``messages`` fit under ``max_throughput`` now, else the seconds to wait."""
        gcra = self._gcra
        if gcra is None:
            return None
        now = anyio.current_time()
        if gcra.try_acquire(messages, now):
            return None
        return gcra.delay(messages, now)

    @staticmethod
    def _throttled(retry_after: float) -> bytes:
        header = b"retry-after: %d\r\n" % max(1, math.ceil(retry_after))
        body = _encode({"error": "throttled", "retry_after": round(retry_after, 6)})
        return _response(429, body, extra=header)

    async def _process(self, messages: Sequence[WireMessage]) -> list[WireResult]:
        opts = self.options
        counts = self._counts
        rng = self._rng.random
        accepted_ids = self.accepted_ids
        provider_ids = self._provider_ids
        keep_provider_ids = opts.idempotent or opts.receipt_url is not None
        reject_below = opts.reject_rate
        retry_below = opts.reject_rate + opts.retry_rate
        results: list[WireResult] = []
        receipts: list[Receipt] = []
        accepted = 0
        for message in messages:
            mid = message.id
            if opts.idempotent and mid in provider_ids:
                counts["duplicates"] += 1
                results.append(WireResult(mid, "accepted", provider_ids[mid]))
                continue
            roll = rng()
            if roll < reject_below:
                counts["rejected"] += 1
                results.append(WireResult(mid, "rejected", None, opts.reject_code))
            elif roll < retry_below:
                counts["retried"] += 1
                results.append(WireResult(mid, "retry", None, "busy"))
            else:
                accepted += 1
                provider_id = f"sim-{next(self._serial)}"
                if opts.track_ids:
                    if mid in accepted_ids:
                        counts["duplicates"] += 1
                    accepted_ids[mid] += 1
                if keep_provider_ids:
                    provider_ids[mid] = provider_id
                results.append(WireResult(mid, "accepted", provider_id))
                if opts.receipt_url is not None:
                    if rng() < opts.undelivered_rate:
                        receipt = Receipt(provider_id, mid, "undelivered", opts.undelivered_code)
                    else:
                        receipt = Receipt(provider_id, mid, "delivered")
                    receipts.append(receipt)
        counts["messages"] += len(messages)
        counts["accepted"] += accepted
        if receipts and opts.receipt_url is not None and self._receipts_in is not None:
            due = anyio.current_time() + opts.receipt_delay
            await self._receipts_in.send((due, opts.receipt_url, receipts))
        return results

    async def _post_receipts(
        self,
        receive: MemoryObjectReceiveStream[tuple[float, str, list[Receipt]]],
        client: httpx.AsyncClient,
    ) -> None:
        # One worker, FIFO: every batch waits the same delay, so arrival order is due order
        # (after a configure() that shortens receipt_delay, newer receipts wait for older).
        pending: tuple[float, str, list[Receipt]] | None = None
        while True:
            due, url, receipts = pending if pending is not None else await receive.receive()
            pending = None
            await anyio.sleep_until(due)
            batch = list(receipts)
            while len(batch) < _RECEIPTS_PER_POST:
                try:
                    item = receive.receive_nowait()
                except anyio.WouldBlock:
                    break
                if item[0] > anyio.current_time() or item[1] != url:
                    pending = item
                    break
                batch.extend(item[2])
            try:
                response = await client.post(
                    url,
                    content=_encode(ReceiptBatch(batch)),
                    headers={"content-type": "application/json"},
                )
                response.raise_for_status()
            except httpx.HTTPError:
                self._counts["receipts_failed"] += len(batch)
            else:
                self._counts["receipts_sent"] += len(batch)


# --- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8025, help="0 picks a free port")
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="uvloop")
    parser.add_argument("--bench", action="store_true", help="measure the simulator and exit")
    parser.add_argument("--bench-seconds", type=float, default=5.0)
    parser.add_argument("--bench-batch", type=int, default=1, help="messages per request")
    parser.add_argument("--bench-connections", type=int, default=8)
    for field in msgspec.structs.fields(SimOptions):
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=field.default, dest=field.name)
        else:
            kind = _FLAG_TYPES.get(field.type, str)
            parser.add_argument(flag, type=kind, default=field.default, dest=field.name)
    return parser


_FLAG_TYPES: dict[Any, type] = {float: float, int: int, int | None: int}


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


def _run(main: Any, backend: str) -> None:
    if backend == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            backend = "asyncio"
        else:
            anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
            return
    anyio.run(main, backend=backend)


async def _serve(options: SimOptions, port: int, announce: bool) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with GatewaySimulator(options, port=port) as sim:
            banner = sim.url if announce else f"herald-json gateway simulator on {sim.url}"
            print(banner, flush=True)
            async for _ in signals:
                break
        print(msgspec.json.encode(sim.statistics()).decode(), file=sys.stderr, flush=True)


async def _load(port: int, seconds: float, batch: int, connections: int) -> tuple[int, int]:
    messages = [
        {"id": f"m{i}", "to": "+15551234567", "from": "HERALD", "text": "x" * 60, "segments": 1}
        for i in range(batch)
    ]
    body = _encode({"messages": messages})
    request = (
        b"POST /send HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    ) + body
    done = [0, 0]  # requests, failures
    deadline = anyio.current_time() + seconds

    async def one_connection() -> None:
        async with await anyio.connect_tcp(HOST, port) as stream:
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
    cmd = [sys.executable, __file__, *_option_flags(options), "--port", "0", "--announce"]
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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    parser.add_argument("--announce", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fields = {f.name for f in msgspec.structs.fields(SimOptions)}
    try:
        options = SimOptions(**{k: v for k, v in vars(args).items() if k in fields})
    except ValueError as err:
        parser.error(str(err))
    if args.bench:
        _bench(args, options)
        return
    _run(lambda: _serve(options, args.port, args.announce), args.backend)


if __name__ == "__main__":
    main()
