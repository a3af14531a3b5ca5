"""A careful fetcher for external images: HTTP(S) only, hosts that resolve to loopback,
private, link-local or otherwise non-global addresses are refused unless allowed by name,
every redirect hop is checked the same way, the body is capped, and only image content
types are taken. The caller bounds the time (a cancel scope around ``fetch``).

A name is resolved here and again by httpx when it connects; a DNS answer that changes in
between (rebinding) is not caught. Pinning the connection to the checked address is left
for a custom transport.

An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``) is judged as that
IPv4 address. Errors name the URL and never what its host resolved to.
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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_HINT = ("a loopback, private or link-local address; allow the host in [gallery]"
               " allow_fetch_from to fetch it")
#: What a failed transfer says, by httpx's exception (its own text may name addresses).
_TRANSPORT_ERRORS: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.TimeoutException, "timed out"),
    (httpx.ConnectError, "cannot connect"),
    (httpx.RemoteProtocolError, "the server broke the HTTP protocol"),
    (httpx.ReadError, "the connection failed while reading"),
    (httpx.WriteError, "the connection failed while writing"),
    (httpx.UnsupportedProtocol, "unsupported protocol"),
)


class FetchError(InputError):
    """An external image could not or may not be fetched; the message says why."""


def embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address
                  ) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if address in _NAT64 or (packed >> 32 == 0 and packed > 1):  # 64:ff9b::/96, ::/96
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` (and any IPv4 address inside it) is globally routed unicast."""
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not address.is_multicast


def _transport_error(err: httpx.HTTPError) -> str:
    for kind, text in _TRANSPORT_ERRORS:
        if isinstance(err, kind):
            return text
    return type(err).__name__


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
        """FetchError unless ``url`` is http(s) on an allowed or globally routed host (a
        redirect's target is named in the error; what the host resolved to never is)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"only http and https URLs are fetched, not {parts.scheme!r}")
        try:
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            raise FetchError("the URL's host or port is malformed") from None
        if not host:
            raise FetchError("the URL has no host")
        if parts.username or parts.password:
            raise FetchError("URLs with credentials are not fetched")
        try:
            literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = (
                ipaddress.ip_address(host))
        except ValueError:
            literal = None
        if literal is not None:
            inner = embedded_ipv4(literal)
            if host in self.allow or (inner is not None and str(inner) in self.allow):
                return
            if not is_public(literal):
                raise FetchError(f"{host} is {_LOCAL_HINT}")
            return
        if host in self.allow:
            return
        try:
            infos = await anyio.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise FetchError(f"{host}: the name does not resolve") from None
        for info in infos:
            if not is_public(ipaddress.ip_address(str(info[4][0]).split("%")[0])):
                raise FetchError(f"{host} resolves to {_LOCAL_HINT}")

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
                        raise FetchError(f"{url} answered HTTP {response.status_code}")
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
                raise FetchError(f"cannot fetch {url}: {_transport_error(err)}") from None
        raise FetchError(f"more than {MAX_REDIRECTS} redirects")
