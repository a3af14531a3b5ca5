"""Content-addressed blob storage: a blob's key is the sha256 of its bytes (64 hex digits).

``BlobStore`` is the interface (an object store can implement it later); ``FileBlobStore``
keeps blobs on disk as ``ROOT/ab/cd/abcd...``. Keys are checked against the sha256 shape
before they touch a path, so no key can name a file outside the root.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

__all__ = ["BlobStore", "FileBlobStore", "digest_of", "is_digest"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    """The key ``data`` is stored under."""
    return hashlib.sha256(data).hexdigest()


def is_digest(key: str) -> bool:
    return _DIGEST.fullmatch(key) is not None


class BlobStore(Protocol):
    """Immutable blobs named by their sha256; ``put`` of existing bytes is a no-op."""

    def put(self, data: bytes) -> str:
        """Store ``data``; its sha256 key."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes of ``key``; KeyError when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error when absent)."""
        ...


class FileBlobStore:
    """Blobs as files under ``root``, written atomically (temporary file, then rename)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not is_digest(key):
            raise KeyError(key)
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = digest_of(data)
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
