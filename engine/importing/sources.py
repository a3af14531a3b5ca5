"""What a path holds: one table (CSV, TXT, XLSX) or an archive of them, each a ``Source``.

The format comes from the extension (``.csv`` ``.txt`` ``.tsv``, ``.xlsx`` ``.xlsm``,
``.zip``, ``.tar.gz`` ``.tgz`` ``.tar``), else from the first bytes: ``PK`` is a zip, and an
XLSX workbook if it holds ``xl/workbook.xml``; gzip or ``ustar`` is a tar; anything else is
read as text. Archives do not nest. Errors name a member as ``archive.zip:member.csv``.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from engine.errors import InputError
from engine.importing.archives import Bounded, ratio_error, tar_members, zip_members
from engine.importing.rows import Row
from engine.importing.text import read_text
from engine.importing.xlsx import read_xlsx

__all__ = ["Source", "kind_of", "open_sources"]

_TEXT = (".csv", ".txt", ".tsv")
_XLSX = (".xlsx", ".xlsm")
_TAR = (".tar.gz", ".tgz", ".tar")
#: What a damaged archive member raises while it is read.
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError,
            NotImplementedError)


@dataclass(frozen=True)
class Source:
    """One table to import: ``name`` as errors show it, ``open()`` its rows."""

    name: str
    open: Callable[[], AbstractContextManager[Iterator[Row]]]


def kind_of(name: str, head: bytes) -> str:
    """``text``, ``xlsx``, ``zip``, ``tar`` or ``xls`` (refused), by extension, else magic."""
    lower = name.lower()
    if lower.endswith(_TEXT):
        return "text"
    if lower.endswith(_XLSX):
        return "xlsx"
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(_TAR):
        return "tar"
    if lower.endswith(".xls") or head.startswith(b"\xd0\xcf\x11\xe0"):
        return "xls"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    return "text"


@contextmanager
def open_sources(
    path: Path, *, encoding: str | None, max_unpacked: int, max_ratio: int
) -> Iterator[list[Source]]:
    """The tables in ``path``, usable until the block ends; InputError if there are none
    or the file is refused. ``max_ratio``: how many times its compressed size an archive
    member (or a workbook's part) may unpack to."""
    name = str(path)
    try:
        handle = path.open("rb")
    except OSError as err:
        raise InputError(f"{name}: cannot read ({err.strerror})") from err
    with handle:
        kind = kind_of(path.name, handle.read(512))
        handle.seek(0)
        if kind == "xlsx":
            yield [_table(name, handle, "xlsx", encoding, max_unpacked, max_ratio)]
        elif kind == "zip":
            try:
                archive = zipfile.ZipFile(handle)
            except (zipfile.BadZipFile, OSError) as err:
                raise InputError(f"{name}: not a readable zip archive ({err})") from err
            with archive:
                if not name.lower().endswith(".zip") and "xl/workbook.xml" in archive.namelist():
                    yield [_table(name, handle, "xlsx", encoding, max_unpacked, max_ratio)]
                else:
                    yield _zip_sources(archive, name, encoding, max_unpacked, max_ratio)
        elif kind == "tar":
            try:
                tar = tarfile.open(fileobj=handle, mode="r:*")
            except (tarfile.TarError, OSError) as err:
                raise InputError(f"{name}: not a readable tar archive ({err})") from err
            with tar:
                size = os.fstat(handle.fileno()).st_size
                yield _tar_sources(tar, name, encoding, max_unpacked, max_ratio, size)
        elif kind == "xls":
            raise InputError(f"{name}: an old .xls workbook; save it as .xlsx or .csv")
        else:
            yield [_table(name, handle, "text", encoding, max_unpacked, max_ratio)]


def _table(
    name: str,
    handle: IO[bytes],
    kind: str,
    encoding: str | None,
    max_unpacked: int,
    max_ratio: int,
) -> Source:
    @contextmanager
    def rows() -> Iterator[Iterator[Row]]:
        handle.seek(0)
        if kind == "xlsx":
            table = read_xlsx(handle, name, max_unpacked=max_unpacked, max_ratio=max_ratio)
        else:
            table = read_text(handle, name, encoding)
        with closing(table):
            yield table

    return Source(name, rows)


def _zip_sources(
    archive: zipfile.ZipFile, name: str, encoding: str | None, max_unpacked: int, max_ratio: int
) -> list[Source]:
    def opener(info: zipfile.ZipInfo) -> IO[bytes]:
        bound = max_ratio * info.compress_size
        error = ratio_error(name, info.filename, max_ratio)
        return io.BufferedReader(Bounded(archive.open(info), bound, error), 1 << 16)

    sources = [
        _member(f"{name}:{info.filename}", partial(opener, info), encoding, max_unpacked,
                max_ratio)
        for info in zip_members(archive, name, max_unpacked, max_ratio)
    ]
    if not sources:
        raise InputError(f"{name}: the archive holds no files")
    return sources


def _tar_sources(
    tar: tarfile.TarFile,
    name: str,
    encoding: str | None,
    max_unpacked: int,
    max_ratio: int,
    compressed: int,
) -> list[Source]:
    def opener(info: tarfile.TarInfo) -> IO[bytes]:
        raw = tar.extractfile(info)
        assert raw is not None  # tar_members keeps plain files only
        error = ratio_error(name, info.name, max_ratio)
        return io.BufferedReader(Bounded(raw, max_ratio * compressed, error), 1 << 16)

    sources = [
        _member(f"{name}:{info.name}", partial(opener, info), encoding, max_unpacked,
                max_ratio)
        for info in tar_members(tar, name, max_unpacked, max_ratio, compressed=compressed)
    ]
    if not sources:
        raise InputError(f"{name}: the archive holds no files")
    return sources


def _member(
    member: str,
    opener: Callable[[], IO[bytes]],
    encoding: str | None,
    max_unpacked: int,
    max_ratio: int,
) -> Source:
    kind = kind_of(member, b"")
    if kind in ("zip", "tar", "xls"):
        _refuse(member, kind)

    @contextmanager
    def rows() -> Iterator[Iterator[Row]]:
        with _damaged(member):
            raw = opener()
        with raw:
            if member.lower().endswith(_TEXT + _XLSX):
                found = kind
            else:  # no telling extension: look at the first bytes, without seeking back
                peek = getattr(raw, "peek", None)
                with _damaged(member):
                    found = kind_of(member, peek(512)[:512] if peek else b"")
                _refuse(member, found)
            if found == "xlsx":
                with tempfile.TemporaryFile() as copy:  # openpyxl seeks; in a member that
                    with _damaged(member):  # means unpacking it again from the start
                        shutil.copyfileobj(raw, copy, 1 << 20)
                    table = read_xlsx(copy, member, max_unpacked=max_unpacked,
                                      max_ratio=max_ratio)
                    with closing(table):
                        yield table
            else:
                table = _guarded(read_text(raw, member, encoding), member)
                with closing(table):
                    yield table

    return Source(member, rows)


def _refuse(member: str, kind: str) -> None:
    if kind in ("zip", "tar"):
        raise InputError(f"{member}: an archive inside the archive; unpack it first")
    if kind == "xls":
        raise InputError(f"{member}: an old .xls workbook; save it as .xlsx or .csv")


def _guarded(rows: Iterator[Row], member: str) -> Generator[Row, None, None]:
    with _damaged(member):
        yield from rows


@contextmanager
def _damaged(member: str) -> Iterator[None]:
    try:
        yield
    except _DAMAGED as err:
        raise InputError(f"{member}: damaged archive member ({err})") from err
