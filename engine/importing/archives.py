"""ZIP and TAR(.GZ) archives: which members to import, and refusing unsafe archives.

The members are listed and checked before any row is imported, so a refused archive imports
nothing. Refused: a member whose path is absolute or climbs out with ``..`` (zip-slip), a
link or device member, an encrypted member, more than ``MAX_MEMBERS`` members, a member or a
total that unpacks past the limit (a zip bomb guard; the sizes the archive declares are the
most its reader will ever unpack). Directories and the litter of archivers (``__MACOSX/``,
hidden files such as ``.DS_Store``) are ignored.

Compression ratio (``[limits] import_compression_ratio``, ``max_ratio`` here): a zip member
may unpack to at most ``max_ratio`` times its compressed size; a tar's members, together up
to each one, to at most ``max_ratio`` times the archive's size (a .tar.gz compresses them
as one stream, so the archive stands for their compressed size). Both are checked on the
sizes the headers declare, before anything is imported, and a tar's as it is listed, so a
bomb is refused before it is inflated past the bound; ``bounded`` also counts the bytes a
member really unpacks to, as it is read.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from engine.config import LimitsConfig
from engine.errors import InputError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "MAX_MEMBERS",
    "MAX_RATIO",
    "MAX_UNPACKED",
    "Bounded",
    "ratio_error",
    "tar_members",
    "zip_members",
]

#: What an archive (and an XLSX workbook) may unpack to, all members together.
MAX_UNPACKED = 2 * 1024**3
MAX_MEMBERS = 10_000
#: How many times its compressed size a member may unpack to (``[limits]``'s default).
MAX_RATIO = LimitsConfig().import_compression_ratio

_DRIVE = re.compile(r"^[A-Za-z]:")


def zip_members(
    archive: zipfile.ZipFile, name: str, max_unpacked: int, max_ratio: int = MAX_RATIO
) -> list[zipfile.ZipInfo]:
    """The files of a zip worth importing, in name order; InputError if it is unsafe."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InputError(f"{name}: more than {MAX_MEMBERS} members; refusing it")
    members = [info for info in infos if not info.is_dir() and not _litter(info.filename)]
    _check(name, [(m.filename, m.file_size) for m in members], max_unpacked)
    for info in members:
        if info.flag_bits & 0x1:
            raise InputError(f"{name}:{info.filename}: the member is encrypted; unpack it first")
        if info.file_size > max_ratio * info.compress_size:
            raise ratio_error(name, info.filename, max_ratio)
    return sorted(members, key=lambda info: info.filename)


def tar_members(
    archive: tarfile.TarFile,
    name: str,
    max_unpacked: int,
    max_ratio: int = MAX_RATIO,
    *,
    compressed: int,
) -> list[tarfile.TarInfo]:
    """The files of a tar worth importing, in name order; InputError if it is unsafe.
    ``compressed``: the archive's size in bytes."""
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        for count, info in enumerate(archive, start=1):
            if count > MAX_MEMBERS:
                raise InputError(f"{name}: more than {MAX_MEMBERS} members; refusing it")
            total += info.size  # before the next header, which means inflating this member
            if total > max_ratio * compressed:
                raise ratio_error(name, info.name, max_ratio)
            if info.isdir() or _litter(info.name):
                continue
            if not info.isfile():
                raise InputError(
                    f"{name}:{info.name}: a link or special file; only plain files are imported"
                )
            members.append(info)
    except (tarfile.TarError, EOFError, OSError) as err:  # zlib and gzip errors included
        raise InputError(f"{name}: not a readable tar archive ({err})") from err
    _check(name, [(m.name, m.size) for m in members], max_unpacked)
    return sorted(members, key=lambda info: info.name)


def _check(name: str, members: Sequence[tuple[str, int]], max_unpacked: int) -> None:
    total = 0
    for member, size in members:
        parts = re.split(r"[/\\]", member)
        if member.startswith(("/", "\\")) or _DRIVE.match(member) or ".." in parts:
            raise InputError(
                f"{name}:{member}: the member's path is absolute or contains '..';"
                " refusing the archive"
            )
        total += size
        if total > max_unpacked:
            raise InputError(
                f"{name}: unpacks to more than the {max_unpacked} byte limit on unpacked data"
                f" (at {member}, {size} bytes; a guard against zip bombs)"
            )


def ratio_error(name: str, member: str, max_ratio: int) -> InputError:
    """The refusal of a member that unpacks past ``max_ratio`` times its compressed size."""
    return InputError(
        f"{name}: member {member} expands more than {max_ratio} times its compressed size;"
        f" [limits] import_compression_ratio is {max_ratio}"
    )


class Bounded(io.RawIOBase):
    """A member's stream that raises ``ratio_error`` once it has given more than ``bound``
    bytes: what the member really unpacks to, whatever its header said."""

    def __init__(self, raw: IO[bytes], bound: int, error: InputError) -> None:
        self._raw = raw
        self._left = bound
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        data = self._raw.read(min(len(out), self._left + 1))
        n = len(data)
        self._left -= n
        if self._left < 0:
            raise self._error
        out[:n] = data
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _litter(member: str) -> bool:
    """Files archivers add that nobody meant to import."""
    parts = [p for p in re.split(r"[/\\]", member) if p not in ("", ".")]
    if ".." in parts:
        return False  # not litter: refused
    return any(p == "__MACOSX" or p.startswith(".") for p in parts)
