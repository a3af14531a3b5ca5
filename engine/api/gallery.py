"""The image gallery under ``/api/v1/gallery``, and its public image route.

================================================  ======  ==================================
route                                             role    does
================================================  ======  ==================================
``POST /gallery/images`` (multipart ``file``...)  sender  upload; per-file ``rejected``
``GET /gallery/images``                           viewer  browse / search (and directories)
``PATCH /gallery/images/{id}``                    sender  rename, move, add/remove tags
``DELETE /gallery/images/{id}``                   sender  delete
``POST /gallery/directories``                     sender  create
``PATCH /gallery/directories/{id}``               sender  rename and/or move
``DELETE /gallery/directories/{id}``              sender  delete with everything inside
``POST /gallery/download``                        sender  a zip of images, streamed
``POST /gallery/localize``                        sender  download a template's images
``GET /{account}/{n}/{hash}/{name}``              none    the image itself (tracking domain)
================================================  ======  ==================================

Uploads are tagged with their UTC date and ``group-<group>`` of the token's group.
"""

from __future__ import annotations

import html
import re
import time
import zipfile
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
import msgspec
from litestar import HttpMethod, Response, delete, get, patch, post, route
from litestar.exceptions import InternalServerException
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter, QueryParameter
from litestar.response import Stream
from msgspec import Meta
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

from engine.api.auth import guarded, token_of
from engine.api.errors import ApiError
from engine.api.state import MAX_ID, Req, api_state
from engine.errors import InputError, NotFound
from engine.gallery import Gallery, open_gallery
from engine.gallery.catalog import MAX_NAME, Directory, Image
from engine.gallery.fetch import SafeFetcher
from engine.gallery.images import CONTENT_TYPES, MAX_IMAGE_BYTES, Decoder
from engine.gallery.localize import TooManyUrls, localize

__all__ = ["PUBLIC_ROUTES", "ROUTES"]

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
ImageId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="the image's id")]
DirectoryId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="the directory's id")]
DirName = Annotated[str, Meta(min_length=1, max_length=MAX_NAME)]
Tag = Annotated[str, Meta(min_length=1, max_length=100)]
#: Files per upload request; bytes per upload request.
MAX_FILES = 100
MAX_UPLOAD_BODY = 64 * 1024 * 1024


class ImageOut(msgspec.Struct):
    id: int
    name: str
    url: str
    size: int
    width: int
    height: int
    tags: list[str]
    format: str
    directory_id: int | None
    created_at: float
    #: ``<img src=... width=... height=... alt=...>``, ready to insert into a template.
    html: str


class DirectoryOut(msgspec.Struct):
    id: int
    name: str
    parent_id: int | None
    created_at: float


class Rejected(msgspec.Struct):
    name: str
    error: str


class UploadAnswer(msgspec.Struct):
    uploaded: list[ImageOut]
    rejected: list[Rejected]


class Listing(msgspec.Struct):
    images: list[ImageOut]
    directories: list[DirectoryOut]


class ImagePatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Any of: a new name, a directory (null: the root), tags to add and to remove."""

    name: DirName | msgspec.UnsetType = msgspec.UNSET
    directory_id: Id | msgspec.UnsetType | None = msgspec.UNSET
    add_tags: list[Tag] = msgspec.field(default_factory=list)
    remove_tags: list[Tag] = msgspec.field(default_factory=list)


class DirectoryCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: DirName
    parent_id: Id | None = None


class DirectoryPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new name and/or a new parent (null: the root)."""

    name: DirName | msgspec.UnsetType = msgspec.UNSET
    parent_id: Id | msgspec.UnsetType | None = msgspec.UNSET


class Deleted(msgspec.Struct):
    deleted: int


class DownloadBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: Annotated[list[Id], Meta(min_length=1, max_length=1000)]


class LocalizeBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    template: Annotated[str, Meta(max_length=1_000_000)]
    directory_id: Id | None = None


class LocalizeErrorOut(msgspec.Struct):
    url: str
    error: str


class LocalizeAnswer(msgspec.Struct):
    template: str
    images: list[ImageOut]
    errors: list[LocalizeErrorOut]


def gallery_of(request: Req) -> Gallery:
    """The app's gallery, opened on first use."""
    state = request.app.state
    gallery: Gallery | None = state.get("gallery")
    if gallery is None:
        gallery = open_gallery(api_state(request).herald)
        state["gallery"] = gallery
    return gallery


def decoder_of(request: Req) -> Decoder:
    """The app's image decoder: one bound on concurrent decodes for every route."""
    state = request.app.state
    decoder: Decoder | None = state.get("gallery_decoder")
    if decoder is None:
        config = api_state(request).herald.config.gallery
        decoder = Decoder(max_pixels=config.max_pixels,
                          max_concurrent=config.max_concurrent_decodes)
        state["gallery_decoder"] = decoder
    return decoder


