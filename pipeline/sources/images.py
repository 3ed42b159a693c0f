"""Reading image files into RGB pixels, whatever their mode.

Grayscale, RGBA, palette, 16-bit PNGs and CMYK JPEGs are converted to 8-bit
RGB rather than rejected; a file that is not a readable image is a
``DataError`` naming the file and what is wrong with it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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
        # Composite transparent pixels over white, as most viewers show them.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, F ...


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file fully. Returns uint8 [H, W, 3].

    Raises:
        DataError: missing, empty, truncated, corrupt or non-image file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decodes every byte: catches truncation that verify() misses
                rgb = _to_rgb(img)
                array = np.asarray(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(path, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise DataError(path, f"corrupt or truncated image ({e})") from None
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise DataError(path, f"decoded to an unexpected shape {array.shape}")
    return array
