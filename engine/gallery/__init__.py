"""The image gallery: uploads checked by their bytes, kept as content-addressed blobs with
their metadata (directories, names, tags) in the workspace's store (its ``GalleryStore``
role), and served publicly on the tracking domain at
``{scheme}://{domain}/{account}/{n}/{hash}/{name}``.

``{account}`` is ``[tracking] account`` (default ``"1"``), ``{n}`` the image id, ``{hash}``
the first 16 hex digits of its sha256 and ``{name}`` its upload name reduced to URL-safe
characters; renaming or moving an image keeps its URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.gallery.blobs import BlobStore, FileBlobStore
from engine.gallery.catalog import Directory, Gallery, Image
from engine.gallery.images import MAX_IMAGE_BYTES, Decoder, ImageInfo, check_image

if TYPE_CHECKING:
    from engine.runner import Herald

__all__ = ["MAX_IMAGE_BYTES", "BlobStore", "Decoder", "Directory", "FileBlobStore", "Gallery",
           "Image", "ImageInfo", "check_image", "open_gallery"]


def open_gallery(herald: Herald) -> Gallery:
    """The gallery of a ``Herald`` workspace: its store, blobs in ``[gallery] storage``."""
    config = herald.config
    return Gallery(herald.store, FileBlobStore(config.resolve(config.gallery.storage)),
                   config.tracking)
