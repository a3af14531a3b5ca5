"""The gallery: its metadata through the store's ``GalleryStore`` role, its bytes in a
``BlobStore``.

Each change is one store call (one transaction), so an upload of many files keeps each file
that succeeded. Names and tags are checked here, before the store is asked; Pillow's work
(``check_image``, through a ``Decoder``) is done by the caller, in a worker thread, before
``add_image``. Blobs are written and deleted in worker threads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urlsplit

import anyio.to_thread

from engine.config import TrackingConfig
from engine.errors import InputError, NotFound
from engine.gallery.blobs import BlobStore
from engine.gallery.images import ImageInfo
from engine.store.base import (
    DirectoryRow,
    GallerySort,
    GalleryStore,
    ImageQuery,
    ImageRow,
    NewImage,
)

__all__ = ["MAX_NAME", "RECENT_SECONDS", "Directory", "Gallery", "Image", "Sort", "day_tag"]

#: The longest directory (and image) name.
MAX_NAME = 244
#: "Recent" images were added within this many seconds (30 days).
RECENT_SECONDS = 30 * 86400
MAX_TAG = 100
#: Ids past this are no row's (databases keep 64-bit signed integers).
_MAX_ID = 2**63 - 1

Sort = GallerySort
Image = ImageRow
Directory = DirectoryRow
_URL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def day_tag(now: float) -> str:
    """The automatic tag of an upload at ``now``: its UTC date, ``2026-11-22``."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def url_name(name: str) -> str:
    """The last segment of an image's URL: the name reduced to ``[A-Za-z0-9._-]``."""
    safe = _URL_UNSAFE.sub("-", name).strip("-.")[:100]
    return safe or "image"


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InputError(f"name: a {what} name is 1 to {MAX_NAME} characters")
    if "\x00" in name:
        raise InputError(f"name: a {what} name may not contain NUL")
    return name


def _check_tag(tag: str) -> str:
    tag = tag.strip()
    if not tag or len(tag) > MAX_TAG:
        raise InputError(f"tags: a tag is 1 to {MAX_TAG} characters")
    if "\x00" in tag:
        raise InputError("tags: a tag may not contain NUL")
    return tag


def _is_id(n: int) -> bool:
    return 0 < n <= _MAX_ID


