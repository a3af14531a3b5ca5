"""Gallery metadata (GalleryStore): directories as a tree, images, their tags."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from engine.errors import InputError, NotFound, StoreError
from engine.store.base import (
    DirectoryRow,
    GalleryDeleted,
    GallerySort,
    ImageQuery,
    ImageRow,
    NewImage,
)
from engine.store.sqlite.connection import SQLiteBase

__all__ = ["SQLiteGallery"]

_IMAGE_ORDER = {"date": "i.created_at", "name": "i.name COLLATE NOCASE", "size": "i.size"}
_DIR_ORDER = {"date": "created_at", "name": "name COLLATE NOCASE", "size": "name COLLATE NOCASE"}
_DIRECTORY_COLUMNS = "id, name, parent_id, created_at"
_IMAGE_COLUMNS = ("i.id, i.name, i.directory_id, i.sha256, i.thumb_sha256, i.url_name,"
                  " i.format, i.size, i.width, i.height, i.created_at")
#: Bound parameters per ``IN (...)`` list.
_CHUNK = 500


def _image(row: Sequence[Any]) -> ImageRow:
    """An image row's columns (``_IMAGE_COLUMNS``), its tags still to add."""
    (image_id, name, directory_id, sha256, thumb_sha256, url_name, fmt, size, width, height,
     created_at) = row
    return ImageRow(image_id, name, directory_id, sha256, thumb_sha256, url_name, fmt, size,
                    width, height, created_at, [])


