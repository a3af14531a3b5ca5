"""Localising a template: every external image it references is downloaded into the
gallery (once per distinct content) and each reference rewritten to the image's tracking
URL; every other byte of the template stays as it was.

References are found by ``image_references`` (plain code, no I/O): ``src`` and
``background`` attributes and ``srcset`` candidates of HTML tags, CSS ``url(...)``, and any
other http(s) URL whose path ends in ``.png``, ``.jpg``, ``.jpeg`` or ``.gif`` (an SMS
text). URLs already on the tracking domain are left alone.
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
from engine.gallery.images import check_image

__all__ = ["LocalizeError", "LocalizeResult", "Reference", "image_references", "localize"]

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


async def localize(template: str, gallery: Gallery, fetcher: SafeFetcher, *, now: float,
                   fetch_limit: float, directory_id: int | None = None,
                   tags: tuple[str, ...] = ()) -> LocalizeResult:
    """Download the template's external images and point their references at the gallery.

    An image whose content is already in the gallery is not stored twice. A reference that
    cannot be fetched (or takes over ``fetch_limit`` seconds) is left as it is and
    reported in ``errors``.
    """
    result = LocalizeResult(template)
    refs = image_references(template, gallery.is_own_url)
    by_url: dict[str, str | None] = {}
    for ref in refs:
        if ref.url in by_url:
            continue
        by_url[ref.url] = None
        try:
            with anyio.fail_after(fetch_limit):
                fetched = await fetcher.fetch(ref.url)
            info = await anyio.to_thread.run_sync(check_image, fetched.data)
        except TimeoutError:
            result.errors.append(LocalizeError(ref.url, f"took longer than {fetch_limit:g} s"))
            continue
        except InputError as err:
            result.errors.append(LocalizeError(ref.url, str(err)))
            continue
        image = gallery.find_by_digest(digest_of(fetched.data))
        if image is None:
            name = urlsplit(ref.url).path.rsplit("/", 1)[-1] or "image"
            image = gallery.add_image(name[:244], fetched.data, info, now=now,
                                      directory_id=directory_id, tags=tags)
        if all(i.id != image.id for i in result.images):
            result.images.append(image)
        by_url[ref.url] = gallery.url(image)
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