class Gallery:
    """Images and directories of one workspace; ``url(image)`` is its public address."""

    def __init__(self, store: GalleryStore, blobs: BlobStore,
                 tracking: TrackingConfig) -> None:
        self.store = store
        self.blobs = blobs
        self.tracking = tracking

    # -- addresses ----------------------------------------------------------------------

    def path_of(self, image: Image) -> str:
        """``/{account}/{n}/{hash}/{name}``: never changes after upload."""
        return (f"/{quote(self.tracking.account)}/{image.id}/{image.sha256[:16]}/"
                f"{image.url_name}")

    def url(self, image: Image) -> str:
        return f"{self.tracking.scheme}://{self.tracking.host}{self.path_of(image)}"

    def is_own_url(self, url: str) -> bool:
        """Whether ``url`` already points into this gallery (nothing to localise)."""
        parts = urlsplit(url)
        return (parts.netloc.lower() == self.tracking.host.lower()
                and parts.path.startswith(f"/{self.tracking.account}/"))

    async def resolve_public(self, account: str, n: int, short_hash: str,
                             name: str) -> Image:
        """The image a public path names; NotFound unless every segment matches."""
        image = await self.store.gallery_image(n) if _is_id(n) else None
        if (image is None or account != self.tracking.account
                or short_hash != image.sha256[:16] or name != image.url_name):
            raise NotFound("no such image")
        return image

    # -- directories ----------------------------------------------------------------

    async def directory(self, directory_id: int) -> Directory:
        if not _is_id(directory_id):
            raise NotFound(f"no directory {directory_id}")
        return await self.store.gallery_directory(directory_id)

    async def create_directory(self, name: str, parent_id: int | None = None, *,
                               now: float) -> Directory:
        _check_name(name, "directory")
        if parent_id is not None and not _is_id(parent_id):
            raise NotFound(f"no directory {parent_id}")
        return await self.store.create_gallery_directory(name, parent_id, now=now)

    async def update_directory(self, directory_id: int, *, name: str | None = None,
                               parent_id: int | None = None, move: bool = False) -> Directory:
        """Rename and/or (``move=True``) move under ``parent_id`` (None: the root)."""
        if not _is_id(directory_id):
            raise NotFound(f"no directory {directory_id}")
        if name is not None:
            _check_name(name, "directory")
        if move and parent_id is not None and not _is_id(parent_id):
            raise NotFound(f"no directory {parent_id}")
        return await self.store.update_gallery_directory(
            directory_id, name=name, parent_id=parent_id, move=move)

    async def delete_directory(self, directory_id: int) -> int:
        """Delete a directory with everything inside; the number of images deleted."""
        if not _is_id(directory_id):
            raise NotFound(f"no directory {directory_id}")
        deleted = await self.store.delete_gallery_directory(directory_id)
        await self._collect(deleted.orphans)
        return deleted.images

    async def directories(self, parent_id: int | None = None, *, q: str | None = None,
                          sort: Sort = "name", desc: bool = False) -> list[Directory]:
        if (q is not None and "\x00" in q) or (parent_id is not None
                                                and not _is_id(parent_id)):
            return []  # no name holds NUL
        return await self.store.gallery_directories(parent_id, q=q, sort=sort, desc=desc)

    # -- images -----------------------------------------------------------------------

    async def image(self, image_id: int) -> Image:
        image = await self.store.gallery_image(image_id) if _is_id(image_id) else None
        if image is None:
            raise NotFound(f"no image {image_id}")
        return image

    async def find_by_digest(self, sha256: str) -> Image | None:
        return await self.store.gallery_image_by_digest(sha256)

    async def add_image(self, name: str, data: bytes, info: ImageInfo, *, now: float,
                        directory_id: int | None = None, tags: Iterable[str] = ()) -> Image:
        """Store a checked image (``check_image(data)``), tagged with its day and ``tags``."""
        _check_name(name, "file")
        all_tags = sorted({day_tag(now), *(_check_tag(t) for t in tags)})
        if directory_id is not None:
            await self.directory(directory_id)
        sha = await anyio.to_thread.run_sync(self.blobs.put, data)
        thumb = await anyio.to_thread.run_sync(self.blobs.put, info.thumbnail)
        # (should the directory go meanwhile, NotFound leaves the blobs: harmless)
        return await self.store.add_gallery_image(NewImage(
            name, directory_id, sha, thumb, url_name(name), info.format, len(data),
            info.width, info.height, now, all_tags))

    async def update_image(self, image_id: int, *, name: str | None = None,
                           directory_id: int | None = None, move: bool = False,
                           add_tags: Sequence[str] = (),
                           remove_tags: Sequence[str] = ()) -> Image:
        """Rename, move (``move=True``; None: the root) and tag; the URL never changes."""
        if not _is_id(image_id):
            raise NotFound(f"no image {image_id}")
        if name is not None:
            _check_name(name, "file")
        if move and directory_id is not None and not _is_id(directory_id):
            raise NotFound(f"no directory {directory_id}")
        added = [_check_tag(t) for t in add_tags]
        removed = [t.strip() for t in remove_tags if "\x00" not in t]  # none is tagged so
        return await self.store.update_gallery_image(
            image_id, name=name, directory_id=directory_id, move=move, add_tags=added,
            remove_tags=removed)

    async def delete_images(self, image_ids: Sequence[int]) -> int:
        """Delete images (unknown ids are ignored); the number deleted."""
        deleted = await self.store.delete_gallery_images([i for i in image_ids if _is_id(i)])
        await self._collect(deleted.orphans)
        return deleted.images

    async def _collect(self, digests: Iterable[str]) -> None:
        """Delete blobs no image refers to any more."""
        for d in digests:
            await anyio.to_thread.run_sync(self.blobs.delete, d)

    async def images(self, *, directory_id: int | None = None, q: str | None = None,
                     tag: str | None = None, recent: bool = False, sort: Sort = "date",
                     desc: bool | None = None, now: float, everywhere: bool = False,
                     limit: int = 1000) -> list[Image]:
        """Images matching every filter given. Without ``q``, ``tag``, ``recent`` or
        ``everywhere``, the contents of ``directory_id`` (None: the root)."""
        if ((q is not None and "\x00" in q) or (tag is not None and "\x00" in tag)
                or (directory_id is not None and not _is_id(directory_id))):
            return []  # no name or tag holds NUL
        return await self.store.gallery_images(ImageQuery(
            q=q, tag=tag, since=now - RECENT_SECONDS if recent else None,
            in_directory=directory_id is not None or not (q or tag or recent or everywhere),
            directory_id=directory_id, sort=sort, desc=sort != "name" if desc is None else desc,
            limit=limit))

    def data(self, image: Image) -> bytes:
        return self.blobs.get(image.sha256)
