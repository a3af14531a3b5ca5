"""The tracking domain's pages: not found, unsubscribe (one confirm button), unsubscribed.

The HTML is package data (``static/``): ``page.html`` is the frame (inline CSS, no external
resource, nothing that calls home) and each page fills its ``$content``. Every value put
into a page is HTML-escaped. Pages are sent with ``Cache-Control: no-store`` and a
Content-Security-Policy that allows nothing but the inline style and a form posting back
to this origin.
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template

__all__ = ["HEADERS", "not_found", "unsubscribe", "unsubscribed"]

#: Headers of every page.
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline';"
                               " form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}


def _load(name: str) -> Template:
    text = resources.files("engine.tracking").joinpath("static", name).read_text("utf-8")
    return Template(text)


_FRAME = _load("page.html")
_NOT_FOUND = _load("not_found.html")
_UNSUBSCRIBE = _load("unsubscribe.html")
_UNSUBSCRIBED = _load("unsubscribed.html")


def _page(title: str, content: str) -> str:
    return _FRAME.substitute(title=html.escape(title), content=content)


def _what(resource: str, everywhere: bool) -> str:
    if everywhere:
        return "messages of any list of this sender"
    return f"messages of \u201c{html.escape(resource)}\u201d"


def _tail(phone: str) -> str:
    """The last digits of a phone: enough to recognise it, not to learn it from a link
    someone forwarded."""
    digits = [c for c in phone if c.isdigit()]
    return html.escape("".join(digits[-4:]) or "?")


NOT_FOUND = _page("Not found", _NOT_FOUND.substitute())


def not_found() -> str:
    return NOT_FOUND


def unsubscribe(*, resource: str, phone: str, everywhere: bool, action: str) -> str:
    """The confirm page: a form POSTing to ``action`` (the page's own path)."""
    content = _UNSUBSCRIBE.substitute(what=_what(resource, everywhere), phone=_tail(phone),
                                      action=html.escape(action))
    return _page("Unsubscribe", content)


def unsubscribed(*, resource: str, phone: str, everywhere: bool) -> str:
    content = _UNSUBSCRIBED.substitute(what=_what(resource, everywhere), phone=_tail(phone))
    return _page("Unsubscribed", content)