def _out(gallery: Gallery, image: Image) -> ImageOut:
    url = gallery.url(image)
    tag = (f'<img src="{html.escape(url)}" width="{image.width}" height="{image.height}"'
           f' alt="{html.escape(image.name)}">')
    return ImageOut(image.id, image.name, url, image.size, image.width, image.height,
                    image.tags, image.format, image.directory_id, image.created_at, tag)


def _dir_out(d: Directory) -> DirectoryOut:
    return DirectoryOut(d.id, d.name, d.parent_id, d.created_at)


def _allow(path: str, methods: str) -> Any:
    """Litestar's own OPTIONS answer of a path whose methods come from several handlers
    lists only the first one's methods in Allow; registered first, this one replaces it."""

    @route(path, http_method=[HttpMethod.OPTIONS], include_in_schema=False,
           name=f"options:{path}")
    async def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": methods})

    return options


_OPTIONS = [
    _allow("/gallery/images", "GET, OPTIONS, POST"),
    _allow("/gallery/images/{image_id:int}", "DELETE, OPTIONS, PATCH"),
    _allow("/gallery/directories/{directory_id:int}", "DELETE, OPTIONS, PATCH"),
]


def _group_tags(request: Req) -> list[str]:
    token = token_of(request)
    return [f"group-{token.group}"] if token is not None and token.group else []


_BOUNDARY = re.compile(r"""boundary=(?:"([^"]+)"|([^\s;]+))""", re.I)


class _Upload:
    """What a streamed upload has done so far: each file is stored when its part ends."""

    def __init__(self, gallery: Gallery, decoder: Decoder, tags: list[str]) -> None:
        self.gallery = gallery
        self.decoder = decoder
        self.tags = tags
        self.directory_id: int | None = None
        self.files = 0
        self.answer = UploadAnswer([], [])

    async def set_directory(self, raw: str) -> None:
        raw = raw.strip()
        if not raw:
            return
        if not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
            raise ApiError(400, "expected a directory id", "directory_id")
        try:
            await self.gallery.directory(int(raw))
        except NotFound as err:
            raise ApiError(404, str(err), "directory_id") from None
        self.directory_id = int(raw)
        # Files sent before the field (put it first) join it now.
        for item in self.answer.uploaded:
            await self.gallery.update_image(item.id, directory_id=self.directory_id,
                                            move=True)
            item.directory_id = self.directory_id

    async def add_file(self, filename: str, data: bytes, size: int) -> None:
        name = filename.replace("\\", "/").rsplit("/", 1)[-1][:MAX_NAME] or "image"
        self.files += 1
        try:
            if self.files > MAX_FILES:
                raise InputError(f"at most {MAX_FILES} files per upload")
            if size > MAX_IMAGE_BYTES:
                raise InputError(f"{size} bytes is over the limit of {MAX_IMAGE_BYTES} bytes"
                                 " (2 MB)")
            info = await self.decoder.check(data)
            image = await self.gallery.add_image(name, data, info, now=time.time(),
                                                 directory_id=self.directory_id,
                                                 tags=self.tags)
        except InputError as err:
            self.answer.rejected.append(Rejected(name, str(err)))
            return
        self.answer.uploaded.append(_out(self.gallery, image))


@post("/gallery/images", **guarded("sender", 400, 404, 413), status_code=200,
      request_max_body_size=MAX_UPLOAD_BODY, tags=["gallery"], summary="Upload images")
async def upload_images(request: Req) -> UploadAnswer:
    """Multipart ``file`` parts (one or more) and an optional ``directory_id`` field (sent
    first). The body is read as a stream and each file is checked and stored as soon as its
    part ends: a bad file rejects only itself, and when the upload breaks off, the files
    that came in whole are kept."""
    m = _BOUNDARY.search(request.headers.get("content-type", ""))
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data") \
            or m is None:
        raise ApiError(400, "expected a multipart/form-data body with 'file' parts", "file")
    upload = _Upload(gallery_of(request), decoder_of(request), _group_tags(request))
    segment: MultipartSegment | None = None
    buf = bytearray()
    size = 0
    try:
        with PushMultipartParser(m[1] or m[2], max_segment_count=MAX_FILES + 10) as parser:
            async for chunk in request.stream():
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        segment, size = event, 0
                        buf.clear()
                    elif event:
                        size += len(event)
                        if size <= MAX_IMAGE_BYTES:
                            buf += event
                    elif segment is not None and segment.name == "file":
                        await upload.add_file(segment.filename or "", bytes(buf), size)
                    elif segment is not None and segment.name == "directory_id":
                        await upload.set_directory(buf.decode("utf-8", "replace") if size < 30
                                             else "x")
                if parser.closed:
                    break
    except ParserLimitReached as err:
        if "segment count" in str(err):
            raise ApiError(400, f"at most {MAX_FILES} files per upload", "file") from None
        # a part's header lines, not the number of files
        raise ApiError(400, f"not valid multipart/form-data: a part's headers are too long"
                       f" or too many ({err})", "file") from None
    except ParserError as err:
        raise ApiError(400, f"not valid multipart/form-data ({err})", "file") from None
    except InternalServerException as err:
        if "disconnected" not in str(err.detail):
            raise
        raise ApiError(400, "the upload was interrupted; the files received whole were kept",
                       "file") from None
    if upload.files == 0:
        raise ApiError(400, "no file: send one or more multipart parts named 'file'", "file")
    return upload.answer


