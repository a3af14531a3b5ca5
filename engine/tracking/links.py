"""``Resolver``: a short link's or an unsubscribe link's code -> what it stands for.

Codes are derived, not stored (``engine.core.codes``): decoding one is arithmetic under the
store's tracking secret, read once. Both kinds decode to ``(link id, offset)``: the
message's seq is ``offset`` past the link row's ``seq_base`` (codes have 29 bits, a cluster
chunk's seqs more), and an unsubscribe code's link (its run's first for that seq_base)
says the run. A link row never changes once made, nor does a data
slot's URL once its message is reserved, so both are kept in memory (LRUs) and a redirect
of a link seen before touches no database; so is the URL made ready for a ``Location``
header. A code whose link is unknown is asked about every time: the link may be made
later (another worker's new run).
"""

from __future__ import annotations

from typing import NamedTuple

from engine.core.codes import Codec
from engine.store.base import LinkRow, TrackingStore
from engine.tracking.lru import Lru

__all__ = ["Resolver", "Target", "location"]


class Target(NamedTuple):
    """Where a short link leads, for message ``seq``."""

    link_id: int
    seq: int
    url: str
    #: ``location(url)``, encoded: the ``Location`` header's value.
    location: bytes


_UNSAFE = frozenset(range(0x21)) | {0x7F}


def location(url: str) -> str:
    """``url`` fit for a ``Location`` header: as stored, but for what a header cannot carry
    (characters past ASCII, spaces and controls), which is percent-encoded as UTF-8, as a
    browser would. Everything else, the query string included, is left exactly as it is."""
    if url.isascii() and not any(ord(c) in _UNSAFE for c in url):
        return url
    out = []
    for c in url:
        if ord(c) < 0x80 and ord(c) not in _UNSAFE:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _header(url: str) -> bytes:
    return location(url).encode("ascii")


class Resolver:
    """Decodes codes with the store's secret and finds their links (cached)."""

    def __init__(self, store: TrackingStore, *, links: int = 65_536, urls: int = 65_536) -> None:
        self._store = store
        self._link_codec: Codec | None = None
        self._unsubscribe_codec: Codec | None = None
        # a link row, with its URL's Location for a template link
        self._links: Lru[int, tuple[LinkRow, bytes]] = Lru(links)
        self._urls: Lru[tuple[int, int], tuple[str, bytes]] = Lru(urls)

    async def _codecs(self) -> tuple[Codec, Codec]:
        if self._link_codec is None or self._unsubscribe_codec is None:
            secret = await self._store.tracking_secret()
            self._link_codec = Codec(secret, b"link")
            self._unsubscribe_codec = Codec(secret, b"unsubscribe")
        return self._link_codec, self._unsubscribe_codec

    async def _link(self, link_id: int) -> tuple[LinkRow, bytes] | None:
        known = self._links.get(link_id)
        if known is None:
            link = await self._store.link(link_id)
            if link is None:
                return None
            known = (link, _header(link.url) if link.url is not None else b"")
            self._links.put(link_id, known)
        return known

    async def target(self, code: str) -> Target | None:
        """Where the short link ``code`` leads, or None (malformed, or no such link)."""
        codec = self._link_codec or (await self._codecs())[0]
        pair = codec.decode(code)
        if pair is None:
            return None
        link_id, offset = pair
        known = await self._link(link_id)
        if known is None:
            return None
        link, header = known
        seq = link.seq_base + offset
        if link.url is not None:
            return Target(link_id, seq, link.url, header)
        slot = self._urls.get((link_id, seq))
        if slot is None:
            url = await self._store.data_link_url(link_id, seq)
            if url is None:
                return None
            slot = (url, _header(url))
            self._urls.put((link_id, seq), slot)
        return Target(link_id, seq, *slot)

    async def unsubscribe(self, code: str) -> tuple[int, int] | None:
        """``(run id, seq)`` of the unsubscribe code ``code``, or None (malformed, or no
        such link)."""
        codec = self._unsubscribe_codec or (await self._codecs())[1]
        pair = codec.decode(code)
        if pair is None:
            return None
        known = await self._link(pair[0])
        if known is None:
            return None
        link = known[0]
        return link.run_id, link.seq_base + pair[1]
