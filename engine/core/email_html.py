"""HTML passes done once per email template, at compile time (never per message).

- :func:`inline_css` moves ``<style>`` rules into ``style=""`` attributes (css-inline), as
  mail clients that drop ``<style>`` need; ``@media`` and other at-rules, which cannot be
  inlined, stay in a ``<style>`` block. Remote stylesheets are not fetched. Template tags
  survive, even between table rows where an HTML parser would move text out of the table.
- :func:`add_open_pixel` puts the open-tracking image before ``</body>``.
- :func:`external_images` lists the images not served from the tracking domain (what
  ``template check`` warns about and ``gallery localize`` fixes).
- :func:`html_links` lists the links the tracking domain should rewrite.

URLs come back as a browser reads them: entities decoded (``&amp;`` -> ``&``).
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Collection
from html.parser import HTMLParser
from typing import Final
from urllib.parse import urlsplit

import css_inline

from engine.errors import TemplateError

__all__ = ["add_open_pixel", "external_images", "html_links", "inline_css"]

#: A template tag as the template lexer reads one: ``{`` and a letter or ``_`` up to the
#: next ``}`` outside a string; ``\\{`` is a literal brace.
_TAG: Final = re.compile(r"(?<!\\)\{[A-Za-z_](?:[^}\"']|\"[^\"]*\"|'[^']*')*\}")
_BODY_END: Final = re.compile(r"</body\s*>", re.IGNORECASE)
_INLINER: Final = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def inline_css(html: str) -> str:
    """``html`` with its CSS inlined into ``style`` attributes; at-rules (``@media``) kept in
    a ``<style>`` block. A fragment comes back as a whole document (``<html><head><body>``).

    Raises :class:`~engine.errors.TemplateError` when css-inline cannot read the HTML.
    """
    tags: list[str] = []

    def protect(m: re.Match[str]) -> str:
        tags.append(m.group())
        i = len(tags) - 1
        # in text a comment stays where it is (text between table rows would be moved);
        # in markup (an attribute value) a plain word does
        in_markup = html.rfind("<", 0, m.start()) > html.rfind(">", 0, m.start())
        return f"herald-tag-{i}-x" if in_markup else f"<!--herald-tag-{i}-->"

    protected = _TAG.sub(protect, html)
    try:
        inlined = _INLINER.inline(protected)
    except ValueError as err:  # css-inline's InlineError is a ValueError
        raise TemplateError(f"cannot inline the CSS: {err}") from None
    if not tags:
        return inlined
    return re.sub(
        r"<!--herald-tag-(\d+)-->|herald-tag-(\d+)-x",
        lambda m: tags[int(m.group(1) or m.group(2))],
        inlined,
    )


def add_open_pixel(html: str, pixel_url_placeholder: str) -> str:
    """``html`` with a 1x1 hidden image loading ``pixel_url_placeholder`` (a URL or a
    template tag such as ``{open_pixel}``) just before ``</body>``, or at the end when there
    is no ``</body>``."""
    src = html_lib.escape(pixel_url_placeholder, quote=True)
    pixel = f'<img src="{src}" width="1" height="1" alt="" style="display:none">'
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + pixel
    at = ends[-1].start()
    return html[:at] + pixel + html[at:]


def external_images(html: str, allowed_hosts: Collection[str]) -> list[str]:
    """The ``<img src>`` URLs (absolute ``http(s)`` or ``//host/...``) whose host is not one
    of ``allowed_hosts`` (the tracking domain), each once, in document order. Relative,
    ``data:`` and ``cid:`` sources and template tags are not listed."""
    allowed = {h.lower() for h in allowed_hosts}
    out: list[str] = []
    for url in _attribute_values(html, {"img": "src"}):
        host = _host(url)
        if host is not None and "{" not in host and host not in allowed and url not in out:
            out.append(url)
    return out


def html_links(html: str) -> list[str]:
    """The ``http(s)`` URLs of the ``<a href>`` (and ``<area href>``) links, each once, in
    document order: not ``mailto:``, ``tel:``, ``#anchors`` nor an ``href`` that is a template
    tag (``{unsubscribe}``). A URL with a tag inside (``https://x.ru/?u={id}``) is listed."""
    out: list[str] = []
    for url in _attribute_values(html, {"a": "href", "area": "href"}):
        if url.lower().startswith(("http://", "https://")) and url not in out:
            out.append(url)
    return out


def _host(url: str) -> str | None:
    """The lowercased host of an absolute or scheme-relative http(s) URL, else None."""
    lowered = url.lower()
    if not lowered.startswith(("http://", "https://", "//")):
        return None
    try:
        host = urlsplit(url if not url.startswith("//") else "https:" + url).hostname
    except ValueError:
        return None
    return host or None


class _Attributes(HTMLParser):
    def __init__(self, wanted: dict[str, str]) -> None:
        super().__init__(convert_charrefs=True)
        self.wanted = wanted
        self.values: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        name = self.wanted.get(tag)
        if name is not None:
            for key, value in attrs:
                if key == name and value:
                    self.values.append(value.strip())
                    break


def _attribute_values(html: str, wanted: dict[str, str]) -> list[str]:
    parser = _Attributes(wanted)
    parser.feed(html)
    parser.close()
    return parser.values
