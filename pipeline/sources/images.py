"""Reading image files into RGB pixels, whatever their mode.

Grayscale, RGBA, palette, 16-bit PNGs and CMYK JPEGs are converted to 8-bit
RGB rather than rejected; a file that is not a readable image, or one larger
than ``MAX_IMAGE_PIXELS``, is a ``DataError`` naming the file and what is wrong
with it.

One transparency policy for every source: alpha is composited over opaque white. Files go
through Pillow (``load_rgb``); tensors that arrive with an alpha channel (tensorflow-datasets
images) go through ``composite_on_white``, which gives the same bytes.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from common.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# The most pixels one image may have (width * height), checked from the header before any pixel is
# decoded. Phones take 12-50 Mpx photos (64 Mpx sensors: 9248x6936 = 64.1 Mpx) and the models here
# see at most a few hundred pixels a side, so anything bigger is a decompression bomb (a few KB on
# disk that would decode to gigabytes) or a photo to downscale first. 80 Mpx decodes to 240 MB of
# RGB (and 4 files are checked in parallel), and it stays below Pillow's own default warning
# threshold (Image.MAX_IMAGE_PIXELS, ~89.5 Mpx), so Pillow never warns about an image we accept.
# This is our own limit: Pillow's global setting is neither read nor changed.
MAX_IMAGE_PIXELS = 80_000_000

# Everything Pillow raises on a bad file while opening or decoding it. Its fuzz tests accept
# OSError (UnidentifiedImageError is one), SyntaxError, ValueError, MemoryError, NotImplementedError,
# OverflowError and the DecompressionBomb error/warning (the warning only when warnings are turned
# into errors); Image.open wraps IndexError/TypeError/KeyError/EOFError/struct.error from header
# parsers in SyntaxError, but plugins' seek()/load() can still let them (and ZeroDivisionError from a
# zero field in a broken header) through. None of these is a bug of ours once the file is the cause.
PILLOW_ERRORS = (
    OSError, SyntaxError, ValueError, MemoryError, NotImplementedError, OverflowError,
    IndexError, TypeError, KeyError, EOFError, struct.error, ZeroDivisionError,
    Image.DecompressionBombError, Image.DecompressionBombWarning,
)


def _too_large(width: int, height: int) -> str:
    return (f"image is {width}x{height} ({width * height / 1e6:.1f} Mpx), above the "
            f"{MAX_IMAGE_PIXELS / 1e6:g} Mpx limit (a decompression bomb or an unusually large image; "
            f"downscale it)")


def _problem(e: BaseException) -> str:
    """One short phrase for what Pillow (or the file system) said about a file."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image file (unrecognised format)"
    if isinstance(e, PermissionError):
        return "permission denied (cannot read the file)"
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow refuses in Image.open, before we see the size, when an image is over twice its
        # global limit; its message gives the pixel count but not the width and height.
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else None
        if pixels is not None and pixels > MAX_IMAGE_PIXELS:
            return (f"image is {pixels / 1e6:.1f} Mpx, above the {MAX_IMAGE_PIXELS / 1e6:g} Mpx limit "
                    f"(a decompression bomb or an unusually large image; downscale it)")
        return f"image too large to decode safely (Pillow: {e})"
    if isinstance(e, MemoryError):
        return "image too large to decode in memory"
    return f"corrupt or truncated image ({str(e) or type(e).__name__})"


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """The image with only its header read, once its size is within ``MAX_IMAGE_PIXELS``.

    Pillow errors raised in the ``with`` body (decoding, converting) become a ``DataError`` too.

    Raises:
        DataError: missing, empty, unreadable, corrupt or non-image file, or too many pixels.
    """
    if not path.exists():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes), not an image")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(path, _too_large(width, height))
            yield img
    except PILLOW_ERRORS as e:
        raise DataError(path, _problem(e)) from None


def header_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels from the image header, without decoding the pixels.

    Raises:
        DataError: as ``load_rgb``, except that truncated pixel data goes unnoticed.
    """
    with _opened(Path(path)) as img:
        return img.size


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit int) grayscale: scale to 8 bits by the bit depth, not the content,
        # so a dark image stays dark.
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels over white, as most viewers show them (composite_on_white
        # does the same to tensors).
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, F ...


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file fully. Returns uint8 [H, W, 3].

    Raises:
        DataError: missing, empty, truncated, corrupt or non-image file, or one with more than
            ``MAX_IMAGE_PIXELS`` pixels (refused from the header, before decoding).
    """
    path = Path(path)
    with _opened(path) as img:
        img.load()  # decodes every byte: catches truncation that verify() misses
        array = np.asarray(_to_rgb(img), dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise DataError(path, f"decoded to an unexpected shape {array.shape}")
    return array


def decode_file(path: tf.Tensor) -> tf.Tensor:
    """``load_rgb`` inside tf.data: string [] path -> uint8 [H, W, 3]. A bad file raises the
    ``DataError`` from within the pipeline (the sources check every file before training starts)."""
    image = tf.numpy_function(lambda p: load_rgb(p.decode()), [path], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image


def composite_on_white(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, C + 1] (C colour channels, then alpha) -> uint8 [H, W, C], composited over opaque
    white with exactly the bytes Pillow's ``alpha_composite`` gives ``load_rgb`` for files.

    Over an opaque background Pillow's integer arithmetic reduces to round(v / 255) with
    v = c * a + 255 * (255 - a). v / 255 never lies halfway between two integers (2v is even, 255
    times an odd number is odd), so (v + 127) // 255 is that rounding, exactly. Plain TF ops, so
    it runs inside a tf.data map without a Python call.
    """
    pixels = tf.cast(image, tf.int32)
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    composited = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return tf.cast(composited, tf.uint8)
