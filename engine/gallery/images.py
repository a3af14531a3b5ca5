"""Image checks: the format comes from the bytes (never the name), the size is capped, the
pixel count is read from the header and capped before anything is decoded, and Pillow
decodes the image once, reduced where the format allows, to thumbnail it.

``check_image`` is synchronous and CPU-bound; ``Decoder.check`` runs it in a worker thread,
at most ``[gallery] max_concurrent_decodes`` at a time, so decoded pixels never outnumber
``max_pixels`` x that many (times the bytes of a pixel).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engine.errors import InputError

__all__ = ["CONTENT_TYPES", "DEFAULT_MAX_PIXELS", "MAX_IMAGE_BYTES", "THUMB_SIZE", "Decoder",
           "DecoderStatistics", "ImageInfo", "TooManyPixels", "check_image", "sniff_format"]

#: The largest image accepted: 2 MB.
MAX_IMAGE_BYTES = 2 * 1024 * 1024
#: Thumbnails fit in this box.
THUMB_SIZE = (256, 256)
#: ``[gallery] max_pixels`` when none is given.
DEFAULT_MAX_PIXELS = 16_000_000

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
_PIL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif"}
_PIL_NAMES = {v: k for k, v in _PIL_FORMATS.items()}
# A 2 MB PNG may carry compressed text chunks; Pillow would inflate 64 MB of them.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * PngImagePlugin.MAX_TEXT_CHUNK


class TooManyPixels(InputError):
    """The image's header declares more pixels than ``[gallery] max_pixels``."""


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


def _too_many(width: int, height: int, max_pixels: int) -> TooManyPixels:
    return TooManyPixels(f"{width}x{height} is {width * height:,} pixels, over [gallery]"
                         f" max_pixels = {max_pixels:,}; scale the image down")


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Validate an image's bytes and thumbnail it; InputError says what is wrong with it
    (TooManyPixels when its header declares over ``max_pixels``, before any decoding)."""
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
            # open() reads the header only: the size is known before a pixel is decoded
            with Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]]) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise _too_many(width, height, max_pixels)
                probe.verify()  # chunk checksums, without decoding
            with Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]]) as img:
                thumbnail = _thumbnail(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"the image decompresses to too many pixels (over [gallery]"
                         f" max_pixels = {max_pixels:,})") from None
    except UnidentifiedImageError:
        # its text is "cannot identify image file <_io.BytesIO object at 0x...>"
        raise InputError(f"the content is not a valid {fmt.upper()} image") from None
    except Exception as err:  # Pillow raises many kinds on corrupt data
        raise InputError(f"the {fmt.upper()} image is damaged ({_describe(err)})") from None
    finally:
        _give_back_memory()
    return ImageInfo(fmt, width, height, thumbnail)


_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _describe(err: Exception) -> str:
    """Pillow's message, without the reprs (memory addresses) some of them embed."""
    text = _REPR.sub("the image", str(err)).strip()
    return text[:200] or type(err).__name__


def _thumbnail(img: Image.Image) -> bytes:
    """``img`` (opened, not loaded) reduced into THUMB_SIZE, as PNG or JPEG bytes."""
    target = "RGBA" if img.mode in ("RGBA", "LA", "P", "PA") else "RGB"
    if img.mode in ("P", "PA", "1"):
        # palette images resize by nearest neighbour: shrink them (1 byte a pixel) to 4x
        # the box before converting, then filter down properly
        img.thumbnail((THUMB_SIZE[0] * 4, THUMB_SIZE[1] * 4))
    # draft() decodes a JPEG at 1/2..1/8 scale; other formats are reduced right after
    # decoding, never resampled at full size
    img.thumbnail(THUMB_SIZE, reducing_gap=2.0)
    img.load()  # decode errors surface here even when no resizing was needed
    with img.convert(target) if img.mode != target else img.copy() as thumb:
        thumb.thumbnail(THUMB_SIZE, reducing_gap=2.0)
        out = io.BytesIO()
        if thumb.mode == "RGBA":
            thumb.save(out, "PNG", optimize=True)
        else:
            thumb.save(out, "JPEG", quality=85)
    return out.getvalue()


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)
    return trim


_malloc_trim = _load_malloc_trim()


def _give_back_memory() -> None:
    """Return freed pixel buffers to the system. glibc keeps big frees made by worker
    threads in their arenas, so RSS would stay at its peak after a large decode."""
    if _malloc_trim is not None:
        _malloc_trim(0)


@dataclass(frozen=True)
class DecoderStatistics:
    #: Images being decoded now; images waiting for a turn.
    decoding: int
    waiting: int
    limit: int


class Decoder:
    """``await decoder.check(data)``: ``check_image`` in a worker thread, never on the event
    loop, at most ``max_concurrent`` at a time (one ``CapacityLimiter``)."""

    def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_concurrent: int = 2
                 ) -> None:
        self.max_pixels = max_pixels
        self.max_concurrent = max_concurrent
        self._limiter: anyio.CapacityLimiter | None = None

    def _limiter_now(self) -> anyio.CapacityLimiter:
        # created on first use, inside the event loop that will use it
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrent)
        return self._limiter

    async def check(self, data: bytes) -> ImageInfo:
        """``check_image(data)`` within the bounds (see the class)."""
        return await anyio.to_thread.run_sync(check_image, data, self.max_pixels,
                                              limiter=self._limiter_now())

    def statistics(self) -> DecoderStatistics:
        if self._limiter is None:
            return DecoderStatistics(0, 0, self.max_concurrent)
        stats = self._limiter.statistics()
        return DecoderStatistics(stats.borrowed_tokens, stats.tasks_waiting,
                                 self.max_concurrent)
