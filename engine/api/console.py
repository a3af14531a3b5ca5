"""The operator console's pages: ``GET /console`` (also ``/console/``) serves its
``index.html`` and ``GET /console/static/{name}`` its assets, package data under
``engine/api/static/console/``. No token is needed to load them: the page asks for one
and sends it to ``/api/v1`` (see ``engine.api.live`` and the routes it calls).

``static_routes(directory, prefix)`` makes such a pair of routes for any folder of
``engine/api/static/`` (the gallery's page uses it too). A file is named exactly, with no
folder, and served only if its suffix has a content type here (.html, .js, .css, .svg);
anything else is a 404, so no path leaves the folder. Every answer says ``Cache-Control:
no-cache`` with an ``ETag`` (a matching ``If-None-Match`` gets a 304), and carries the
pages' security headers: a CSP that lets only this origin's scripts and styles run.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Final

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import PathParameter

from engine.api.errors import ApiError
from engine.api.state import Req

__all__ = ["CONTENT_TYPES", "CSP", "ROUTES", "SECURITY_HEADERS", "static_routes"]

#: Content types by suffix (text/* get "; charset=utf-8"); a file with any other suffix
#: is never served.
CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".js": "application/javascript; charset=utf-8",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
#: Scripts and styles of this origin only: no inline script, no ``style=""`` attribute.
CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self';"
              " img-src 'self' data: blob:; connect-src 'self'; base-uri 'none';"
              " form-action 'none'; frame-ancestors 'self'")
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
FileName = Annotated[str, PathParameter(max_length=200, description="the file's name")]
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\Z")


class _Files:
    """The files of one folder, read once each (package data does not change under a
    running server) with their ETags."""

    def __init__(self, root: Traversable | Path) -> None:
        self.root = root
        self._read: dict[str, tuple[bytes, str]] = {}

    def get(self, name: str) -> tuple[bytes, str, str]:
        """(content, content type, ETag) of file ``name``; a 404 ApiError unless it is
        a file of the folder with a known suffix."""
        suffix = "." + name.rpartition(".")[2] if "." in name else ""
        kind = CONTENT_TYPES.get(suffix)
        found = self._read.get(name)
        if found is None:
            if kind is None or not _NAME.match(name):
                raise ApiError(404, f"no file {name!r} here")
            path = self.root.joinpath(name)
            try:
                data = path.read_bytes() if path.is_file() else None
            except OSError:
                data = None
            if data is None:
                raise ApiError(404, f"no file {name!r} here")
            found = self._read[name] = (data, f'"{hashlib.sha256(data).hexdigest()[:32]}"')
        assert kind is not None
        return found[0], kind, found[1]


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


def _answer(files: _Files, name: str, request: Req) -> Response[bytes]:
    data, kind, etag = files.get(name)
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": etag}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers=headers, media_type=kind)
    return Response(data, media_type=kind, headers=headers)


def static_routes(
    directory: str, prefix: str, *, root: Traversable | Path | None = None,
    index: str = "index.html",
) -> list[HTTPRouteHandler]:
    """``GET {prefix}`` and ``{prefix}/`` (the folder's ``index``) and ``GET
    {prefix}/static/{name}``, over ``engine/api/static/{directory}/`` (or ``root``, a
    folder of the caller's: tests)."""
    files = _Files(root if root is not None else
                   resources.files("engine.api").joinpath("static", directory))

    @get([prefix, prefix + "/"], include_in_schema=False, name=f"{directory}-page")
    async def page(request: Req) -> Response[bytes]:
        """The page; it needs no token (it asks for one)."""
        return _answer(files, index, request)

    @get(prefix + "/static/{name:str}", include_in_schema=False, name=f"{directory}-static")
    async def asset(request: Req, name: FileName) -> Response[bytes]:
        """One of the page's files, by its exact name."""
        return _answer(files, name, request)

    return [page, asset]


ROUTES = static_routes("console", "/console")