@get("/gallery/images", **guarded("viewer", 400, 404), tags=["gallery"],
     summary="Browse and search images")
async def list_images(
    request: Req,
    directory_id: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
    q: Annotated[str | None, QueryParameter(min_length=1, max_length=MAX_NAME)] = None,
    tag: Annotated[str | None, QueryParameter(min_length=1, max_length=100)] = None,
    recent: FromQuery[bool] = False,
    sort: FromQuery[Literal["date", "name", "size"]] = "date",
    order: FromQuery[Literal["asc", "desc"] | None] = None,
) -> Listing:
    """A directory's images and subdirectories (none given: the root's); ``q`` searches
    image and directory names and tags everywhere, ``tag`` filters by a tag, ``recent``
    keeps what was added in the last 30 days. Newest or largest first, names A to Z,
    unless ``order`` says otherwise."""
    gallery = gallery_of(request)
    if directory_id is not None:
        await gallery.directory(directory_id)
    desc = None if order is None else order == "desc"
    images = await gallery.images(directory_id=directory_id, q=q, tag=tag, recent=recent,
                                  sort=sort, desc=desc, now=time.time())
    if q is not None:
        dirs = await gallery.directories(q=q, sort=sort, desc=bool(desc))
    elif tag is not None or recent:
        dirs = []
    else:
        dirs = await gallery.directories(directory_id, sort=sort, desc=bool(desc))
    return Listing([_out(gallery, i) for i in images], [_dir_out(d) for d in dirs])


@patch("/gallery/images/{image_id:int}", **guarded("sender", 400, 404), tags=["gallery"],
       summary="Rename, move or tag an image")
async def update_image(request: Req, image_id: ImageId,
                       data: JSONBody[ImagePatch]) -> ImageOut:
    """Its URL stays the same whatever changes."""
    gallery = gallery_of(request)
    move = data.directory_id is not msgspec.UNSET
    image = await gallery.update_image(
        image_id, name=data.name if isinstance(data.name, str) else None,
        directory_id=data.directory_id if isinstance(data.directory_id, int) else None,
        move=move, add_tags=data.add_tags, remove_tags=data.remove_tags)
    return _out(gallery, image)


@delete("/gallery/images/{image_id:int}", **guarded("sender", 400, 404), status_code=204,
        tags=["gallery"], summary="Delete an image")
async def delete_image(request: Req, image_id: ImageId) -> None:
    """Its public URL stops answering."""
    if await gallery_of(request).delete_images([image_id]) == 0:
        raise NotFound(f"no image {image_id}")


@post("/gallery/directories", **guarded("sender", 400, 404, 409), status_code=201,
      tags=["gallery"], summary="Create a directory")
async def create_directory(request: Req, data: JSONBody[DirectoryCreate]) -> DirectoryOut:
    """Names are unique among siblings; any characters, at most 244."""
    return _dir_out(await gallery_of(request).create_directory(data.name, data.parent_id,
                                                               now=time.time()))


@patch("/gallery/directories/{directory_id:int}", **guarded("sender", 400, 404, 409),
       tags=["gallery"], summary="Rename or move a directory")
async def update_directory(request: Req, directory_id: DirectoryId,
                           data: JSONBody[DirectoryPatch]) -> DirectoryOut:
    """Never into itself or one of its descendants (400, field ``parent_id``)."""
    moved = data.parent_id is not msgspec.UNSET
    d = await gallery_of(request).update_directory(
        directory_id, name=data.name if isinstance(data.name, str) else None,
        parent_id=data.parent_id if isinstance(data.parent_id, int) else None, move=moved)
    return _dir_out(d)


@delete("/gallery/directories/{directory_id:int}", **guarded("sender", 400, 404),
        status_code=200, tags=["gallery"], summary="Delete a directory and its contents")
