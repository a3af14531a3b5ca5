"""Localising a template: every external image it references is downloaded into the
gallery (once per distinct content) and each reference rewritten to the image's tracking
URL; every other byte of the template stays as it was.

References are found by ``image_references`` (plain code, no I/O): ``src`` and
``background`` attributes and ``srcset`` candidates of HTML tags, CSS ``url(...)``, and any
other http(s) URL whose path ends in ``.png``, ``.jpg``, ``.jpeg`` or ``.gif`` (an SMS
text). URLs already on the tracking domain are left alone.

A call is bounded: at most ``max_urls`` distinct URLs (more: ``TooManyUrls`` before any is
fetched), ``fetch_limit`` seconds for each and ``time_limit`` seconds in all; the URLs not
reached in time are reported in ``errors`` and left as they were.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio

from engine.errors import InputError
from engine.gallery.blobs import digest_of
from engine.gallery.catalog import Gallery, Image
from engine.gallery.fetch import SafeFetcher
from engine.gallery.images import Decoder

__all__ = ["LocalizeError", "LocalizeResult", "Reference", "TooManyUrls", "image_references",
           "localize"]

_URL = r"https?://[^\s\"'<>()\\]+"
_ATTR = re.compile(r"""\b(?:src|background|data-src)\s*=\s*(["']?)(?P<url>""" + _URL + ")",
                   re.I)
_SRCSET = re.compile(r"""\bsrcset\s*=\s*(["'])(?P<value>.*?)\1""", re.I | re.S)
_CSS = re.compile(r"""url\(\s*(["']?)(?P<url>""" + _URL + r")\1\s*\)", re.I)
_BARE = re.compile(_URL)
_IMAGE_PATH = re.compile(r"\.(?:png|jpe?g|gif)$", re.I)
#: Punctuation that ends a sentence rather than a URL in plain text.
_TRAILING = ".,;:!?"


@dataclass(frozen=True)
class Reference:
    """``template[start:end]`` is a URL (as written: ``&amp;`` stays escaped in HTML)."""

    start: int
    end: int
    raw: str

    @property
    def url(self) -> str:
        return html.unescape(self.raw)


class TooManyUrls(InputError):
    """The template references more external images than ``[gallery] localize_max_urls``."""


@dataclass
class LocalizeError:
    url: str
    error: str


@dataclass
class LocalizeResult:
    template: str
    images: list[Image] = field(default_factory=list)
    errors: list[LocalizeError] = field(default_factory=list)


def image_references(template: str, is_own: Callable[[str], bool] = lambda _: False
                     ) -> list[Reference]:
    """The external image URLs of ``template``, in order, without overlaps."""
    found: dict[int, Reference] = {}

    def add(start: int, raw: str) -> None:
        raw = raw.rstrip(_TRAILING)
        if raw and not is_own(raw):
            found.setdefault(start, Reference(start, start + len(raw), raw))

    for m in _ATTR.finditer(template):
        add(m.start("url"), m["url"])
    for m in _CSS.finditer(template):
        add(m.start("url"), m["url"])
    for m in _SRCSET.finditer(template):
        for u in _BARE.finditer(m["value"]):
            add(m.start("value") + u.start(), u.group().rstrip(","))
    for m in _BARE.finditer(template):
        if m.start() not in found and _IMAGE_PATH.search(urlsplit(
                m.group().rstrip(_TRAILING)).path):
            add(m.start(), m.group())
    return sorted(found.values(), key=lambda r: r.start)


async def localize(template: str, gallery: Gallery, fetcher: SafeFetcher, decoder: Decoder,
                   *, now: float, fetch_limit: float, time_limit: float, max_urls: int,
                   directory_id: int | None = None,
                   tags: tuple[str, ...] = ()) -> LocalizeResult:
    """Download the template's external images and point their references at the gallery.

    An image whose content is already in the gallery is not stored twice. A reference that
    cannot be fetched (or takes over ``fetch_limit`` seconds, or is not reached within
    ``time_limit`` seconds of the call) is left as it is and reported in ``errors``.
    TooManyUrls when the template has more than ``max_urls`` distinct external images.
    """
    result = LocalizeResult(template)
    refs = image_references(template, gallery.is_own_url)
    urls = list(dict.fromkeys(ref.url for ref in refs))
    if len(urls) > max_urls:
        raise TooManyUrls(f"the template references {len(urls)} external images, over"
                          f" [gallery] localize_max_urls = {max_urls}")
    by_url: dict[str, str | None] = {}
    with anyio.move_on_after(time_limit):
        for url in urls:
            by_url[url] = None
            try:
                with anyio.fail_after(fetch_limit):
                    fetched = await fetcher.fetch(url)
                info = await decoder.check(fetched.data)
            except TimeoutError:
                result.errors.append(LocalizeError(url, f"took longer than {fetch_limit:g} s"
                                                   " ([gallery] fetch_timeout)"))
                continue
            except InputError as err:
                result.errors.append(LocalizeError(url, str(err)))
                continue
            image = await gallery.find_by_digest(digest_of(fetched.data))
            if image is None:
                name = urlsplit(url).path.rsplit("/", 1)[-1] or "image"
                image = await gallery.add_image(name[:244], fetched.data, info, now=now,
                                          directory_id=directory_id, tags=tags)
            if all(i.id != image.id for i in result.images):
                result.images.append(image)
            by_url[url] = gallery.url(image)
    late = f"not fetched: the call ran out of its {time_limit:g} s ([gallery] localize_timeout)"
    reported = {e.url for e in result.errors}
    for url in urls:
        if by_url.get(url) is None and url not in reported:
            result.errors.append(LocalizeError(url, late))
    pieces: list[str] = []
    at = 0
    for ref in refs:
        new = by_url.get(ref.url)
        if new is None:
            continue
        pieces += [template[at:ref.start], html.escape(new) if "&amp;" in ref.raw else new]
        at = ref.end
    pieces.append(template[at:])
    result.template = "".join(pieces)
    return result
