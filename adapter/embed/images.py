"""Bytes → RGB ``PIL.Image`` that survives real-world uploads.

Every failure (not an image, truncated, too many bytes, too many pixels, an extreme aspect
ratio, bad Base64)
becomes :class:`adapter.errors.ImageError`; nothing here lets a PIL/zlib/OSError escape.

Handled: JPEG, PNG, WebP, GIF (first frame), BMP, TIFF; EXIF orientation; palette,
CMYK, L/LA/RGBA/PA (alpha composited over white, the way a viewer shows it), 1-bit,
16-bit and 32-bit greyscale (scaled to 8 bits instead of clipped).

``draft_size``: for JPEG, ask libjpeg to decode at 1/2, 1/4 or 1/8 scale while still
keeping both sides >= draft_size. A 2000 px photo headed for a 224 px model then costs a
fraction of a full decode (the "resize" then starts from a smaller image; results differ
slightly from a full-size decode, which is fine for retrieval).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from adapter import base64text
from adapter.errors import ImageError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Models resize the SHORT side to ~224 px: a 20000x1 image would become 4.5M x 224 (6 GB, 20 s).
# 32:1 keeps that under 2M pixels while admitting banners and panoramas.
MAX_ASPECT_RATIO = 32

# Truncated files must fail loudly rather than decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_WHITE = (255, 255, 255)


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode image bytes to an RGB image, EXIF-oriented; ImageError on any bad input."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ImageError(f"image must be bytes, got {type(data).__name__}")
    if not data:
        raise ImageError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            # PIL warns (DecompressionBombWarning) between its limit and 2x; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
                )
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                raise ImageError(f"image is {width}x{height}: its aspect ratio is over the limit of "
                                 f"{MAX_ASPECT_RATIO}:1")
            if getattr(img, "is_animated", False):
                img.seek(0)  # GIF/WebP/APNG: first frame
            if draft_size and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            img = _orient(img)
            return to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image rejected as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a recognised image format ({_sniff(data)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
            MemoryError, ZeroDivisionError, struct_error()) as exc:
        raise ImageError(f"image could not be decoded (truncated or corrupt): {exc}") from None


def decode_base64_image(text: str | bytes, **limits) -> Image.Image:
    """Base64 (standard or URL-safe, padding optional, ``data:image/...;base64,`` allowed) → RGB."""
    return decode_image(decode_base64(text), **limits)


def decode_base64(text: str | bytes) -> bytes:
    """The raw bytes of a Base64 image string (adapter.base64text's rule); ImageError if it is
    not valid Base64."""
    try:
        return base64text.decode_base64(text)
    except base64text.Base64Error as exc:
        raise ImageError(f"invalid Base64 image: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → RGB: alpha over white, high bit depths scaled (not clipped)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA") if ("transparency" in img.info or mode == "PA") else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_grey_to_rgb(img)
    if mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV", "L", "1"):
        return img.convert("RGB")
    return img.convert("RGB")  # anything exotic: let PIL try; errors are caught by the caller


def _high_depth_grey_to_rgb(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64))
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0 if arr.max(initial=0.0) <= 255.0 else 65535.0
        arr8 = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
    else:
        arr = arr.astype(np.int64)
        # 16-bit sources (I;16, or I from a 16-bit PNG/TIFF) span 0..65535.
        top = 255 if (not img.mode.startswith("I;16") and arr.max(initial=0) <= 255) else 65535
        arr8 = (np.clip(arr, 0, top) * 255 // top).astype(np.uint8)
    return Image.fromarray(arr8, mode="L").convert("RGB")


def _orient(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost us the image itself
        return img


def _sniff(data: bytes) -> str:
    head = data[:16]
    if head.lstrip().startswith((b"{", b"[", b"<")):
        return "looks like text/markup"
    return f"first bytes {head[:8].hex()}"


def struct_error():
    import struct

    return struct.error
