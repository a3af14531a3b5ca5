"""Image checks: the format comes from the bytes (never the name), the size is capped, and
Pillow decodes the image (with its decompression-bomb guard) to measure and thumbnail it."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from engine.errors import InputError

__all__ = ["CONTENT_TYPES", "MAX_IMAGE_BYTES", "THUMB_SIZE", "ImageInfo", "check_image",
           "sniff_format"]

#: The largest image accepted: 2 MB.
MAX_IMAGE_BYTES = 2 * 1024 * 1024
#: Thumbnails fit in this box.
THUMB_SIZE = (256, 256)
#: Pixels above which Pillow refuses to decode (its bomb guard, made an error).
MAX_PIXELS = 50_000_000

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
_PIL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif"}


def sniff_format(data: bytes) -> str | None:
    """``jpeg``, ``png`` or ``gif`` from the file's magic bytes; None for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return None


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    #: A PNG (or JPEG for photos) no larger than THUMB_SIZE.
    thumbnail: bytes


def check_image(data: bytes) -> ImageInfo:
    """Validate an image's bytes; InputError says what is wrong with it."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(f"{len(data)} bytes is over the limit of {MAX_IMAGE_BYTES} bytes (2 MB)")
    if not data:
        raise InputError("the file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise InputError("not a JPEG, PNG or GIF image (judged by its content, not its name)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                if _PIL_FORMATS.get(img.format or "") != fmt:
                    raise InputError(f"the content is not a valid {fmt.upper()} image")
                if img.width * img.height > MAX_PIXELS:
                    raise InputError(f"{img.width}x{img.height} pixels is too many")
                width, height = img.size
                img.load()
                thumb = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
                thumb.thumbnail(THUMB_SIZE)
                out = io.BytesIO()
                if thumb.mode == "RGBA":
                    thumb.save(out, "PNG", optimize=True)
                else:
                    thumb.save(out, "JPEG", quality=85)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("the image decompresses to too many pixels") from None
    except Exception as err:  # Pillow raises many kinds on corrupt data
        raise InputError(f"the {fmt.upper()} image is damaged ({err})") from None
    return ImageInfo(fmt, width, height, out.getvalue())
