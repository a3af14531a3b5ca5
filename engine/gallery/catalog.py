"""The gallery's metadata over the store's SQLite connection, and its blobs.

Every method is synchronous and short (no ``await`` inside), like ``SQLiteStore``'s: one
transaction per change, so an upload of many files keeps each file that succeeded. Pillow's
work (``check_image``, through a ``Decoder``) is done by the caller, in a worker thread,
before ``add_image``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from engine.config import TrackingConfig
from engine.errors import InputError, NotFound, StoreError
from engine.gallery.blobs import BlobStore
from engine.gallery.images import ImageInfo

__all__ = ["MAX_NAME", "RECENT_SECONDS", "Directory", "Gallery", "Image", "Sort", "day_tag"]

#: The longest directory (and image) name.
MAX_NAME = 244
#: "Recent" images were added within this many seconds (30 days).
RECENT_SECONDS = 30 * 86400
MAX_TAG = 100

Sort = Literal["date", "name", "size"]
_ORDER_COLUMN = {"date": "i.created_at", "name": "i.name COLLATE NOCASE", "size": "i.size"}
_DIR_ORDER = {"date": "created_at", "name": "name COLLATE NOCASE", "size": "name COLLATE NOCASE"}
_URL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_IMAGE_COLUMNS = ("i.id, i.name, i.directory_id, i.sha256, i.thumb_sha256, i.url_name,"
                  " i.format, i.size, i.width, i.height, i.created_at")


@dataclass
class Image:
    id: int
    name: str
    directory_id: int | None
    sha256: str
    thumb_sha256: str
    url_name: str
    format: str
    size: int
    width: int
    height: int
    created_at: float
    tags: list[str] = field(default_factory=list)


@dataclass
class Directory:
    id: int
    name: str
    parent_id: int | None
    created_at: float


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
    return tag


class Gallery:
    """Images and directories of one workspace; ``url(image)`` is its public address."""

    def __init__(self, conn: sqlite3.Connection, blobs: BlobStore,
                 tracking: TrackingConfig) -> None:
        self.conn = conn
        self.blobs = blobs
        self.tracking = tracking

    # -- addresses ----------------------------------------------------------------------

    def path_of(self, image: Image) -> str:
        """``/{account}/{n}/{hash}/{name}``: never changes after upload."""
        return (f"/{quote(self.tracking.account)}/{image.id}/{image.sha256[:16]}/"
                f"{image.url_name}")

    def url(self, image: Image) -> str:
        return f"{self.tracking.scheme}://{self.tracking.domain}{self.path_of(image)}"

    def is_own_url(self, url: str) -> bool:
        """Whether ``url`` already points into this gallery (nothing to localise)."""
        parts = urlsplit(url)
        return (parts.netloc.lower() == self.tracking.domain.lower()
                and parts.path.startswith(f"/{self.tracking.account}/"))

    def resolve_public(self, account: str, n: int, short_hash: str, name: str) -> Image:
        """The image a public path names; NotFound unless every segment matches."""
        image = self._image_or_none(n)
        if (image is None or account != self.tracking.account
                or short_hash != image.sha256[:16] or name != image.url_name):
            raise NotFound("no such image")
        return image

    # -- transactions ---------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self.conn)

    # -- directories ----------------------------------------------------------------

    def directory(self, directory_id: int) -> Directory:
        row = self.conn.execute(
            "SELECT id, name, parent_id, created_at FROM gallery_directories WHERE id = ?",
            (directory_id,)).fetchone()
        if row is None:
            raise NotFound(f"no directory {directory_id}")
        return Directory(*row)

    def _descendants(self, directory_id: int) -> set[int]:
        """``directory_id`` and every directory under it."""
        rows = self.conn.execute(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION SELECT d.id FROM gallery_directories d"
            " JOIN sub ON d.parent_id = sub.id) SELECT id FROM sub", (directory_id,))
        return {r[0] for r in rows}

    def _name_taken(self, parent_id: int | None, name: str, exclude: int | None) -> bool:
        row = self.conn.execute(
            "SELECT id FROM gallery_directories WHERE coalesce(parent_id, 0) = ? AND name = ?"
            " AND id IS NOT ?", (parent_id or 0, name, exclude)).fetchone()
        return row is not None

    def create_directory(self, name: str, parent_id: int | None = None, *,
                         now: float) -> Directory:
        _check_name(name, "directory")
        with self._tx() as c:
            if parent_id is not None:
                self.directory(parent_id)
            if self._name_taken(parent_id, name, None):
                raise StoreError(f"a directory named {name!r} already exists there")
            cur = c.execute("INSERT INTO gallery_directories (name, parent_id, created_at)"
                            " VALUES (?, ?, ?)", (name, parent_id, now))
        assert cur.lastrowid is not None
        return Directory(cur.lastrowid, name, parent_id, now)

    def update_directory(self, directory_id: int, *, name: str | None = None,
                         parent_id: int | None = None, move: bool = False) -> Directory:
        """Rename and/or (``move=True``) move under ``parent_id`` (None: the root)."""
        with self._tx() as c:
            d = self.directory(directory_id)
            new_name = d.name if name is None else _check_name(name, "directory")
            new_parent = parent_id if move else d.parent_id
            if move and parent_id is not None:
                self.directory(parent_id)
                if parent_id in self._descendants(directory_id):
                    raise InputError(
                        "parent_id: a directory cannot move into itself or a directory"
                        " inside it")
            if self._name_taken(new_parent, new_name, directory_id):
                raise StoreError(f"a directory named {new_name!r} already exists there")
            c.execute("UPDATE gallery_directories SET name = ?, parent_id = ? WHERE id = ?",
                      (new_name, new_parent, directory_id))
        return Directory(directory_id, new_name, new_parent, d.created_at)

    def delete_directory(self, directory_id: int) -> int:
        """Delete a directory with everything inside; the number of images deleted."""
        with self._tx() as c:
            self.directory(directory_id)
            subtree = sorted(self._descendants(directory_id))
            marks = ",".join("?" * len(subtree))
            digests = c.execute(
                f"SELECT sha256, thumb_sha256 FROM gallery_images WHERE directory_id IN ({marks})",
                subtree).fetchall()
            c.execute("DELETE FROM gallery_directories WHERE id = ?", (directory_id,))
        self._collect({d for pair in digests for d in pair})
        return len(digests)

    def directories(self, parent_id: int | None = None, *, q: str | None = None,
                    sort: Sort = "name", desc: bool = False) -> list[Directory]:
        order = f"{_DIR_ORDER[sort]} {'DESC' if desc else 'ASC'}, id"
        if q is not None:
            rows = self.conn.execute(
                "SELECT id, name, parent_id, created_at FROM gallery_directories"
                f" WHERE instr(lower(name), lower(?)) > 0 ORDER BY {order}", (q,))
        else:
            rows = self.conn.execute(
                "SELECT id, name, parent_id, created_at FROM gallery_directories"
                f" WHERE parent_id IS ? ORDER BY {order}", (parent_id,))
        return [Directory(*r) for r in rows]

    # -- images -----------------------------------------------------------------------

    def _image_or_none(self, image_id: int) -> Image | None:
        row = self.conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i WHERE id = ?",
                                (image_id,)).fetchone()
        if row is None:
            return None
        return self._with_tags([Image(*row)])[0]

    def image(self, image_id: int) -> Image:
        image = self._image_or_none(image_id)
        if image is None:
            raise NotFound(f"no image {image_id}")
        return image

    def _with_tags(self, images: list[Image]) -> list[Image]:
        by_id = {i.id: i for i in images}
        ids = list(by_id)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for image_id, tag in self.conn.execute(
                    "SELECT image_id, tag FROM gallery_tags WHERE image_id IN"
                    f" ({','.join('?' * len(chunk))}) ORDER BY tag", chunk):
                by_id[image_id].tags.append(tag)
        return images

    def find_by_digest(self, sha256: str) -> Image | None:
        row = self.conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i"
                                " WHERE sha256 = ? ORDER BY id LIMIT 1", (sha256,)).fetchone()
        return None if row is None else self._with_tags([Image(*row)])[0]

    def add_image(self, name: str, data: bytes, info: ImageInfo, *, now: float,
                  directory_id: int | None = None, tags: Iterable[str] = ()) -> Image:
        """Store a checked image (``check_image(data)``), tagged with its day and ``tags``."""
        _check_name(name, "file")
        if directory_id is not None:
            self.directory(directory_id)
        sha = self.blobs.put(data)
        thumb = self.blobs.put(info.thumbnail)
        all_tags = sorted({day_tag(now), *(_check_tag(t) for t in tags)})
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO gallery_images (name, directory_id, sha256, thumb_sha256,"
                " url_name, format, size, width, height, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, directory_id, sha, thumb, url_name(name), info.format, len(data),
                 info.width, info.height, now))
            assert cur.lastrowid is not None
            c.executemany("INSERT INTO gallery_tags (image_id, tag) VALUES (?, ?)",
                          [(cur.lastrowid, t) for t in all_tags])
        return Image(cur.lastrowid, name, directory_id, sha, thumb, url_name(name),
                     info.format, len(data), info.width, info.height, now, all_tags)

    def update_image(self, image_id: int, *, name: str | None = None,
                     directory_id: int | None = None, move: bool = False,
                     add_tags: Sequence[str] = (), remove_tags: Sequence[str] = ()) -> Image:
        """Rename, move (``move=True``; None: the root) and tag; the URL never changes."""
        added = [_check_tag(t) for t in add_tags]
        removed = [t.strip() for t in remove_tags]
        with self._tx() as c:
            self.image(image_id)
            if name is not None:
                c.execute("UPDATE gallery_images SET name = ? WHERE id = ?",
                          (_check_name(name, "file"), image_id))
            if move:
                if directory_id is not None:
                    self.directory(directory_id)
                c.execute("UPDATE gallery_images SET directory_id = ? WHERE id = ?",
                          (directory_id, image_id))
            c.executemany("DELETE FROM gallery_tags WHERE image_id = ? AND tag = ?",
                          [(image_id, t) for t in removed])
            c.executemany("INSERT OR IGNORE INTO gallery_tags (image_id, tag) VALUES (?, ?)",
                          [(image_id, t) for t in added])
        return self.image(image_id)

    def delete_images(self, image_ids: Sequence[int]) -> int:
        """Delete images (unknown ids are ignored); the number deleted."""
        digests: set[str] = set()
        deleted = 0
        with self._tx() as c:
            for image_id in image_ids:
                row = c.execute("DELETE FROM gallery_images WHERE id = ?"
                                " RETURNING sha256, thumb_sha256", (image_id,)).fetchone()
                if row is not None:
                    deleted += 1
                    digests.update(row)
        self._collect(digests)
        return deleted

    def _collect(self, digests: set[str]) -> None:
        """Delete the blobs no image refers to any more."""
        for d in digests:
            used = self.conn.execute(
                "SELECT 1 FROM gallery_images WHERE sha256 = ? OR thumb_sha256 = ? LIMIT 1",
                (d, d)).fetchone()
            if used is None:
                self.blobs.delete(d)

    def images(self, *, directory_id: int | None = None, q: str | None = None,
               tag: str | None = None, recent: bool = False, sort: Sort = "date",
               desc: bool | None = None, now: float, everywhere: bool = False,
               limit: int = 1000) -> list[Image]:
        """Images matching every filter given. Without ``q``, ``tag``, ``recent`` or
        ``everywhere``, the contents of ``directory_id`` (None: the root)."""
        where: list[str] = []
        args: list[Any] = []
        if q is not None:
            where.append("(instr(lower(i.name), lower(?)) > 0 OR EXISTS (SELECT 1 FROM"
                         " gallery_tags t WHERE t.image_id = i.id AND"
                         " instr(lower(t.tag), lower(?)) > 0))")
            args += [q, q]
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM gallery_tags t WHERE t.image_id = i.id"
                         " AND t.tag = ?)")
            args.append(tag)
        if recent:
            where.append("i.created_at >= ?")
            args.append(now - RECENT_SECONDS)
        if directory_id is not None or not (q or tag or recent or everywhere):
            where.append("i.directory_id IS ?")
            args.append(directory_id)
        if desc is None:
            desc = sort != "name"
        order = f"{_ORDER_COLUMN[sort]} {'DESC' if desc else 'ASC'}, i.id"
        sql = (f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order} LIMIT ?")
        rows = self.conn.execute(sql, [*args, limit]).fetchall()
        return self._with_tags([Image(*r) for r in rows])

    def data(self, image: Image) -> bytes:
        return self.blobs.get(image.sha256)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