class SQLiteGallery(SQLiteBase):
    # -- reads on the connection, for the methods below ------------------------------------

    def _directory(self, directory_id: int) -> DirectoryRow:
        row = self.conn.execute(
            f"SELECT {_DIRECTORY_COLUMNS} FROM gallery_directories WHERE id = ?",
            (directory_id,)).fetchone()
        if row is None:
            raise NotFound(f"no directory {directory_id}")
        return DirectoryRow(*row)

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

    def _with_tags(self, images: list[ImageRow]) -> list[ImageRow]:
        by_id = {i.id: i for i in images}
        ids = list(by_id)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            for image_id, tag in self.conn.execute(
                    "SELECT image_id, tag FROM gallery_tags WHERE image_id IN"
                    f" ({','.join('?' * len(chunk))}) ORDER BY tag", chunk):
                by_id[image_id].tags.append(tag)
        return images

    def _image_or_none(self, image_id: int) -> ImageRow | None:
        row = self.conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i WHERE id = ?",
                                (image_id,)).fetchone()
        return None if row is None else self._with_tags([_image(row)])[0]

    def _orphans(self, digests: Iterable[str]) -> frozenset[str]:
        """Those of ``digests`` no image refers to."""
        return frozenset(
            d for d in set(digests)
            if self.conn.execute(
                "SELECT 1 FROM gallery_images WHERE sha256 = ? OR thumb_sha256 = ? LIMIT 1",
                (d, d)).fetchone() is None)

    # -- directories -----------------------------------------------------------------------

    async def gallery_directory(self, directory_id: int) -> DirectoryRow:
        return self._directory(directory_id)

    async def gallery_directories(
        self, parent_id: int | None = None, *, q: str | None = None,
        sort: GallerySort = "name", desc: bool = False,
    ) -> list[DirectoryRow]:
        order = f"{_DIR_ORDER[sort]} {'DESC' if desc else 'ASC'}, id"
        if q is not None:
            rows = self.conn.execute(
                f"SELECT {_DIRECTORY_COLUMNS} FROM gallery_directories"
                f" WHERE instr(lower(name), lower(?)) > 0 ORDER BY {order}", (q,))
        else:
            rows = self.conn.execute(
                f"SELECT {_DIRECTORY_COLUMNS} FROM gallery_directories"
                f" WHERE parent_id IS ? ORDER BY {order}", (parent_id,))
        return [DirectoryRow(*r) for r in rows]

    async def create_gallery_directory(
        self, name: str, parent_id: int | None, *, now: float
    ) -> DirectoryRow:
        with self._tx() as c:
            if parent_id is not None:
                self._directory(parent_id)
            if self._name_taken(parent_id, name, None):
                raise StoreError(f"a directory named {name!r} already exists there")
            cur = c.execute("INSERT INTO gallery_directories (name, parent_id, created_at)"
                            " VALUES (?, ?, ?)", (name, parent_id, now))
        assert cur.lastrowid is not None
        return DirectoryRow(cur.lastrowid, name, parent_id, now)

    async def update_gallery_directory(
        self, directory_id: int, *, name: str | None = None, parent_id: int | None = None,
        move: bool = False,
    ) -> DirectoryRow:
        with self._tx() as c:
            d = self._directory(directory_id)
            new_name = d.name if name is None else name
            new_parent = parent_id if move else d.parent_id
            if move and parent_id is not None:
                self._directory(parent_id)
                if parent_id in self._descendants(directory_id):
                    raise InputError(
                        "parent_id: a directory cannot move into itself or a directory"
                        " inside it")
            if self._name_taken(new_parent, new_name, directory_id):
                raise StoreError(f"a directory named {new_name!r} already exists there")
            c.execute("UPDATE gallery_directories SET name = ?, parent_id = ? WHERE id = ?",
                      (new_name, new_parent, directory_id))
        return DirectoryRow(directory_id, new_name, new_parent, d.created_at)

    async def delete_gallery_directory(self, directory_id: int) -> GalleryDeleted:
        with self._tx() as c:
            self._directory(directory_id)
            subtree = sorted(self._descendants(directory_id))
            digests: list[tuple[str, str]] = []
            for start in range(0, len(subtree), _CHUNK):
                chunk = subtree[start:start + _CHUNK]
                digests += c.execute(
                    "SELECT sha256, thumb_sha256 FROM gallery_images WHERE directory_id IN"
                    f" ({','.join('?' * len(chunk))})", chunk).fetchall()
            # ON DELETE CASCADE takes the subdirectories, their images and tags
            c.execute("DELETE FROM gallery_directories WHERE id = ?", (directory_id,))
            orphans = self._orphans(d for pair in digests for d in pair)
        return GalleryDeleted(len(digests), orphans)

    # -- images ----------------------------------------------------------------------------

    async def gallery_image(self, image_id: int) -> ImageRow | None:
        return self._image_or_none(image_id)

    async def gallery_image_by_digest(self, sha256: str) -> ImageRow | None:
        row = self.conn.execute(f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i"
                                " WHERE sha256 = ? ORDER BY id LIMIT 1", (sha256,)).fetchone()
        return None if row is None else self._with_tags([_image(row)])[0]

    async def gallery_images(self, query: ImageQuery) -> list[ImageRow]:
        where: list[str] = []
        args: list[Any] = []
        if query.q is not None:
            where.append("(instr(lower(i.name), lower(?)) > 0 OR EXISTS (SELECT 1 FROM"
                         " gallery_tags t WHERE t.image_id = i.id AND"
                         " instr(lower(t.tag), lower(?)) > 0))")
            args += [query.q, query.q]
        if query.tag is not None:
            where.append("EXISTS (SELECT 1 FROM gallery_tags t WHERE t.image_id = i.id"
                         " AND t.tag = ?)")
            args.append(query.tag)
        if query.since is not None:
            where.append("i.created_at >= ?")
            args.append(query.since)
        if query.in_directory:
            where.append("i.directory_id IS ?")
            args.append(query.directory_id)
        order = f"{_IMAGE_ORDER[query.sort]} {'DESC' if query.desc else 'ASC'}, i.id"
        sql = (f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order} LIMIT ?")
        rows = self.conn.execute(sql, [*args, query.limit]).fetchall()
        return self._with_tags([_image(r) for r in rows])

    async def add_gallery_image(self, image: NewImage) -> ImageRow:
        tags = sorted(set(image.tags))
        with self._tx() as c:
            if image.directory_id is not None:
                self._directory(image.directory_id)
            cur = c.execute(
                "INSERT INTO gallery_images (name, directory_id, sha256, thumb_sha256,"
                " url_name, format, size, width, height, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", image[:10])
            image_id = cur.lastrowid
            assert image_id is not None
            c.executemany("INSERT INTO gallery_tags (image_id, tag) VALUES (?, ?)",
                          [(image_id, t) for t in tags])
        return ImageRow(image_id, *image[:10], tags=tags)

    async def update_gallery_image(
        self, image_id: int, *, name: str | None = None, directory_id: int | None = None,
        move: bool = False, add_tags: Sequence[str] = (), remove_tags: Sequence[str] = (),
    ) -> ImageRow:
        with self._tx() as c:
            if self._image_or_none(image_id) is None:
                raise NotFound(f"no image {image_id}")
            if name is not None:
                c.execute("UPDATE gallery_images SET name = ? WHERE id = ?", (name, image_id))
            if move:
                if directory_id is not None:
                    self._directory(directory_id)
                c.execute("UPDATE gallery_images SET directory_id = ? WHERE id = ?",
                          (directory_id, image_id))
            c.executemany("DELETE FROM gallery_tags WHERE image_id = ? AND tag = ?",
                          [(image_id, t) for t in remove_tags])
            c.executemany("INSERT OR IGNORE INTO gallery_tags (image_id, tag) VALUES (?, ?)",
                          [(image_id, t) for t in add_tags])
            image = self._image_or_none(image_id)
        assert image is not None
        return image

    async def delete_gallery_images(self, image_ids: Sequence[int]) -> GalleryDeleted:
        digests: set[str] = set()
        deleted = 0
        with self._tx() as c:
            for image_id in image_ids:
                row = c.execute("DELETE FROM gallery_images WHERE id = ?"
                                " RETURNING sha256, thumb_sha256", (image_id,)).fetchone()
                if row is not None:
                    deleted += 1
                    digests.update(row)
            orphans = self._orphans(digests)
        return GalleryDeleted(deleted, orphans)
