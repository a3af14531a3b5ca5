"""Find http(s) URLs in message text, and shorten them to a run's tracked links.

A URL starts at ``http://`` or ``https://`` (any case, not glued to a preceding letter or
digit) and runs to the next whitespace, quote or angle bracket. Trailing punctuation that
usually ends the sentence rather than the URL is left out: ``. , ; : ! ? …`` and closing
quotes, plus a closing bracket that has no opening partner inside the URL, so
``(see https://x.ru/a)`` yields ``https://x.ru/a`` but ``https://w.org/Foo_(bar)`` stays whole.

:class:`Shortener` rewrites one run's rendered texts where its resource has a tracking
domain (``Config.tracking_base``), per message and without I/O:

- a *closed* template URL (wholly inside literal text, see ``Template.closed_urls``) becomes
  ``{base}/{code}`` with the code of ``(its link id, seq - seq_base)``: derived, nothing
  written;
- any other URL (one that came from data, or a literal one that data continues) takes the
  next of the run's data slots, ``{base}/{code of (slot id, seq - seq_base)}``, and is
  handed back as ``(slot id, seq, url)`` for the journal to keep
  (``JournalStore.reserve(links=...)``). Past the slots, a URL stays as written;
- ``{unsubscribe}`` and ``{globalunsubscribe}`` rendered a mark (the template functions
  read ``resource.unsubscribe_link`` and ``resource.globalunsubscribe_link``, which the
  Preparer sets to :data:`UNSUBSCRIBE_MARK` and :data:`GLOBAL_UNSUBSCRIBE_MARK`): it becomes
  ``{base}/u/{code}`` or ``{base}/ua/{code}``, the code of ``(anchor, seq - seq_base)``
  under the purpose ``unsubscribe``, the anchor being the first of the link rows (which
  say the run). These are not click links.

A code's second number has 29 bits (``engine.core.codes``), and a cluster chunk's seqs
start at ``k * 2**32 + 1``: so the rows a shortener gets are those of its ``seq_base``
(``LinkRow.seq_base``, a multiple of ``MAX_VALUE``), and codes carry the offset. A message
whose offset is out of a code's range keeps its URLs as written and the static
unsubscribe link.

Which texts need the slow path (``find_urls``) is known cheaply: a text whose count of
``://`` equals what its template's literal text always holds (``Template.url_marks``) has
no URL from data, so its closed URLs are replaced with one ``str.replace`` each.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, Protocol

from engine.core.codes import MAX_VALUE, Codec

__all__ = [
    "DATA_SLOTS",
    "GLOBAL_UNSUBSCRIBE_MARK",
    "UNSUBSCRIBE_MARK",
    "DataLink",
    "LinkTarget",
    "Shortener",
    "find_urls",
    "link_request",
    "literal_urls",
]

_URL = re.compile(r"(?<![^\W_])https?://[^\s<>\"'`«»“”„]+", re.IGNORECASE)
_TRAILING = frozenset(".,;:!?…'\"’”»")
_CLOSERS = {")": "(", "]": "[", "}": "{"}

#: Data slots a run asks for: URLs from data a message may have shortened.
DATA_SLOTS: Final = 4
#: What ``{unsubscribe}`` renders where there is a tracking domain, replaced per message.
#: Unit separators: whitespace to ``find_urls`` (so no URL runs into it), unchanged by
#: ``upper``/``lower``, and never in a text of its own.
UNSUBSCRIBE_MARK: Final = "\x1f1\x1f"
#: The same for ``{globalunsubscribe}``.
GLOBAL_UNSUBSCRIBE_MARK: Final = "\x1f2\x1f"

#: ``(slot link id, seq, url)`` of a URL from data in message ``seq``.
DataLink = tuple[int, int, str]


def _trim(url: str) -> str:
    while url:
        last = url[-1]
        if last in _TRAILING:
            url = url[:-1]
        elif last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last]):
            url = url[:-1]
        else:
            break
    return url


def literal_urls(text: str) -> list[tuple[int, int, bool]]:
    """``(start, end, runs_on)`` of the URLs of ``text`` as :func:`find_urls` finds them;
    ``runs_on`` is True when nothing in ``text`` ends the URL (it reaches the end of
    ``text``, maybe past trailing punctuation), so what follows ``text`` may continue it."""
    if "://" not in text:
        return []
    spans: list[tuple[int, int, bool]] = []
    for match in _URL.finditer(text):
        url = _trim(match.group())
        rest = url[url.index("://") + 3 :]
        if rest and (rest[0].isalnum() or rest[0] == "["):
            spans.append((match.start(), match.start() + len(url), match.end() == len(text)))
    return spans


def find_urls(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the http(s) URLs in ``text``: ``text[start:end]`` is the URL."""
    return [(start, end) for start, end, _ in literal_urls(text)]


