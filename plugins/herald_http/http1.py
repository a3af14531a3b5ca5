"""HTTP/1.1 for one origin, sans-I/O: the URL, the request headers, the ``Response``.

h11 frames requests and parses responses (``pool.py`` drives it); this module holds what
comes before and after: where requests go (``split_url``), which headers a user may add
(``check_header``), the headers of every request (``request_headers``), and the complete
answer the driver reads (``Response``). No I/O, no clock.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import urlsplit

from engine.errors import redact

__all__ = ["Origin", "Response", "check_header", "request_headers", "split_url"]

#: RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9110 field-value (ASCII only): visible characters, inner spaces and tabs.
_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Headers the client frames the message with; a user may not set them.
RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "upgrade"})


class Origin(NamedTuple):
    """Where requests go: ``scheme://host:port`` and the request target (path and query)."""

    scheme: str
    host: str
    port: int
    target: str

    @property
    def authority(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def split_url(url: str) -> Origin:
    """The origin and target of an ``http://`` or ``https://`` URL; ``ValueError`` says why not."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"url must start with http:// or https://, not {redact(url)!r}")
    if not parts.hostname:
        raise ValueError(f"url has no host: {redact(url)!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials: send them in `headers` (Authorization)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url has a bad port: {redact(url)!r}") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if any(c in target for c in " \r\n\t") or not target.isascii():
        raise ValueError(
            f"url path must be percent-encoded ASCII without spaces: {redact(url)!r}"
        )
    return Origin(scheme, parts.hostname, port or (443 if scheme == "https" else 80), target)


def check_header(name: str, value: str) -> None:
    """``ValueError`` unless ``name: value`` is a header a user may add to every request."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"header name {name!r} is not an HTTP token")
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(f"header {name!r} is set by the driver itself")
    if not value.isascii() or _CONTROL.search(value):
        raise ValueError(f"header {name!r} has a value with a line break, a control character"
                         " or non-ASCII text")
    if not _VALUE.fullmatch(value):
        raise ValueError(f"header {name!r} has a value with leading or trailing spaces")


def request_headers(origin: Origin, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """The headers of every ``POST`` but ``Content-Length``, in the order they are sent.

    ``headers`` are added as given (checked by ``check_header``); ``Host`` among them
    replaces the origin's, as any other default of the same name.
    """
    fields = {
        "host": origin.authority,
        "user-agent": "herald",
        "accept": "application/json",
        "content-type": "application/json",
    }
    for name, value in headers.items():
        for default in [f for f in fields if f.lower() == name.lower()]:
            del fields[default]
        fields[name] = value
    return [(name.encode("ascii"), value.encode("ascii")) for name, value in fields.items()]


class Response(NamedTuple):
    """A complete response. Header names are lower case; repeated headers are joined by ``,``."""

    status: int
    headers: dict[str, str]
    body: bytes
    #: The connection may carry another request.
    keep_alive: bool = True
