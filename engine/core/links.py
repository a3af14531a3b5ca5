"""Find http(s) URLs in message text, for link tracking.

A URL starts at ``http://`` or ``https://`` (any case, not glued to a preceding letter or
digit) and runs to the next whitespace, quote or angle bracket. Trailing punctuation that
usually ends the sentence rather than the URL is left out: ``. , ; : ! ? …`` and closing
quotes, plus a closing bracket that has no opening partner inside the URL, so
``(see https://x.ru/a)`` yields ``https://x.ru/a`` but ``https://w.org/Foo_(bar)`` stays whole.
"""

from __future__ import annotations

import re

__all__ = ["find_urls"]

_URL = re.compile(r"(?<![^\W_])https?://[^\s<>\"'`«»“”„]+", re.IGNORECASE)
_TRAILING = frozenset(".,;:!?…'\"’”»")
_CLOSERS = {")": "(", "]": "[", "}": "{"}


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


def find_urls(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the http(s) URLs in ``text``: ``text[start:end]`` is the URL."""
    if "://" not in text:
        return []
    spans: list[tuple[int, int]] = []
    for match in _URL.finditer(text):
        url = _trim(match.group())
        rest = url[url.index("://") + 3 :]
        if rest and (rest[0].isalnum() or rest[0] == "["):
            spans.append((match.start(), match.start() + len(url)))
    return spans
