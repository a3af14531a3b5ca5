"""A careful fetcher for external images: HTTP(S) only, hosts that resolve to loopback,
private, link-local or otherwise non-global addresses are refused unless allowed by name,
every redirect hop is checked the same way, the body is capped, and only image content
types are taken. The caller bounds the time (a cancel scope around ``fetch``).

A name is resolved here and again by httpx when it connects; a DNS answer that changes in
between (rebinding) is not caught. Pinning the connection to the checked address is left
for a custom transport.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from engine.errors import InputError
from engine.gallery.images import MAX_IMAGE_BYTES

__all__ = ["FetchError", "Fetched", "SafeFetcher"]

_IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/gif"}
MAX_REDIRECTS = 5


class FetchError(InputError):
    """An external image could not or may not be fetched; the message says why."""


@dataclass(frozen=True)
class Fetched:
    url: str
    content_type: str
    data: bytes


class SafeFetcher:
    """``async with SafeFetcher(allow) as f: await f.fetch(url)``."""

    def __init__(self, allow: Collection[str] = (), *, max_bytes: int = MAX_IMAGE_BYTES,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.allow = {h.lower().strip("[]") for h in allow}
        self.max_bytes = max_bytes
        # No proxies or netrc from the environment, no automatic redirects.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                         transport=transport,
                                         headers={"User-Agent": "Herald-gallery/1",
                                                  "Accept": "image/png,image/jpeg,image/gif"})

    async def __aenter__(self) -> SafeFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def check_host(self, url: str) -> None:
        """FetchError unless ``url`` is http(s) on an allowed or globally routed host."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"only http and https URLs are fetched, not {parts.scheme!r}")
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchError("the URL has no host")
        if parts.username or parts.password:
            raise FetchError("URLs with credentials are not fetched")
        if host in self.allow:
            return
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await anyio.getaddrinfo(host, parts.port or 443,
                                                type=socket.SOCK_STREAM)
            except OSError as err:
                raise FetchError(f"{host}: cannot resolve ({err})") from None
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0])
                         for info in infos]
        for address in addresses:
            if not address.is_global or address.is_multicast:
                raise FetchError(f"{host} resolves to {address}, a loopback, private or"
                                 " link-local address; allow it in [gallery] allow_fetch_from")

    async def fetch(self, url: str) -> Fetched:
        """The image at ``url``, following up to 5 redirects, each one checked."""
        for _ in range(MAX_REDIRECTS + 1):
            await self.check_host(url)
            try:
                async with self._client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"answered HTTP {response.status_code}")
                    ctype = response.headers.get("content-type", "").split(";")[0]
                    ctype = ctype.strip().lower()
                    if ctype not in _IMAGE_TYPES:
                        raise FetchError(f"not an image: content type {ctype or 'missing'!r}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self.max_bytes:
                        raise FetchError(f"{declared} bytes is over the limit of"
                                         f" {self.max_bytes}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise FetchError(f"over the limit of {self.max_bytes} bytes")
                    return Fetched(url, ctype, bytes(body))
            except httpx.HTTPError as err:
                raise FetchError(f"cannot fetch: {err or type(err).__name__}") from None
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")
