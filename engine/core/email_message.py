"""An email mailing's templates and messages on the per-message path (sans-I/O).

An email mailing has three templates in the one template language: a subject, an HTML
body and a text version. :func:`compile_email` prepares the HTML once, before compiling
(never per message):

- its CSS is inlined for mail clients (``engine.core.email_html.inline_css``);
- the URLs of images (``src``, ``srcset``, ``background``, CSS ``url(...)``) are hidden
  from the link shortener, so an image never becomes a click link: their ``http`` is
  written as :data:`_HIDDEN_HTTP` and put back after shortening;
- ``&amp;`` in link URLs is read as ``&``, so a short link leads where the browser would;
- the open pixel's image is put before ``</body>`` (where opens are tracked), its URL a
  mark replaced per message;
- the text version, when none is given, is made from that HTML (Altcraft's "Text
  version" button): the HTML's text, with each link's URL after its words.

:class:`EmailTemplate` then renders one message's HTML and text in one string
(:data:`SEP` between them, and the unsubscribe mark after, for ``List-Unsubscribe``), so
one call of the run's :class:`~engine.core.links.Shortener` gives both parts the same
short links. :class:`EmailPreparer` is the prepare stage's :class:`~engine.core.prepare.
Preparer` for email: each message's text is :func:`pack`'s subject, HTML, text and
unsubscribe URL; the dispatch shell builds the RFC 5322 message from it with the routed
sender's From (:class:`Composer`), so a failover to another sender writes its From.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from engine.core.codes import MAX_VALUE, Codec
from engine.core.links import UNSUBSCRIBE_MARK, DataLink
from engine.core.prepare import AudienceRow, Message, Preparer
from engine.core.states import Skip
from engine.drivers import OutboundMessage
from engine.errors import InputError

__all__ = [
    "OPEN_MARK",
    "SEP",
    "Composer",
    "EmailNormaliser",
    "EmailParts",
    "EmailPreparer",
    "EmailTemplate",
    "OpenPixel",
    "compile_email",
    "pack",
    "prepare_html",
    "unpack",
]

#: Between the parts of a rendered email (HTML, text, unsubscribe URL) and of a packed
#: message: a character no template writes on purpose (it is removed from what data
#: puts into a part).
SEP: Final = "\x1e"
#: What the open pixel's URL is, until each message's is written.
OPEN_MARK: Final = "\x1f3\x1f"
#: What an image URL's ``http`` and ``://`` are written as, so the shortener neither sees
#: the URL nor counts it (a text with no URL from data takes the shortener's fast path).
_HIDDEN_HTTP: Final = "\x1d"
_HIDDEN_SLASHES: Final = "\x1c"

_IMAGE_URL = re.compile(
    r"""(?P<head>\b(?:src|srcset|background|poster)\s*=\s*["']?\s*|url\(\s*["']?\s*)"""
    r"""http(?P<s>s?)://""",
    re.IGNORECASE,
)
_SRCSET = re.compile(r"""(\bsrcset\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_SCHEME = re.compile(r"http(s?)://", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def prepare_html(html: str, *, inline: bool = True, pixel: bool = False) -> str:
    """The HTML template as it is compiled: CSS inlined, image URLs hidden from the
    shortener, ``&amp;`` of link URLs read, the open pixel's image added."""
    from engine.core.email_html import add_open_pixel, inline_css

    if inline and "<style" in html.lower():
        html = inline_css(html)
    html = _HREF.sub(lambda m: m.group(1) + m.group(2) + m.group(3).replace("&amp;", "&")
                     + m.group(2), html)
    html = _SRCSET.sub(lambda m: m.group(1) + m.group(2) + _hidden(m.group(3)) + m.group(2),
                       html)  # every candidate of a srcset
    html = _IMAGE_URL.sub(
        lambda m: m.group("head") + _HIDDEN_HTTP + m.group("s") + _HIDDEN_SLASHES, html)
    if pixel:
        html = add_open_pixel(html, OPEN_MARK)
    return html


def _hidden(urls: str) -> str:
    return _SCHEME.sub(lambda m: _HIDDEN_HTTP + m.group(1) + _HIDDEN_SLASHES, urls)


def _shown(html: str) -> str:
    """``html`` with its image URLs as written."""
    return html.replace(_HIDDEN_HTTP, "http").replace(_HIDDEN_SLASHES, "://")


class EmailTemplate:
    """An email's compiled templates: what the Preparer and the Shortener read of a
    ``Template`` (roots, URLs, variables), for the HTML and the text together."""

    def __init__(self, subject: Any, html: Any, text: Any, *, unsubscribe: bool) -> None:
        self.subject = subject
        self.html = html
        self.text = text
        parts = (subject, html, text)
        self.roots: frozenset[str] = frozenset().union(*(p.roots for p in parts))
        variables = frozenset().union(*(p.variables for p in parts))
        #: ``List-Unsubscribe`` (or the pixel) needs the run's unsubscribe anchor.
        self.variables = variables | {"resource.unsubscribe_link"} if unsubscribe \
            else variables
        self.closed_urls = tuple(dict.fromkeys((*html.closed_urls, *text.closed_urls)))
        self.url_marks = html.url_marks + text.url_marks
        self.open_urls = bool(html.open_urls or text.open_urls)
        self.prints_data = bool(html.prints_data or text.prints_data)
        #: A URL from data in the HTML has ``&amp;`` for ``&``: the shortener reads it.
        self.escapes_html = bool(getattr(html, "escapes_html", False))
        self.blank = bool(html.blank)
        self.never_blank = True  # a message always has its headers: emptiness is not judged
        self._unsubscribe = unsubscribe

    def render(self, ctx: Mapping[str, Any]) -> str:
        """HTML, :data:`SEP`, text, :data:`SEP`, and the unsubscribe mark (or nothing)."""
        html = self.html.render(ctx)
        text = self.text.render(ctx)
        if SEP in html or SEP in text:
            html, text = html.replace(SEP, ""), text.replace(SEP, "")
        unsub = ctx["resource"].get("unsubscribe_link", "") if self._unsubscribe else ""
        return f"{html}{SEP}{text}{SEP}{unsub}"


def compile_email(
    compile: Callable[[str, str, bool], Any], *, subject: str, html: str, text: str | None,
    inline: bool = True, pixel: bool = False, unsubscribe: bool = True,
) -> EmailTemplate:
    """The three templates compiled with ``compile(source, name, escape_html)`` (a
    ``TemplateError`` names the part: ``subject``, ``template``, ``text``). Only the HTML
    (``template``) is compiled with ``escape_html``: data written into it is escaped, so a
    profile's ``<`` or ``&`` can neither break the markup nor add any; the subject and the
    text version are plain text."""
    from engine.core.html_text import html_to_text
    from engine.errors import TemplateError

    def one(source: str, name: str) -> Any:
        try:
            return compile(source, name, name == "template")
        except TemplateError as err:
            raise TemplateError(f"{name}: {err.message}", line=err.line, col=err.col) \
                from None

    if not subject.strip():
        raise InputError("subject: an email mailing needs a subject")
    prepared = prepare_html(html, inline=inline, pixel=pixel)
    html_t = one(prepared, "template")
    if html_t.blank:
        raise TemplateError("template: every message's HTML would be empty", line=1, col=1)
    text_source = text if text is not None else html_to_text(
        _shown(prepared.replace(OPEN_MARK, "")))
    return EmailTemplate(one(subject, "subject"), html_t, one(text_source, "text"),
                         unsubscribe=unsubscribe)


class OpenPixel:
    """Each message's open pixel URL, ``{base}/o/{code}``: the code of ``(anchor, seq -
    seq_base)`` under the purpose ``open``, as the tracking domain's route reads it."""

    __slots__ = ("_head", "_seq_base", "_suffix")

    def __init__(self, base: str, secret: bytes, anchor: int, seq_base: int = 0) -> None:
        if not 0 <= anchor < MAX_VALUE:
            raise ValueError(f"anchor: link id {anchor} is out of the codes' range")
        codec = Codec(secret, b"open")
        self._head = f"{base}/o/{codec.prefix(anchor)}"
        self._suffix = codec.suffix(anchor)
        self._seq_base = seq_base

    def url(self, seq: int) -> str | None:
        offset = seq - self._seq_base
        return self._head + self._suffix(offset) if 0 <= offset < MAX_VALUE else None


class EmailParts(NamedTuple):
    subject: str
    html: str
    text: str
    #: The message's own unsubscribe URL (``List-Unsubscribe``), "" when none.
    unsubscribe: str


def pack(subject: str, html: str, text: str, unsubscribe: str) -> str:
    """One message's parts as one string (``Message.text`` of an email)."""
    if SEP in subject:
        subject = subject.replace(SEP, "")
    return f"{subject}{SEP}{html}{SEP}{text}{SEP}{unsubscribe}"


def unpack(packed: str) -> EmailParts:
    subject, html, text, unsubscribe = packed.split(SEP)
    return EmailParts(subject, html, text, unsubscribe)


class EmailNormaliser:
    """The email counterpart of ``PhoneNormaliser``: the normalised address
    (``engine.core.emails``), or None when it is none."""

    def __init__(self) -> None:
        from engine.core.emails import normalise_email

        self._normalise = normalise_email

    def normalise(self, raw: str) -> str | None:
        try:
            return self._normalise(raw)
        except InputError:
            return None


class EmailPreparer(Preparer):
    """The prepare stage of an email run: the same decisions, in the same order, as an
    SMS run's (``Preparer``); each message's text is the packed email, 1 "segment"."""

    invalid_reason = Skip.INVALID_EMAIL

    def __init__(self, *, pixel: OpenPixel | None = None, static_unsubscribe: str = "",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pixel = pixel
        self._static_unsubscribe = static_unsubscribe

    def context_of(
        self, row: AudienceRow, apicontent: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        ctx = super().context_of(row, apicontent)
        sub = ctx.get("subscription")
        if sub is not None:  # an email subscription's address is its email (Altcraft's)
            sub["email"] = sub.pop("phone", row[2])
        return ctx

    def render(
        self, row: AudienceRow, apicontent: dict[str, Any] | None = None, seq: int = 0,
        links: list[DataLink] | None = None,
    ) -> tuple[str, int, str]:
        ctx = self.context_of(row, apicontent)
        template: EmailTemplate = self.template  # type: ignore[assignment]
        body = template.render(ctx)
        if self.shortener is not None:
            body = self.shortener.shorten(body, seq, [] if links is None else links)
        html, text, unsubscribe = body.split(SEP)
        if _HIDDEN_HTTP in html:
            html = _shown(html)
        if OPEN_MARK in html:
            url = self.pixel.url(seq) if self.pixel is not None else None
            html = html.replace(OPEN_MARK, url or "")
        if unsubscribe == UNSUBSCRIBE_MARK:  # not replaced: no tracking domain, or out of range
            unsubscribe = self._static_unsubscribe
        subject = template.subject.render(ctx)
        return pack(" ".join(subject.split()), html, text, unsubscribe), 1, "email"


class Composer:
    """Builds one sender's RFC 5322 messages (``engine.core.mime.MimeBuilder``) from
    packed email messages: the OutboundMessage a driver gets (``mime`` set), with the
    envelope sender (the return path, VERP where configured)."""

    def __init__(
        self, *, from_: str, reply_to: str | None = None, return_path: str | None = None,
        list_unsubscribe: bool = True,
    ) -> None:
        from engine.core.mime import MimeBuilder

        probe = MimeBuilder(from_=from_, domain="example.com")
        domain = probe.from_address.rpartition("@")[2]
        self.builder = MimeBuilder(from_=from_, domain=domain, reply_to=reply_to,
                                   list_unsubscribe=list_unsubscribe)
        self._verp: tuple[str, str] | None = None
        self.envelope = self.builder.from_address
        if return_path is not None:
            from engine.core.emails import normalise_email

            local, _, rp_domain = normalise_email(return_path).rpartition("@")
            self._verp = (local, rp_domain)
            self.envelope = f"{local}@{rp_domain}"

    def envelope_of(self, message_id: str) -> str:
        """The envelope sender of message ``message_id``: ``{local}+{id}@{domain}`` with
        a return path (``engine.tracking.bounces.verp_id`` reads the id back)."""
        if self._verp is None:
            return self.envelope
        local, domain = self._verp
        return f"{local}+{message_id}@{domain}"

    def compose(self, m: Message, now: float) -> OutboundMessage:
        """The OutboundMessage of email message ``m`` (InputError: it cannot be written)."""
        parts = unpack(m.text)
        mime = self.builder.build(
            to=m.phone, subject=parts.subject, html=parts.html, text=parts.text,
            message_id=m.id, unsubscribe_url=parts.unsubscribe or None, now=now,
        )
        return OutboundMessage(m.id, m.phone, self.envelope_of(m.id), parts.text,
                               m.segments, mime)
