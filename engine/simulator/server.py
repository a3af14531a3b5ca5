"""``GatewaySimulator``: the herald-json gateway itself, deciding each request's fate."""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from engine.core.ratelimit import Gcra
from engine.simulator.http import DEFAULT_HOST, LoopbackServer, format_response
from engine.simulator.options import SimOptions, SimStats
from engine.simulator.receipts import DueReceipts, post_receipts
from engine.simulator.wire import (
    InboundBatch,
    InboundMessage,
    Receipt,
    SendResponse,
    WireMessage,
    WireResult,
    decode_inbound,
    decode_send,
    encode,
)

__all__ = ["GatewaySimulator"]


class GatewaySimulator(LoopbackServer):
    """A herald-json gateway on 127.0.0.1; use as ``async with GatewaySimulator(...) as sim``.

    Takes a ``SimOptions`` and/or its fields as keywords. ``port=0`` picks a free port;
    ``host`` may name another loopback address. ``url`` is the base URL once started,
    ``send_url`` the send endpoint.
    """

    def __init__(
        self,
        options: SimOptions | None = None,
        /,
        *,
        port: int = 0,
        host: str = DEFAULT_HOST,
        **changes: Any,
    ) -> None:
        super().__init__(port, host)
        self.options = SimOptions()
        self.accepted_ids: Counter[str] = Counter()
        self._provider_ids: dict[str, str] = {}
        self._serial = itertools.count(1)
        self._counts: Counter[str] = Counter()
        self._gcra: Gcra | None = None
        self._rng = random.Random()
        self._receipts_in: MemoryObjectSendStream[DueReceipts] | None = None
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
            inbound_sent=c["inbound_sent"],
            inbound_failed=c["inbound_failed"],
        )

    async def send_inbound(self, phone: str, text: str, *, to: str | None = None,
                           at: float | None = None) -> int:
        """A recipient's reply: POST it to ``inbound_url`` as herald-json, ``{"inbound":
        [{"from": phone, "text": text, ...}]}``; returns the HTTP status (0: no answer)."""
        return await self._post_inbound([InboundMessage(phone, text, to, at)])

    async def _post_inbound(self, messages: list[InboundMessage]) -> int:
        import httpx

        url = self.options.inbound_url
        if url is None:
            raise RuntimeError("the simulator has no inbound_url to send replies to")
        try:
            response = await self._client.post(
                url, content=encode(InboundBatch(messages)),
                headers={"content-type": "application/json"})
        except httpx.HTTPError:
            self._counts["inbound_failed"] += len(messages)
            return 0
        key = "inbound_sent" if response.is_success else "inbound_failed"
        self._counts[key] += len(messages)
        return response.status_code

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        import httpx  # not at the top: `herald` imports this package to build its parser

        # trust_env=False: no proxy from the environment may carry receipts off loopback.
        client = httpx.AsyncClient(timeout=10.0, trust_env=False)
        self._client = await stack.enter_async_context(client)
        send, self._receipts_out = anyio.create_memory_object_stream[DueReceipts](10_000)
        self._receipts_in = stack.enter_context(send)
        stack.enter_context(self._receipts_out)

    def _start(self, task_group: TaskGroup) -> None:
        task_group.start_soon(post_receipts, self._receipts_out, self._client, self._counts)

    async def _answer(self, method: bytes, target: bytes, body: bytes) -> bytes | None:
        if target == b"/stats":
            if method != b"GET":
                return format_response(405, encode({"error": "GET /stats"}))
            return format_response(200, encode(self.statistics()))
        if target == b"/inbound":
            return await self._relay_inbound(method, body)
        if method != b"POST":
            return format_response(405, encode({"error": "POST herald-json to /send"}))
        counts = self._counts
        counts["requests"] += 1
        opts = self.options
        try:
            messages = decode_send(body).messages
        except msgspec.DecodeError as err:
            self.bad_requests += 1
            return format_response(400, encode({"error": f"not herald-json: {err}"}))
        roll = self._rng.random()
        if roll < opts.error_rate:
            counts["errors"] += 1
            answer = format_response(500, b'{"error":"simulated server error"}')
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
            answer = format_response(200, encode(SendResponse(await self._process(messages))))
        latency = opts.latency
        if opts.jitter:
            latency = max(0.0, self._rng.uniform(latency - opts.jitter, latency + opts.jitter))
        if latency:
            await anyio.sleep(latency)
        return answer

    async def _relay_inbound(self, method: bytes, body: bytes) -> bytes:
        """``POST /inbound`` with ``{"inbound": [...]}``: send those replies to Herald
        (``inbound_url``); answers ``{"status": <Herald's HTTP status>}``."""
        if method != b"POST":
            return format_response(405, encode({"error": "POST replies to /inbound"}))
        try:
            messages = decode_inbound(body).inbound
        except msgspec.DecodeError as err:
            self.bad_requests += 1
            return format_response(400, encode({"error": f"not herald-json inbound: {err}"}))
        if self.options.inbound_url is None:
            return format_response(400, encode({"error": "start the simulator with an"
                                                " inbound_url (--inbound-url)"}))
        return format_response(200, encode({"status": await self._post_inbound(messages)}))

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
        body = encode({"error": "throttled", "retry_after": round(retry_after, 6)})
        return format_response(429, body, extra=header)

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