async def delete_directory(request: Req, directory_id: DirectoryId) -> Deleted:
    """Answers how many images went with it."""
    return Deleted(await gallery_of(request).delete_directory(directory_id))


class _Sink:
    """A write-only file for ``zipfile`` whose bytes are taken out as they are written."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes, /) -> int:
        self._buf += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


def _zip_name(image: Image, used: set[str]) -> str:
    base = image.name.replace("/", "_").replace("\\", "_").lstrip(".") or "image"
    name, n = base, 1
    while name.lower() in used:
        n += 1
        stem, dot, ext = base.rpartition(".")
        name = f"{stem} ({n}).{ext}" if dot and stem else f"{base} ({n})"
    used.add(name.lower())
    return name


async def _zip_stream(gallery: Gallery, images: list[Image]) -> AsyncIterator[bytes]:
    sink = _Sink()
    used: set[str] = set()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
        for image in images:
            data = await anyio.to_thread.run_sync(gallery.data, image)
            info = zipfile.ZipInfo(_zip_name(image, used),
                                   time.gmtime(image.created_at)[:6])
            archive.writestr(info, data)
            yield sink.take()
    yield sink.take()


@post("/gallery/download", **guarded("sender", 400, 404), status_code=200,
      tags=["gallery"], summary="Download images as one zip", media_type="application/zip")
async def download_images(request: Req, data: JSONBody[DownloadBody]) -> Stream:
    """A zip of the images (in the order given), streamed as it is written."""
    gallery = gallery_of(request)
    images = [await gallery.image(i) for i in dict.fromkeys(data.ids)]
    return Stream(_zip_stream(gallery, images), media_type="application/zip",
                  headers={"Content-Disposition": 'attachment; filename="images.zip"'})


@post("/gallery/localize", **guarded("sender", 400, 404), status_code=200, tags=["gallery"],
      summary="Localise a template's external images")
async def localize_template(request: Req, data: JSONBody[LocalizeBody]) -> LocalizeAnswer:
    """Downloads every external image of the template into the gallery and rewrites each
    reference to its tracking URL; images that could not be fetched are in ``errors``."""
    gallery = gallery_of(request)
    if data.directory_id is not None:
        await gallery.directory(data.directory_id)
    config = api_state(request).herald.config.gallery
    try:
        async with SafeFetcher(config.allow_fetch_from) as fetcher:
            result = await localize(data.template, gallery, fetcher, decoder_of(request),
                                    now=time.time(), fetch_limit=config.fetch_timeout,
                                    time_limit=config.localize_timeout,
                                    max_urls=config.localize_max_urls,
                                    directory_id=data.directory_id,
                                    tags=tuple(_group_tags(request)))
    except TooManyUrls as err:
        raise ApiError(413, str(err), "template") from None
    return LocalizeAnswer(result.template, [_out(gallery, i) for i in result.images],
                          [LocalizeErrorOut(e.url, e.error) for e in result.errors])


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


_PUBLIC_ID = re.compile(r"[1-9][0-9]{0,18}")
_SHORT_HASH = re.compile(r"[0-9a-f]{16}")


@get("/{account:str}/{n:str}/{digest:str}/{name:str}", include_in_schema=False,
     media_type="application/octet-stream")
async def public_image(request: Req, account: FromPath[str], n: FromPath[str],
                       digest: FromPath[str], name: FromPath[str]) -> Response[bytes]:
    """An image on the tracking domain: no token, cached for a year. Anything that is not
    the exact path of an image (a malformed or out-of-range id or hash) is a plain 404:
    anyone may call this, so it never logs."""
    # checked before the database is asked: no id is past 2**63 - 1
    if (_PUBLIC_ID.fullmatch(n) is None or int(n) > MAX_ID
            or _SHORT_HASH.fullmatch(digest) is None):
        raise ApiError(404, "no such image")
    gallery = gallery_of(request)
    try:
        image = await gallery.resolve_public(account, int(n), digest, name)
    except (NotFound, KeyError):
        raise ApiError(404, "no such image") from None
    etag = f'"{image.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable",
               "X-Content-Type-Options": "nosniff"}
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(b"", status_code=304, headers=headers)  # no need to read the file
    try:
        data = await anyio.to_thread.run_sync(gallery.data, image)
    except (NotFound, KeyError):
        raise ApiError(404, "no such image") from None
    return Response(data, media_type=CONTENT_TYPES[image.format], headers=headers)


ROUTES = [*_OPTIONS, upload_images, list_images, update_image, delete_image, create_directory,
          update_directory, delete_directory, download_images, localize_template]
PUBLIC_ROUTES = [public_image]