class LinkTarget(Protocol):
    """A run's link row as the store hands it back (``engine.store.base.LinkRow``)."""

    @property
    def id(self) -> int: ...
    @property
    def url(self) -> str | None: ...


def _own(url: str, base: str) -> bool:
    """Whether ``url`` is on the tracking domain already (not shortened again)."""
    return url == base or url.startswith(base + "/")


def _unsubscribes(template: Any) -> tuple[bool, bool]:
    """Whether ``template`` uses ``{unsubscribe}`` and ``{globalunsubscribe}`` (both, when
    it has no metadata to tell)."""
    variables: Collection[str] | None = getattr(template, "variables", None)
    if variables is None:
        return True, True
    return ("resource.unsubscribe_link" in variables,
            "resource.globalunsubscribe_link" in variables)


def link_request(template: Any, base: str) -> tuple[list[str], int]:
    """What to ask ``TrackingStore.ensure_links`` for, for a run of ``template``: its closed
    URLs (those not on the tracking domain already) and the data slots, none when it has
    no tag that outputs a value. A template with an unsubscribe link asks for one row at
    least: the anchor of its codes."""
    urls = [u for u in getattr(template, "closed_urls", ()) if not _own(u, base)]
    slots = DATA_SLOTS if getattr(template, "prints_data", True) else 0
    if not (urls or slots) and any(_unsubscribes(template)):
        slots = 1
    return urls, slots


