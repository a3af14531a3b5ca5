"""Gallery metadata (GalleryStore): directories as a tree, images, their tags.

Names compare as SQLite's do: ``NOCASE`` folds A-Z only, so the order and the search fold
with ``translate`` and compare byte-wise (``COLLATE "C"``), whatever the database's locale.
Changes to the tree (create, rename, move, delete a directory) take one advisory lock, so
a move can never make a cycle and a name stays unique among siblings; an image stored into
a directory takes a key-share lock on it, so the directory cannot go meanwhile.
"""

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
from engine.store.postgres.connection import PgBase
from engine.store.postgres.db import Tx

__all__ = ["DDL", "PgGallery"]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
CREATE TABLE gallery_directories (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    parent_id bigint REFERENCES gallery_directories(id) ON DELETE CASCADE,
    created_at double precision NOT NULL
);
CREATE UNIQUE INDEX gallery_directory_name
    ON gallery_directories((coalesce(parent_id, 0)), name);
-- (not in SQLite's schema) for the cascade of a deletion down the tree
CREATE INDEX gallery_directory_parent ON gallery_directories(parent_id);
CREATE TABLE gallery_images (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    directory_id bigint REFERENCES gallery_directories(id) ON DELETE CASCADE,
    sha256 text NOT NULL,
    thumb_sha256 text NOT NULL,
    -- The URL's last segment, fixed at upload: a rename keeps the URL.
    url_name text NOT NULL,
    format text NOT NULL,
    size bigint NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX gallery_image_directory ON gallery_images(directory_id);
CREATE INDEX gallery_image_sha256 ON gallery_images(sha256);
CREATE TABLE gallery_tags (
    image_id bigint NOT NULL REFERENCES gallery_images(id) ON DELETE CASCADE,
    tag text NOT NULL,
    PRIMARY KEY (image_id, tag)
);
CREATE INDEX gallery_tag ON gallery_tags(tag);
"""

#: The advisory lock of the directory tree ("HERALDGD").
_TREE_LOCK = 0x4845_5241_4C44_4744


def _fold(expr: str) -> str:
    """``expr`` with A-Z lower-cased and nothing else: SQLite's ``lower`` and NOCASE."""
    return (f"translate({expr}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',"
            " 'abcdefghijklmnopqrstuvwxyz') COLLATE \"C\"")


_IMAGE_ORDER = {"date": "i.created_at", "name": _fold("i.name"), "size": "i.size"}
_DIR_ORDER = {"date": "created_at", "name": _fold("name"), "size": _fold("name")}
_DIRECTORY_COLUMNS = "id, name, parent_id, created_at"
_IMAGE_COLUMNS = ("i.id, i.name, i.directory_id, i.sha256, i.thumb_sha256, i.url_name,"
                  " i.format, i.size, i.width, i.height, i.created_at")
_TREE = ("WITH RECURSIVE sub(id) AS (SELECT %s::bigint UNION SELECT d.id"
         " FROM gallery_directories d JOIN sub ON d.parent_id = sub.id)")


def _image(row: Sequence[Any]) -> ImageRow:
    """An image row's columns (``_IMAGE_COLUMNS``), its tags still to add."""
    (image_id, name, directory_id, sha256, thumb_sha256, url_name, fmt, size, width, height,
     created_at) = row
    return ImageRow(image_id, name, directory_id, sha256, thumb_sha256, url_name, fmt, size,
                    width, height, created_at, [])


async def _directory(tx: Tx, directory_id: int, lock: str = "") -> DirectoryRow:
    row = await tx.fetchone(
        f"SELECT {_DIRECTORY_COLUMNS} FROM gallery_directories WHERE id = %s {lock}",
        (directory_id,))
    if row is None:
        raise NotFound(f"no directory {directory_id}")
    return DirectoryRow(*row)


async def _name_taken(tx: Tx, parent_id: int | None, name: str, exclude: int | None) -> bool:
    row = await tx.fetchone(
        "SELECT id FROM gallery_directories WHERE coalesce(parent_id, 0) = %s AND name = %s"
        " AND id IS DISTINCT FROM %s::bigint", (parent_id or 0, name, exclude))
    return row is not None


async def _with_tags(tx: Tx, images: list[ImageRow]) -> list[ImageRow]:
    if not images:
        return images
    by_id = {i.id: i for i in images}
    for image_id, tag in await tx.fetchall(
            "SELECT image_id, tag FROM gallery_tags WHERE image_id = ANY(%s::bigint[])"
            ' ORDER BY tag COLLATE "C"', (list(by_id),)):
        by_id[image_id].tags.append(tag)
    return images


async def _image_or_none(tx: Tx, image_id: int) -> ImageRow | None:
    row = await tx.fetchone(f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i WHERE id = %s",
                            (image_id,))
    return None if row is None else (await _with_tags(tx, [_image(row)]))[0]


async def _orphans(tx: Tx, digests: Iterable[str]) -> frozenset[str]:
    """Those of ``digests`` no image refers to."""
    wanted = sorted(set(digests))
    if not wanted:
        return frozenset()
    rows = await tx.fetchall(
        "SELECT d FROM unnest(%s::text[]) d WHERE NOT EXISTS (SELECT 1 FROM gallery_images"
        " WHERE sha256 = d) AND NOT EXISTS (SELECT 1 FROM gallery_images"
        " WHERE thumb_sha256 = d)", (wanted,))
    return frozenset(r[0] for r in rows)


class PgGallery(PgBase):
    # -- directories -----------------------------------------------------------------------

    async def gallery_directory(self, directory_id: int) -> DirectoryRow:
        async with self.db.transaction() as tx:
            return await _directory(tx, directory_id)

    async def gallery_directories(
        self, parent_id: int | None = None, *, q: str | None = None,
        sort: GallerySort = "name", desc: bool = False,
    ) -> list[DirectoryRow]:
        order = f"{_DIR_ORDER[sort]} {'DESC' if desc else 'ASC'}, id"
        if q is not None:
            rows = await self.db.fetchall(
                f"SELECT {_DIRECTORY_COLUMNS} FROM gallery_directories"
                f" WHERE strpos({_fold('name')}, {_fold('%s')}) > 0 ORDER BY {order}", (q,))
        else:
            rows = await self.db.fetchall(
                f"SELECT {_DIRECTORY_COLUMNS} FROM gallery_directories"
                f" WHERE parent_id IS NOT DISTINCT FROM %s::bigint ORDER BY {order}",
                (parent_id,))
        return [DirectoryRow(*r) for r in rows]

    async def create_gallery_directory(
        self, name: str, parent_id: int | None, *, now: float
    ) -> DirectoryRow:
        async with self.db.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_TREE_LOCK,))
            if parent_id is not None:
                await _directory(tx, parent_id)
            if await _name_taken(tx, parent_id, name, None):
                raise StoreError(f"a directory named {name!r} already exists there")
            row = await tx.fetchone(
                "INSERT INTO gallery_directories (name, parent_id, created_at)"
                " VALUES (%s, %s, %s) RETURNING id", (name, parent_id, now))
        assert row is not None
        return DirectoryRow(row[0], name, parent_id, now)

    async def update_gallery_directory(
        self, directory_id: int, *, name: str | None = None, parent_id: int | None = None,
        move: bool = False,
    ) -> DirectoryRow:
        async with self.db.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_TREE_LOCK,))
            d = await _directory(tx, directory_id)
            new_name = d.name if name is None else name
            new_parent = parent_id if move else d.parent_id
            if move and parent_id is not None:
                await _directory(tx, parent_id)
                inside = await tx.fetchone(f"{_TREE} SELECT 1 FROM sub WHERE id = %s",
                                           (directory_id, parent_id))
                if inside is not None:
                    raise InputError(
                        "parent_id: a directory cannot move into itself or a directory"
                        " inside it")
            if await _name_taken(tx, new_parent, new_name, directory_id):
                raise StoreError(f"a directory named {new_name!r} already exists there")
            await tx.execute(
                "UPDATE gallery_directories SET name = %s, parent_id = %s WHERE id = %s",
                (new_name, new_parent, directory_id))
        return DirectoryRow(directory_id, new_name, new_parent, d.created_at)

    async def delete_gallery_directory(self, directory_id: int) -> GalleryDeleted:
        async with self.db.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_TREE_LOCK,))
            await _directory(tx, directory_id)
            # ON DELETE CASCADE takes the subdirectories, their images and tags
            digests = await tx.fetchall(
                f"{_TREE}, gone AS (DELETE FROM gallery_images WHERE directory_id IN"
                " (SELECT id FROM sub) RETURNING sha256, thumb_sha256)"
                " SELECT sha256, thumb_sha256 FROM gone", (directory_id,))
            await tx.execute("DELETE FROM gallery_directories WHERE id = %s", (directory_id,))
            orphans = await _orphans(tx, (d for pair in digests for d in pair))
        return GalleryDeleted(len(digests), orphans)

    # -- images ----------------------------------------------------------------------------

    async def gallery_image(self, image_id: int) -> ImageRow | None:
        async with self.db.transaction() as tx:
            return await _image_or_none(tx, image_id)

    async def gallery_image_by_digest(self, sha256: str) -> ImageRow | None:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i"
                                    " WHERE sha256 = %s ORDER BY id LIMIT 1", (sha256,))
            return None if row is None else (await _with_tags(tx, [_image(row)]))[0]

    async def gallery_images(self, query: ImageQuery) -> list[ImageRow]:
        where: list[str] = []
        args: list[Any] = []
        if query.q is not None:
            where.append(f"(strpos({_fold('i.name')}, {_fold('%s')}) > 0 OR EXISTS"
                         " (SELECT 1 FROM gallery_tags t WHERE t.image_id = i.id AND"
                         f" strpos({_fold('t.tag')}, {_fold('%s')}) > 0))")
            args += [query.q, query.q]
        if query.tag is not None:
            where.append("EXISTS (SELECT 1 FROM gallery_tags t WHERE t.image_id = i.id"
                         " AND t.tag = %s)")
            args.append(query.tag)
        if query.since is not None:
            where.append("i.created_at >= %s")
            args.append(query.since)
        if query.in_directory:
            where.append("i.directory_id IS NOT DISTINCT FROM %s::bigint")
            args.append(query.directory_id)
        order = f"{_IMAGE_ORDER[query.sort]} {'DESC' if query.desc else 'ASC'}, i.id"
        sql = (f"SELECT {_IMAGE_COLUMNS} FROM gallery_images i"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order}"
               " LIMIT %s")
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(sql, [*args, query.limit])
            return await _with_tags(tx, [_image(r) for r in rows])

    async def add_gallery_image(self, image: NewImage) -> ImageRow:
        tags = sorted(set(image.tags))
        async with self.db.transaction() as tx:
            if image.directory_id is not None:
                await _directory(tx, image.directory_id, "FOR KEY SHARE")
            row = await tx.fetchone(
                "INSERT INTO gallery_images (name, directory_id, sha256, thumb_sha256,"
                " url_name, format, size, width, height, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id", image[:10])
            assert row is not None
            await tx.execute("INSERT INTO gallery_tags (image_id, tag)"
                             " SELECT %s, unnest(%s::text[])", (row[0], tags))
        return ImageRow(row[0], *image[:10], tags=tags)

    async def update_gallery_image(
        self, image_id: int, *, name: str | None = None, directory_id: int | None = None,
        move: bool = False, add_tags: Sequence[str] = (), remove_tags: Sequence[str] = (),
    ) -> ImageRow:
        async with self.db.transaction() as tx:
            found = await tx.fetchone(
                "SELECT directory_id FROM gallery_images WHERE id = %s FOR UPDATE",
                (image_id,))
            if found is None:
                raise NotFound(f"no image {image_id}")
            if move and directory_id is not None:
                await _directory(tx, directory_id, "FOR KEY SHARE")
            if name is not None or move:
                await tx.execute(
                    "UPDATE gallery_images SET name = coalesce(%s, name), directory_id = %s"
                    " WHERE id = %s", (name, directory_id if move else found[0], image_id))
            if remove_tags:
                await tx.execute("DELETE FROM gallery_tags WHERE image_id = %s"
                                 " AND tag = ANY(%s::text[])", (image_id, list(remove_tags)))
            if add_tags:
                await tx.execute(
                    "INSERT INTO gallery_tags (image_id, tag) SELECT DISTINCT %s::bigint, t"
                    " FROM unnest(%s::text[]) t ON CONFLICT DO NOTHING",
                    (image_id, list(add_tags)))
            image = await _image_or_none(tx, image_id)
        assert image is not None
        return image

    async def delete_gallery_images(self, image_ids: Sequence[int]) -> GalleryDeleted:
        async with self.db.transaction() as tx:
            digests = await tx.fetchall(
                "DELETE FROM gallery_images WHERE id = ANY(%s::bigint[])"
                " RETURNING sha256, thumb_sha256", (list(image_ids),))
            orphans = await _orphans(tx, (d for pair in digests for d in pair))
        return GalleryDeleted(len(digests), orphans)
