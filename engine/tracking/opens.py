"""An email's open pixel: its URL, its code, what a fetch of it is, and the open writer.

Each tracked email carries ``<img src="{base}/o/{code}">``
(``engine.core.email_message``, which puts it before ``</body>``): the code is
``engine.core.codes.Codec(secret, b"open")`` of ``(anchor, seq - seq_base)``, the anchor
being the run's first link row for that seq_base, exactly as the unsubscribe codes are
(``engine.core.links``). ``OpenPixel`` (``engine.core.email_message``) makes a run's
URLs (a prefix once, a suffix per message); ``OpenCodes`` reads one back to ``(run id,
seq)``; the route is ``GET /o/{code}`` (``routes.open_pixel``), which answers ``PIXEL``
whatever the code.

**What a fetch is.** A fetch of the pixel is the recipient's open unless it is

- a **prefetch** (``is_prefetch``): Apple Mail Privacy Protection loads every image of a
  message when it reaches the device, opened or not, through Apple's proxies: from
  Apple's network ``17.0.0.0/8`` with the bare user agent ``Mozilla/5.0``. It is kept,
  flagged ``prefetch``, never counted as an open. Other image proxies (Gmail's
  ``GoogleImageProxy``, ``YahooMailProxy``) fetch when the person opens the message:
  their fetch is an open;
- a **bot** (``BotDetector.is_open_bot``): a crawler, a security scanner, no user agent,
  or a ``HEAD`` (no mail client asks for an image so). Kept, never counted.

**Writes.** Opens are written in batches by ``OpenWriter``, as clicks are by
``ClickWriter`` (``clicks.py``: the same bounds, intervals and last write at a stop),
through ``TrackingStore.add_opens``; an app run without its lifespan writes each open at
once.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache
from typing import Final

from engine.core.codes import Codec
from engine.core.email_message import OpenPixel
from engine.store.base import LinkRow, Open, TrackingStore
from engine.tracking.clicks import BatchWriter, WriterStats
from engine.tracking.lru import Lru

__all__ = [
    "OPEN",
    "PIXEL",
    "PIXEL_HEADERS",
    "PREFETCH_AGENTS",
    "PREFETCH_NETWORKS",
    "OpenCodes",
    "OpenPixel",
    "OpenStats",
    "OpenWriter",
    "is_prefetch",
    "open_pixel_url",
]

logger = logging.getLogger(__name__)

#: The purpose of the open pixel's codes (``engine.core.codes.Codec``).
OPEN: Final = b"open"

#: A 1x1 transparent GIF (43 bytes).
PIXEL: Final = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01"
                b"\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
#: Headers of every answer of the pixel: never kept by a cache, so each open is a fetch.
PIXEL_HEADERS: Final = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}

#: Where Apple Mail Privacy Protection's proxies fetch from: Apple's own network.
PREFETCH_NETWORKS: Final = (ipaddress.ip_network("17.0.0.0/8"),)
#: The user agents they fetch with: generic, no browser or device in them.
PREFETCH_AGENTS: Final = frozenset({"", "Mozilla/5.0"})


def is_prefetch(ip: str | None, user_agent: str | None) -> bool:
    """Whether a fetch of the pixel from ``ip`` with ``user_agent`` is a mail privacy
    proxy's prefetch rather than an open: Apple Mail Privacy Protection's, from
    ``PREFETCH_NETWORKS`` with a generic agent (``PREFETCH_AGENTS``). A person on Apple's
    network with a real browser or mail client is an open; so is Gmail's image proxy."""
    if not ip or (user_agent or "").strip() not in PREFETCH_AGENTS:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in PREFETCH_NETWORKS)


@lru_cache(maxsize=8)
def _codec(secret: bytes) -> Codec:
    return Codec(secret, OPEN)


def open_pixel_url(base: str, secret: bytes, anchor: int, seq: int, seq_base: int = 0) -> str:
    """The pixel URL of message ``seq`` (``OpenPixel`` is the cheaper way for a whole run);
    ``ValueError`` when the anchor or the offset is out of a code's range."""
    url = OpenPixel(base, secret, anchor, seq_base).url(seq)
    if url is None:
        raise ValueError(f"seq: {seq} is out of the codes' range from seq_base {seq_base}")
    return url


class OpenCodes:
    """Reads pixel codes back to ``(run id, seq)`` with the store's secret (read once);
    the anchor link rows are kept in an LRU (a row never changes once made)."""

    def __init__(self, store: TrackingStore, *, links: int = 4096) -> None:
        self._store = store
        self._codec: Codec | None = None
        self._links: Lru[int, LinkRow] = Lru(links)

    async def decode(self, code: str) -> tuple[int, int] | None:
        """``(run id, seq)`` of pixel code ``code``; None for a malformed code or one of
        no link."""
        codec = self._codec
        if codec is None:
            codec = self._codec = _codec(await self._store.tracking_secret())
        pair = codec.decode(code)
        if pair is None:
            return None
        anchor, offset = pair
        link = self._links.get(anchor)
        if link is None:
            link = await self._store.link(anchor)
            if link is None:
                return None  # maybe made later (another worker's run): asked again then
            self._links.put(anchor, link)
        return link.run_id, link.seq_base + offset


#: The open writer's snapshot.
OpenStats = WriterStats


class OpenWriter(BatchWriter[Open]):
    """Buffers opens and writes them to ``store`` in batches of ``transaction``, every
    ``interval`` seconds or as soon as ``batch`` wait; at most ``capacity`` wait (more are
    dropped and counted). The same machinery as ``ClickWriter``'s (``clicks.py``)."""

    what = "opens"

    def __init__(self, store: TrackingStore, *, interval: float = 0.5, batch: int = 500,
                 transaction: int = 100, capacity: int = 100_000) -> None:
        super().__init__(store.add_opens, interval=interval, batch=batch,
                         transaction=transaction, capacity=capacity)
