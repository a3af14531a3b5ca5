"""The ``http`` transport of action hooks: each batch is one ``POST`` of a JSON array.

It runs on the http driver's stack (``herald_http.pool.ConnectionPool``: h11 on anyio,
keep-alive connections), with the hook's ``headers`` and ``Content-Type:
application/json``. With a ``secret``, every request carries

    X-Herald-Signature: t=UNIX,v1=HEX

where HEX is HMAC-SHA256(secret, f"{t}.".encode() + body) in hex: the consumer checks it
and the timestamp's age (``docs/hooks.md``). A batch is delivered when the answer is a 2xx
and, if ``success`` is set, that regex is found in its body; anything else, or no answer
within ``timeout``, raises ``DeliveryError``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence

import anyio

from engine.config import HookConfig
from engine.errors import redact
from engine.events.transports.base import DeliveryError, Transport
from herald_http.http1 import check_header, split_url
from herald_http.pool import ConnectionPool, TransportError

__all__ = ["SIGNATURE_HEADER", "HttpTransport", "sign"]

SIGNATURE_HEADER = "X-Herald-Signature"
_SIGNATURE = SIGNATURE_HEADER.encode("ascii")
#: How much of an answer's body an error quotes.
_QUOTE = 200


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Herald-Signature`` value of ``body`` sent at ``timestamp``."""
    prefix = b"%d." % timestamp
    digest = hmac.new(secret, prefix + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class HttpTransport(Transport):
    """POSTs each batch to the hook's ``url``; see the module docstring.

    ``clock`` (seconds since the epoch) gives the signature's timestamp."""

    @classmethod
    def problems(cls, config: HookConfig) -> list[tuple[str, str]]:
        found = []
        try:
            split_url(config.url)
        except ValueError as err:
            found.append(("url", str(err)))
        for header, value in config.headers.items():
            try:
                check_header(header, value)
            except ValueError as err:
                found.append((f"headers.{header}", str(err)))
        return found

    def __init__(self, name: str, config: HookConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, config)
        origin = split_url(config.url)
        for header, value in config.headers.items():
            check_header(header, value)
        self._where = redact(config.url)
        self._pool = ConnectionPool(origin, dict(config.headers))
        self._success = re.compile(config.success) if config.success else None
        self._secret = config.secret.encode() if config.secret else None
        self._clock = clock

    async def send(self, messages: Sequence[bytes]) -> None:
        if not messages:  # nothing to deliver: no request
            return
        body = b"[" + b",".join(messages) + b"]"
        headers: list[tuple[bytes, bytes]] = []
        if self._secret is not None:
            value = sign(self._secret, int(self._clock()), body)
            headers.append((_SIGNATURE, value.encode("ascii")))
        with anyio.move_on_after(self.config.timeout) as scope:
            try:
                response = await self._pool.post(body, headers=headers)
            except TransportError as err:
                raise DeliveryError(f"POST {self._where}: {err}") from err
        if scope.cancelled_caught:
            raise DeliveryError(f"POST {self._where}: no answer within"
                                f" {self.config.timeout:g} s")
        if not 200 <= response.status < 300:
            raise DeliveryError(f"POST {self._where}: HTTP {response.status}"
                                f"{_quote(response.body)}")
        if self._success is not None and not self._success.search(
                response.body.decode("utf-8", "replace")):
            raise DeliveryError(f"POST {self._where}: HTTP {response.status}, but the"
                                f" answer does not match success {self._success.pattern!r}"
                                f"{_quote(response.body)}")

    async def aclose(self) -> None:
        await self._pool.aclose()


def _quote(body: bytes) -> str:
    text = body[:_QUOTE].decode("utf-8", "replace").strip()
    if not text:
        return ""
    return f": {text!r}" + ("..." if len(body) > _QUOTE else "")