class Shortener:
    """The links of one run's texts: :attr:`shorten` per message.

    ``links`` are the run's rows from ``ensure_links`` for ``seq_base`` (template URLs
    and data slots; the first is the unsubscribe codes' anchor). Without a template's
    metadata (a renderer that is not a ``Template``), every text takes the slow path and
    every URL a data slot, and unsubscribe marks are looked for. A seq whose offset
    ``seq - seq_base`` is out of a code's range (or, for unsubscribe links, with no
    anchor) keeps its URLs as written and the static unsubscribe link.
    """

    __slots__ = (
        "_base", "_ghead", "_global", "_heads", "_marks", "_own", "_replace", "_scan",
        "_seq_base", "_slots", "_static", "_uhead", "_unescape", "_unsub", "_usuffix",
        "shorten",
    )

    #: ``shorten(text, seq, found)``: ``text`` of message ``seq`` with its links on the
    #: tracking domain; each URL from data that took a slot is appended to ``found``. The
    #: same (text, seq) always gives the same result, so a resume re-renders a message
    #: exactly. (A function chosen for the template: the hot path of a template with one
    #: link is a count, a code and a replace.)
    shorten: Callable[[str, int, list[DataLink]], str]

    def __init__(
        self,
        *,
        base: str,
        secret: bytes,
        anchor: int | None,
        template_links: Mapping[str, int],
        slots: Sequence[int] = (),
        url_marks: int = 0,
        scan: bool = True,
        unsubscribe: bool = True,
        globalunsubscribe: bool = True,
        static_unsubscribe: str = "",
        seq_base: int = 0,
        unescape: bool = False,
    ) -> None:
        self._base = base
        # an HTML text's URLs from data are escaped (``&amp;``): the link leads where the
        # browser would go, and the same URL in the HTML and the text takes one slot
        self._unescape = unescape
        self._seq_base = seq_base
        self._own = base + "/"
        codec = Codec(secret, b"link")
        self._heads = {url: (f"{base}/{codec.prefix(i)}", codec.suffix(i))
                       for url, i in template_links.items() if not _own(url, base)}
        # longest first: a URL that is part of a longer one is replaced after it
        self._replace = sorted(((u, h, s) for u, (h, s) in self._heads.items()),
                               key=lambda t: -len(t[0]))
        self._slots = [(f"{base}/{codec.prefix(i)}", codec.suffix(i), i) for i in slots]
        self._marks = url_marks
        # a template URL that begins one of our links would be replaced inside it
        self._scan = scan or any(self._own.startswith(u) for u in self._heads)
        self._static = static_unsubscribe
        self._unsub = unsubscribe
        self._global = globalunsubscribe
        if anchor is not None and 0 <= anchor < MAX_VALUE:
            ucodec = Codec(secret, b"unsubscribe")
            prefix = ucodec.prefix(anchor)
            self._uhead: str | None = f"{base}/u/{prefix}"
            self._ghead = f"{base}/ua/{prefix}"
            self._usuffix = ucodec.suffix(anchor)
        else:
            self._uhead = None
        self.shorten = self._shorten
        if len(self._replace) == 1 and not (self._scan or unsubscribe or globalunsubscribe):
            self.shorten = self._one_link()

    def _one_link(self) -> Callable[[str, int, list[DataLink]], str]:
        """``shorten`` of a template whose only link is one closed URL."""
        (url, head, suffix), = self._replace
        marks, general, base, limit = self._marks, self._shorten, self._seq_base, MAX_VALUE

        def shorten(text: str, seq: int, found: list[DataLink]) -> str:
            offset = seq - base
            if 0 <= offset < limit and text.count("://") == marks:
                return text.replace(url, head + suffix(offset))
            return general(text, seq, found)

        return shorten

    @classmethod
    def of(
        cls, template: Any, *, base: str, secret: bytes, links: Sequence[LinkTarget],
        seq_base: int = 0, static_unsubscribe: str = "",
    ) -> Shortener:
        """The shortener of a run of ``template`` (a compiled ``Template``), given the
        run's link rows for ``seq_base``."""
        urls = set(getattr(template, "closed_urls", ()))
        unsubscribe, globalunsubscribe = _unsubscribes(template)
        return cls(
            base=base, secret=secret, anchor=links[0].id if links else None,
            template_links={r.url: r.id for r in links if r.url is not None and r.url in urls},
            slots=[r.id for r in links if r.url is None],
            url_marks=getattr(template, "url_marks", 0),
            scan=getattr(template, "open_urls", True),
            unsubscribe=unsubscribe, globalunsubscribe=globalunsubscribe,
            static_unsubscribe=static_unsubscribe, seq_base=seq_base,
            unescape=getattr(template, "escapes_html", False),
        )

    @property
    def resource_fields(self) -> dict[str, str]:
        """What the render context's ``resource`` gets, for the unsubscribe functions."""
        return {"unsubscribe_link": UNSUBSCRIBE_MARK,
                "globalunsubscribe_link": GLOBAL_UNSUBSCRIBE_MARK}

    def _shorten(self, text: str, seq: int, found: list[DataLink]) -> str:
        offset = seq - self._seq_base
        if not 0 <= offset < MAX_VALUE:
            return self._unshortened(text)
        if self._scan or text.count("://") != self._marks:
            text = self._rewrite(text, seq, offset, found)
        else:
            for url, head, suffix in self._replace:
                text = text.replace(url, head + suffix(offset))
        if self._unsub or self._global:
            if self._uhead is None:
                return self._unshortened(text)
            code = self._usuffix(offset)
            if self._unsub:
                text = text.replace(UNSUBSCRIBE_MARK, self._uhead + code)
            if self._global:
                text = text.replace(GLOBAL_UNSUBSCRIBE_MARK, self._ghead + code)
        return text

    def _rewrite(self, text: str, seq: int, offset: int, found: list[DataLink]) -> str:
        spans = find_urls(text)
        if not spans:
            return text
        heads, slots, own = self._heads, self._slots, self._own
        parts: list[str] = []
        taken: dict[str, str] = {}
        last = 0
        unescape = self._unescape
        for start, end in spans:
            url = text[start:end]
            if unescape and "&" in url:
                url = html.unescape(url)
            link = heads.get(url)
            if link is not None:
                short = link[0] + link[1](offset)
            elif url in taken:  # the same URL twice in one message: one slot
                short = taken[url]
            elif len(taken) < len(slots) and not (url == self._base or url.startswith(own)):
                head, suffix, link_id = slots[len(taken)]
                short = taken[url] = head + suffix(offset)
                found.append((link_id, seq, url))
            else:
                continue
            parts.append(text[last:start])
            parts.append(short)
            last = end
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

    def _unshortened(self, text: str) -> str:
        if self._unsub or self._global:
            text = text.replace(UNSUBSCRIBE_MARK, self._static)
            text = text.replace(GLOBAL_UNSUBSCRIBE_MARK, self._static)
        return text
