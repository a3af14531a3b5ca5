"""The gallery's web page at ``/gallery``, and the thumbnails it shows.

``GET /gallery`` serves the page without a token: package data under ``static/gallery/``
(HTML, CSS and vanilla JS, no external resources; ``engine.api.console.static_routes``).
The page asks for an API token once, keeps it in ``sessionStorage`` and sends it as
``Authorization: Bearer`` on every call to ``/api/v1/gallery``.
``GET /api/v1/gallery/images/{id}/thumbnail`` (viewer) answers the image's thumbnail (at
most 256×256, PNG or JPEG), which the page fetches with its token.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from litestar import Response, get
from litestar.params import PathParameter

from engine.api.auth import guarded
from engine.api.console import static_routes
from engine.api.errors import ApiError
from engine.api.gallery import gallery_of
from engine.api.state import MAX_ID, Req
from engine.errors import NotFound
from engine.gallery.images import CONTENT_TYPES, sniff_format

__all__ = ["PAGE_ROUTES", "ROUTES"]

#: ``GET /gallery`` and ``/gallery/static/{name}`` (``gallery.css``, ``gallery.js``).
PAGE_ROUTES = static_routes("gallery", "/gallery")

ThumbId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="the image's id")]


@get("/api/v1/gallery/images/{image_id:int}/thumbnail", **guarded("viewer", 400, 404),
     include_in_schema=False, media_type="application/octet-stream")
async def thumbnail(request: Req, image_id: ThumbId) -> Response[bytes]:
    """The image's thumbnail (PNG or JPEG, at most 256×256)."""
    gallery = gallery_of(request)
    try:
        image = await gallery.image(image_id)
        data = await anyio.to_thread.run_sync(gallery.blobs.get, image.thumb_sha256)
    except (NotFound, KeyError):
        raise ApiError(404, f"no image {image_id}") from None
    fmt = sniff_format(data) or "png"
    return Response(data, media_type=CONTENT_TYPES[fmt],
                    headers={"Cache-Control": "private, max-age=86400",
                             "X-Content-Type-Options": "nosniff"})


ROUTES = [*PAGE_ROUTES, thumbnail]
