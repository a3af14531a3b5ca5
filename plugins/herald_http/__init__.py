"""The ``http`` driver: submits over HTTP/1.1 in the herald-json wire format.

``docs/wire-format.md`` specifies the format. Options (``[gateways.NAME]``)::

    driver = "http"
    url = "https://sms.example.com/v1/send"   # required; http:// or https://
    batch_size = 100         # messages per request; 1 = one request per message
    max_connections = 64     # requests in flight at once (and so connections), all calls
    timeout = 10.0           # seconds for one request, connect to last byte; 0 = none
    headers = { Authorization = "Bearer ..." }   # sent with every request
    idempotent = false       # true only if the gateway dedupes by message id

Capabilities: ``max_batch = batch_size * max_connections`` (one wave of concurrent
requests: with ``batch_size = 1`` the engine hands over up to ``max_connections`` messages
and they go out as that many concurrent single-message requests), ``supports_dlr``, and
``idempotent`` as configured. It parses herald-json receipts and inbound messages (STOP
replies, ``wire.parse_inbound``).

Outcomes: a request's per-message results come back as they are. A request is written at
most once: the driver never sends it again by itself, and says what a failure means with
``TransientGatewayError`` (``docs/wire-format.md``, "No answer"): ``unsent=True`` when the
gateway cannot hold it (no connection; ``timeout`` ran out or the connection broke before
the whole request was written), ``ambiguous="timeout"`` when no complete answer came in
time after it was written, ``ambiguous="connection_lost"`` when after that the connection
broke, closed or carried bytes that are not HTTP; an HTTP answer means what ``wire.py``
says. When a call needed several requests and only some failed, the messages of a failed
one come back ``retry`` (transient, not ambiguous), ``unknown`` (ambiguous; ``error``
starts with the reason: ``"timeout: gateway 'x' at http://...: no answer within 3 s"``) or
``rejected`` (permanent, with the code); when all of them failed the same way (all
transient and none ambiguous, all with one ambiguous reason, or all permanent with one
code) the call raises that error, as a single request's failure does. Transport errors
and timeouts never escape as anything but ``TransientGatewayError``.

Client stack (``api.ApiDriver``, shared by the vendors' drivers): h11 (sans-I/O HTTP/1.1,
``pool.py`` drives it) on anyio streams, one code path for asyncio, uvloop and trio. Client
CPU only, the simulator in another process, on this shared 2-core machine, Python 3.11.
Batch: calls of 500 messages, one request each, µs of CPU per message (of which 0.35 is
herald-json encoding and decoding, the same for every stack). Single: calls of 64 messages
with ``batch_size = 1``, 64 concurrent requests, µs per request. The two herald rows: the
old and the new client alternately in one process against one simulator (median of 4 rounds
of 1 s; the machine is noisy, so compare within a table); httpx: ``python
bench/http_driver.py --backends uvloop asyncio trio --seconds 3``::

    stack                           uvloop          asyncio          trio
                                 batch  single   batch  single   batch  single
    herald (h11 on anyio)         0.86     144    1.08     174    1.18     140
    hand-written parser (before)  0.66      78    1.02     108    0.78      85
    httpx 0.28 (pool of 64)       2.85    6749    4.66    8524    2.16    5796

and, from the run that chose the stack (same bench, another day)::

    anyio + h11 (same pool)       0.89     145    1.14     174    1.01     173
    aiohttp 3.14                  0.94     148    1.11     162       -       -
    httpx 0.28 over aiohttp       1.79     347    1.67     343       -       -

Goals: batch <= 1.5 µs per message, single <= 300 µs per request on uvloop, trio working.
h11 meets them: its state machine costs about 60 µs per request-response cycle over the
hand-written parser it replaced, which did not justify a parser of our own to keep
correct (framing, keep-alive, the smuggling cases). Hence:

- httpx misses both goals: its pool costs milliseconds per request once 64 are in flight
  (encode/httpx#3215), and even its batch path is over 1.5 µs per message.
- aiohttp meets them but runs on asyncio only; pairing it with httpx on trio would mean
  two code paths to keep correct and trio at milliseconds per request. Over aiohttp,
  httpx's API alone costs about 200 µs per request.
- Ours is one code path for all three loops. It supports keep-alive with reuse (most
  recently used first, idle ones dropped after 4 s, one the server closed meanwhile
  detected before anything is written to it), bodies framed by Content-Length, chunked
  transfer-encoding (with trailers) or the end of the connection, interim 1xx answers,
  and https (system CAs, SNI, ALPN "http/1.1"). It does not do what no gateway API needs:
  proxies (the environment's ``HTTPS_PROXY`` is ignored), redirects, compression, HTTP/2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import msgspec

from engine.drivers import (
    Capabilities,
    Driver,
    DriverConfig,
    Inbound,
    OutboundMessage,
    Receipt,
    SendResult,
)
from engine.hookspecs import hookimpl
from herald_http.api import ApiDriver, ApiStatistics
from herald_http.http1 import Response, check_header, split_url
from herald_http.pool import Progress, Transport, TransportError
from herald_http.wire import encode_messages, parse_inbound, parse_receipts, read_answer

__all__ = [
    "HttpConfig",
    "HttpDriver",
    "HttpStatistics",
    "Progress",
    "Response",
    "Transport",
    "TransportError",
]

#: What ``HttpDriver.statistics()`` returns (the shared stack's snapshot).
HttpStatistics = ApiStatistics


class HttpConfig(DriverConfig):
    """Options of the ``http`` driver (see the module docstring)."""

    #: Where to POST herald-json: ``http://`` or ``https://``, with path and query.
    url: str
    #: Messages per request; 1 sends one request per message.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    #: Requests in flight at once over all calls (so also open connections).
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    #: Seconds one request may take, from connecting to the last byte; 0 = no limit.
    timeout: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 10.0
    #: Headers sent with every request (``Authorization``, an API key, ...).
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    #: The gateway dedupes by message id, so sending a message again never sends it twice.
    idempotent: bool = False

    def __post_init__(self) -> None:
        split_url(self.url)
        for name, value in self.headers.items():
            check_header(name, value)


class HttpDriver(ApiDriver):
    """Submits batches to a herald-json gateway (see the module docstring).

    ``transport`` replaces the bundled HTTP client (the benchmark compares others with it).
    """

    name = "http"
    Config = HttpConfig
    capabilities = Capabilities(max_batch=100 * 64, supports_dlr=True)

    def __init__(
        self,
        config: HttpConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            config, gateway=gateway, base_dir=base_dir, url=config.url,
            headers=config.headers, batch_size=config.batch_size,
            max_connections=config.max_connections, timeout=config.timeout,
            idempotent=config.idempotent, transport=transport,
        )

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        return encode_messages(messages)

    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        return read_answer(
            response.status, response.headers, response.body, messages,
            idempotent=self._idempotent, now=now, where=self.where,
        )

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The receipts of a herald-json callback (``{"receipts": [...]}``)."""
        return parse_receipts(body)

    def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
        """The messages of a herald-json inbound callback (``{"inbound": [...]}``)."""
        return parse_inbound(body)


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [HttpDriver]
