"""The shared HTTP stack of every driver whose gateway is an HTTP API.

``ApiDriver`` is the part of a driver that is the same for every such API: keep-alive
connections to one origin (``pool.ConnectionPool``, h11 on anyio), at most
``max_connections`` requests in flight over all calls, a ``timeout`` per request, a batch
cut into requests of ``batch_size`` messages sent concurrently, and what a failed request
means (``TransientGatewayError`` with ``unsent`` or ``ambiguous``, as ``herald_http``'s
module docstring says). A vendor's driver adds only what is its own: the body of one
request (``encode``) and what its answer means (``decode``), its receipts and inbound
callbacks. ``raise_for_status`` maps the HTTP statuses every API shares.

A request is written at most once: ``ApiDriver`` never sends it again by itself.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec

from engine.drivers import Capabilities, Driver, DriverConfig, OutboundMessage, SendResult
from engine.errors import GatewayError, PermanentGatewayError, TransientGatewayError
from herald_http.http1 import Response, check_header, split_url
from herald_http.pool import ConnectionPool, PoolStatistics, Progress, Transport, TransportError

__all__ = [
    "ApiDriver",
    "ApiOptions",
    "ApiStatistics",
    "field_path",
    "merge_results",
    "raise_for_status",
    "snippet",
]

#: Statuses below 500 that say "not now" rather than "never".
TRANSIENT_4XX = frozenset({408, 425, 429})


class ApiOptions(DriverConfig):
    """Options every HTTP API driver takes, besides its vendor's own.

    A vendor's Config subclasses it and gives ``base_url`` the vendor's default.
    """

    #: Where the API is: scheme, host and optional path prefix (regional endpoints,
    #: proxies, tests). The driver appends its vendor's paths.
    base_url: str = ""
    #: Requests in flight at once over all calls (so also open connections).
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 16
    #: Seconds one request may take, from connecting to the last byte; 0 = no limit.
    timeout: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 10.0

    def __post_init__(self) -> None:
        if self.base_url:
            split_url(self.base_url)


class ApiStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the driver: requests made and in flight, failures, and the pool's."""

    requests: int
    in_flight: int
    transport_errors: int
    timeouts: int
    pool: PoolStatistics | None


