"""The tracking domain's pages: not found, unsubscribe (one confirm button), unsubscribed;
and the one-line answer of an email client's one-click unsubscribe (``unsubscribed_text``).

The HTML is package data (``static/``): ``page.html`` is the frame (inline CSS, no external
resource, nothing that calls home) and each page fills its ``$content``. Every value put
into a page is HTML-escaped. Pages are sent with ``Cache-Control: no-store`` and a
Content-Security-Policy that allows nothing but the inline style and a form posting back
to this origin. A page names the recipient only as much as it takes to recognise them, not
to learn it from a link someone forwarded: a phone's last four digits, an email address's
first character and its domain (``i…@example.com``).
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template

__all__ = ["HEADERS", "not_found", "unsubscribe", "unsubscribed", "unsubscribed_text"]

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


def _who(address: str) -> str:
    """The recipient, as a page names it (module docstring), in HTML: the number ending
    in a phone's last digits, or the address shortened."""
    local, at, domain = address.rpartition("@")
    if at:
        shown = html.escape(f"{local[:1]}\u2026@{domain}")
        return f"the address <strong>{shown}</strong>"
    digits = [c for c in address if c.isdigit()]
    return f"the number ending in <strong>{html.escape(''.join(digits[-4:]) or '?')}</strong>"


NOT_FOUND = _page("Not found", _NOT_FOUND.substitute())


def not_found() -> str:
    return NOT_FOUND


def unsubscribe(*, resource: str, phone: str, everywhere: bool, action: str) -> str:
    """The confirm page: a form POSTing to ``action`` (the page's own path)."""
    content = _UNSUBSCRIBE.substitute(what=_what(resource, everywhere), who=_who(phone),
                                      action=html.escape(action))
    return _page("Unsubscribe", content)


def unsubscribed(*, resource: str, phone: str, everywhere: bool) -> str:
    content = _UNSUBSCRIBED.substitute(what=_what(resource, everywhere), who=_who(phone))
    return _page("Unsubscribed", content)


def unsubscribed_text(*, resource: str, everywhere: bool) -> str:
    """The answer to a one-click unsubscribe (RFC 8058): a mail client reads no page."""
    what = "any list of this sender" if everywhere else f"\u201c{resource}\u201d"
    return f"You are unsubscribed from {what}.\n"
