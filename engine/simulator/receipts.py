"""Delivery receipts: the simulator's side that POSTs them, and ``ReceiptSink`` that takes them."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.simulator.http import DEFAULT_HOST, LoopbackServer, format_response
from engine.simulator.wire import Receipt, ReceiptBatch, decode_receipts, encode

if TYPE_CHECKING:
    import httpx

__all__ = ["DueReceipts", "ReceiptSink", "post_receipts"]

_RECEIPTS_PER_POST = 1000

# (when they are due, the callback URL, the receipts of one accepted batch)
DueReceipts = tuple[float, str, list[Receipt]]


async def post_receipts(
    receive: MemoryObjectReceiveStream[DueReceipts],
    client: httpx.AsyncClient,
    counts: Counter[str],
) -> None:
    """POST receipts to their callback URL once due, up to 1000 per request, until cancelled.

    Counts each receipt in ``counts["receipts_sent"]`` or ``counts["receipts_failed"]``.
    """
    import httpx  # not at the top: `herald` imports this package to build its parser

    # One worker, FIFO: every batch waits the same delay, so arrival order is due order
    # (after a configure() that shortens receipt_delay, newer receipts wait for older).
    pending: DueReceipts | None = None
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
                content=encode(ReceiptBatch(batch)),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
        except httpx.HTTPError:
            counts["receipts_failed"] += len(batch)
        else:
            counts["receipts_sent"] += len(batch)


class ReceiptSink(LoopbackServer):
    """Collects delivery receipts POSTed to ``url`` (any path); answers ``status``.

    ``async with ReceiptSink() as sink: ...GatewaySimulator(receipt_url=sink.url)...``, then
    ``await sink.wait(n)`` (under a cancel scope) until ``n`` receipts have come.
    """

    def __init__(self, *, port: int = 0, status: int = 200, host: str = DEFAULT_HOST) -> None:
        super().__init__(port, host)
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
            return format_response(405, encode({"error": "POST receipts"}))
        try:
            receipts = decode_receipts(body).receipts
        except msgspec.DecodeError as err:
            self.bad_requests += 1
            return format_response(400, encode({"error": f"not herald-json receipts: {err}"}))
        if self.status != 200:
            return format_response(self.status, b"{}")
        self.posts += 1
        self.receipts.extend(receipts)
        if self._changed is not None:
            self._changed.set()
        self._changed = anyio.Event()
        return format_response(200, b"{}")