class ApiDriver(Driver):
    """Base of drivers that submit to an HTTP API (see the module docstring).

    A subclass calls ``super().__init__`` with where requests go and how, and implements
    ``encode`` and ``decode``. ``transport`` replaces the bundled HTTP client (tests and
    the benchmark do). The class's ``capabilities`` say what every instance can do (the
    receipt route reads ``supports_dlr`` there); an instance's own are set from its options.
    """

    capabilities = Capabilities(supports_dlr=True)

    def __init__(
        self,
        config: Any,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        url: str,
        headers: dict[str, str] | None = None,
        batch_size: int = 1,
        max_connections: int = 16,
        timeout: float = 10.0,
        idempotent: bool = False,
        supports_dlr: bool = True,
        max_segments: int = 0,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(config, gateway=gateway, base_dir=base_dir)
        headers = headers or {}
        for name, value in headers.items():
            check_header(name, value)
        #: Where requests go (scheme, host, port and target of ``url``).
        self.origin = origin = split_url(url)
        self.capabilities = Capabilities(
            max_batch=batch_size * max_connections,
            max_segments=max_segments,
            supports_dlr=supports_dlr,
            idempotent=idempotent,
        )
        self._batch_size = batch_size
        self._max_connections = max_connections
        self._timeout = timeout or None
        self._idempotent = idempotent
        self._transport: Transport = transport or ConnectionPool(origin, headers)
        self._slots = anyio.Semaphore(max_connections, fast_acquire=True)
        name = f"gateway {gateway!r}" if gateway else "the gateway"
        #: How errors name the gateway: ``gateway 'x' at https://host``.
        self.where = f"{name} at {origin.scheme}://{origin.authority}"
        self._requests = 0
        self._in_flight = 0
        self._transport_errors = 0
        self._timeouts = 0

    # -- what a vendor's driver implements ---------------------------------------------

    @abc.abstractmethod
    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        """The body of one request carrying ``messages`` (at most ``batch_size``)."""

    @abc.abstractmethod
    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        """What the answer to the request of ``messages`` means, per message.

        Return one result per message the answer speaks of (one it leaves out is recorded
        ``unknown`` by the engine), or raise the ``GatewayError`` the whole answer amounts
        to (``raise_for_status`` does so for the statuses every API shares). ``now`` is
        the wall-clock time, for a ``Retry-After`` HTTP-date.
        """

    # -- the shared part ---------------------------------------------------------------

    def statistics(self) -> ApiStatistics:
        pool = self._transport
        return ApiStatistics(
            requests=self._requests,
            in_flight=self._in_flight,
            transport_errors=self._transport_errors,
            timeouts=self._timeouts,
            pool=pool.statistics() if isinstance(pool, ConnectionPool) else None,
        )

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        size = self._batch_size
        if len(messages) <= size:
            return await self._request(messages) if messages else []
        chunks = [messages[i : i + size] for i in range(0, len(messages), size)]
        answers: list[list[SendResult] | GatewayError] = [[] for _ in chunks]
        todo = iter(range(len(chunks)))

        async def worker() -> None:
            for i in todo:  # shared by the workers: each request is taken once
                try:
                    answers[i] = await self._request(chunks[i])
                except GatewayError as err:
                    answers[i] = err

        async with anyio.create_task_group() as tg:
            for _ in range(min(len(chunks), self._max_connections)):
                tg.start_soon(worker)
        return merge_results(chunks, answers)

    async def _request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One request for ``messages``: their results, or the error the answer amounts to."""
        body = self.encode(messages)
        progress = Progress()
        async with self._slots:
            self._requests += 1
            self._in_flight += 1
            try:
                with anyio.fail_after(self._timeout):
                    response = await self._transport.post(body, progress)
            except TimeoutError:
                self._timeouts += 1
                if progress.written is False:  # still connecting, or writing: it has none
                    raise TransientGatewayError(
                        f"{self.where}: could not send within {self._timeout:g} s",
                        unsent=True,
                    ) from None
                raise TransientGatewayError(
                    f"{self.where}: no answer within {self._timeout:g} s", ambiguous="timeout"
                ) from None
            except TransportError as err:
                self._transport_errors += 1
                if err.sent:
                    raise TransientGatewayError(
                        f"{self.where}: {err}", ambiguous="connection_lost"
                    ) from err
                raise TransientGatewayError(f"{self.where}: {err}", unsent=True) from err
            finally:
                self._in_flight -= 1
        return self.decode(response, messages, now=time.time())

    async def aclose(self) -> None:
        await self._transport.aclose()


def raise_for_status(
    response: Response,
    *,
    where: str,
    now: float,
    detail: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> None:
    """Return on a 2xx answer; raise what any other status means for the whole request.

    ``TransientGatewayError`` for 408, 425, 429 and 5xx (``unsent`` for 429 and 503,
    which say the request was not processed; ``retry_after`` as given, else from the
    ``Retry-After`` header); ``PermanentGatewayError`` for any other status, with
    ``code`` (else the status) as its code. ``detail``: the vendor's words for the error
    (else the start of the body).
    """
    status = response.status
    if 200 <= status < 300:
        return
    text = detail if detail else snippet(response.body)
    message = f"{where} answered HTTP {status}" + (f": {text}" if text else "")
    if status in TRANSIENT_4XX or 500 <= status < 600:
        if retry_after is None or not 0.0 <= retry_after < math.inf:
            from herald_http.wire import retry_after as header_wait

            retry_after = header_wait(response.headers.get("retry-after"), now)
        raise TransientGatewayError(message, retry_after=retry_after,
                                    unsent=status in (429, 503))
    raise PermanentGatewayError(message, code=code or str(status))


def snippet(body: bytes, limit: int = 200) -> str:
    """The start of ``body`` as one line of text, for an error message."""
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text + "..." if len(body) > limit else text


def merge_results(
    chunks: Sequence[Sequence[OutboundMessage]], answers: Sequence[list[SendResult] | GatewayError]
) -> list[SendResult]:
    """The results of a call that took several requests (see ``herald_http``'s docstring):
    one error for the whole call when every request failed the same way, else each failed
    request's messages as ``retry``, ``unknown`` or ``rejected``."""
    errors = [a for a in answers if isinstance(a, GatewayError)]
    if errors and len(errors) == len(answers):
        first = errors[0]
        also = f" (so did the other {len(errors) - 1} requests)" if len(errors) > 1 else ""
        transient = [e for e in errors if isinstance(e, TransientGatewayError)]
        reasons = {e.ambiguous for e in transient}
        if len(transient) == len(errors) and len(reasons) == 1:
            known = [e.retry_after for e in transient if e.retry_after is not None]
            raise TransientGatewayError(
                f"{first}{also}", retry_after=max(known) if known else None,
                unsent=all(e.unsent for e in transient), ambiguous=reasons.pop(),
            ) from first
        codes = {e.code for e in errors if isinstance(e, PermanentGatewayError)}
        if len(codes) == 1 and all(isinstance(e, PermanentGatewayError) for e in errors):
            raise PermanentGatewayError(f"{first}{also}", code=codes.pop()) from first
    results: list[SendResult] = []
    for chunk, answer in zip(chunks, answers, strict=True):
        if isinstance(answer, TransientGatewayError):
            if answer.ambiguous is not None:
                error = f"{answer.ambiguous}: {answer}"
                results += [SendResult(m.id, "unknown", error=error) for m in chunk]
            else:
                results += [
                    SendResult(m.id, "retry", error=str(answer), retry_after=answer.retry_after)
                    for m in chunk
                ]
        elif isinstance(answer, PermanentGatewayError):
            error = answer.code or str(answer)
            results += [SendResult(m.id, "rejected", error=error) for m in chunk]
        elif isinstance(answer, GatewayError):
            results += [SendResult(m.id, "rejected", error=str(answer)) for m in chunk]
        else:
            results += answer
    return results


def field_path(message: str) -> str:
    """A msgspec validation error of a vendor's JSON, ``"what - at `$.path`"``, as
    ``"path: what"``, a missing field named in the path (``body`` when at the top)."""
    what, sep, path = message.rpartition(" - at `")
    path = path.rstrip("`").removeprefix("$").lstrip(".") if sep else ""
    if not sep:
        what = message
    missing = "Object missing required field `"
    if what.startswith(missing):
        field = what[len(missing):].rstrip("`")
        return f"{path}.{field}: required field missing" if path else \
            f"{field}: required field missing"
    return f"{path or 'body'}: {what}"
