"""Fakes for testing code that sends through Herald: a gateway that behaves.

``FakeGateway`` is a driver whose behaviour is set per instance: latency, a failure rate,
throttling, rejections, or any ``handler`` of your own (like httpx's ``MockTransport``). It
keeps a ledger of every submission, so a test can assert that nobody was sent twice.

    gateway = FakeGateway(latency=0.001, fail_rate=0.05, seed=7)
    herald = await Herald.open(config, plugins=load_plugins(gateway.plugin()))

A config names it as ``driver = "fake"``; every ``[gateways.X]`` with that driver shares the
one instance that registered it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from engine.drivers import (
    Capabilities,
    Driver,
    DriverConfig,
    OutboundMessage,
    Receipt,
    SendResult,
)
from engine.errors import InputError, TransientGatewayError
from engine.hookspecs import hookimpl

T = TypeVar("T")

__all__ = ["FakeGateway", "create_token", "in_workspace", "write_config"]


class _Receipts(msgspec.Struct):
    receipts: list[Receipt]


_decode_receipts = msgspec.json.Decoder(_Receipts).decode

Handler = Callable[[Sequence[OutboundMessage]], list[SendResult]]


class FakeConfig(DriverConfig):
    pass


class FakeGateway:
    """A fake SMS gateway with a ledger. Behaviour knobs:

    ``latency``: seconds per batch. ``fail_rate``: chance a whole batch raises a
    transient error. ``retry_rate``: chance a message is answered ``retry``.
    ``reject``: phones always rejected. ``handler``: replaces all of that.
    ``idempotent``: the gateway drops resubmissions of an id it accepted (declared to the
    engine as idempotent submission). ``down``: every connection is refused.
    ``throttle``: every request is answered 429 with that Retry-After. ``name``: the driver
    name (two fakes with two names behave as two gateways).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        fail_rate: float = 0.0,
        retry_rate: float = 0.0,
        reject: Sequence[str] = (),
        handler: Handler | None = None,
        idempotent: bool = False,
        max_batch: int = 500,
        seed: int = 0,
        name: str = "fake",
        down: bool = False,
        throttle: float | None = None,
    ) -> None:
        self.latency = latency
        self.fail_rate = fail_rate
        self.retry_rate = retry_rate
        self.reject = frozenset(reject)
        self.handler = handler
        self.idempotent = idempotent
        self.max_batch = max_batch
        self.rng = random.Random(seed)
        #: The driver name a config uses for this gateway.
        self.name = name
        #: Refuse every connection (the gateway is down): nothing is taken.
        self.down = down
        #: Answer 429 with this Retry-After (seconds) until set back to None.
        self.throttle = throttle
        #: (time, segments) of each accepted batch, by anyio's clock.
        self.timeline: list[tuple[float, int]] = []
        #: How many times each message id was submitted, and accepted.
        self.submitted: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.texts: dict[str, OutboundMessage] = {}
        self.batches = 0
        self.closed = 0

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.batches += 1
        if self.down:
            raise TransientGatewayError("fake gateway: connection refused", unsent=True)
        if self.throttle is not None:
            raise TransientGatewayError("fake gateway: 429 Too Many Requests",
                                        retry_after=self.throttle, unsent=True)
        self.timeline.append((anyio.current_time(), sum(m.segments for m in messages)))
        if self.latency:
            await anyio.sleep(self.latency)
        for m in messages:
            self.submitted[m.id] += 1
        if self.handler is not None:
            results = self.handler(messages)
        else:
            if self.fail_rate and self.rng.random() < self.fail_rate:
                raise TransientGatewayError("fake gateway: 503 Service Unavailable")
            results = []
            for m in messages:
                if m.to in self.reject:
                    results.append(SendResult(m.id, "rejected", error="E42 blocked number"))
                elif self.retry_rate and self.rng.random() < self.retry_rate:
                    results.append(SendResult(m.id, "retry", error="queue full"))
                else:
                    results.append(SendResult(m.id, "accepted", provider_id=f"p-{m.id}"))
        by_id = {m.id: m for m in messages}
        for r in results:
            if r.status == "accepted":
                if self.idempotent and self.accepted[r.id]:
                    continue
                self.accepted[r.id] += 1
                self.texts[r.id] = by_id[r.id]
        return results

    def driver_class(self) -> type[Driver]:
        gateway = self

        class FakeDriver(Driver):
            name = gateway.name
            Config = FakeConfig
            capabilities = Capabilities(max_batch=gateway.max_batch, supports_dlr=True,
                                        idempotent=gateway.idempotent)

            def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
                try:
                    return _decode_receipts(body).receipts
                except msgspec.ValidationError as err:
                    raise InputError(f"receipt body: {err}") from None
                except msgspec.DecodeError as err:
                    raise InputError(f"receipt body is not JSON: {err}") from None

            async def send_batch(
                self, messages: Sequence[OutboundMessage]
            ) -> list[SendResult]:
                return await gateway.send(messages)

            async def aclose(self) -> None:
                gateway.closed += 1

        return FakeDriver

    def plugin(self) -> Any:
        """A plugin object registering this gateway as driver ``fake``."""
        cls = self.driver_class()

        class _Plugin:
            @hookimpl
            def herald_drivers(self) -> list[type[Driver]]:
                return [cls]

        return _Plugin()


def write_config(directory: Path, *, driver: str = "fake", extra: str = "", **engine: Any) -> Path:
    """A minimal working config in ``directory`` (for tests and examples).

    ``database``: the store's URL (default: ``herald.db`` in ``directory``)."""
    lines = ["[engine]", f'database = "{engine.pop("database", "herald.db")}"']
    for key, value in engine.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    gateway = f'[gateways.gw]\ndriver = "{driver}"\n'
    if driver == "file":
        gateway += 'path = "sent.jsonl"\n'
    text = "\n".join(lines) + "\n\n" + gateway + """
[senders.s1]
gateway = "gw"
caller_id = "ACME"

[virtual_senders.v]
rules = [{ senders = [{ sender = "s1", percent = 100 }] }]

[resources.news]
channel = "sms"
virtual_sender = "v"
""" + extra
    path = directory / "herald.toml"
    path.write_text(text, encoding="utf-8")
    return path



def in_workspace(config: str | Path, action: Callable[[Any], Awaitable[T]]) -> T:
    """``await action(store)`` on the store of the workspace ``config``, from sync or async
    code alike (in a thread with an event loop of its own), then close it: setup for
    tests and benches that need a token, a profile database or a mailing."""
    import os
    import threading
    import tomllib

    from engine.store.open import ENV, open_store, resolve_url

    # only [engine] database matters here: the config's drivers may be test fakes
    path = Path(config)
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    url = resolve_url(os.environ.get(ENV) or raw.get("engine", {}).get("database", "herald.db"),
                      path.resolve().parent)
    box: dict[str, Any] = {}

    async def go() -> None:
        store = await open_store(url)
        try:
            box["result"] = await action(store)
        finally:
            await store.aclose()

    def run() -> None:
        try:
            anyio.run(go)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def create_token(config: str | Path, role: str = "admin", *, name: str | None = None) -> str:
    """A new API token of ``role`` in the workspace ``config``; its secret."""
    from engine.api.tokens import TokenStore

    async def make(store: Any) -> str:
        return (await TokenStore(store).create(role, name=name))[1]

    return in_workspace(config, make)
