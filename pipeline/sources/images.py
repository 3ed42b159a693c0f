"""Reading image files into RGB pixels, whatever their mode.

Grayscale, RGBA, palette, 16-bit PNGs and CMYK JPEGs are converted to 8-bit
RGB rather than rejected; a file that is not a readable image, or one larger
than ``MAX_IMAGE_PIXELS``, is a ``DataError`` naming the file and what is wrong
with it.

One transparency policy for every source: alpha is composited over opaque white. Files go
through Pillow (``load_rgb``); tensors that arrive with an alpha channel (tensorflow-datasets
images) go through ``composite_on_white``, which gives the same bytes.

EXIF orientation (phone photos store the sensor's pixels and a tag saying how to turn them) is
applied: the pixels come out the way a photo viewer shows them, and ``header_size`` reports that
oriented size. The tag is read when the file carries an EXIF block ahead of its pixels (JPEG,
WebP, PNG with an early eXIf chunk); TIFF orientation tags are not read.

Two decoders, one result. ``load_rgb`` (Pillow) is the reference. ``decode_in_graph`` decodes
inside tf.data with TF's own kernels, in parallel and without the GIL, for what those kernels
decode byte-for-byte like Pillow: 8-bit JPEG (gray, YCbCr), 8-bit PNG (gray, RGB, palette
without transparency, and gray/RGB + alpha composited by ``composite_on_white``), 24-bit
uncompressed BMP, and GIF without transparency (first frame). Both use libjpeg-turbo's
accurate integer IDCT with fancy upsampling (TF: ``dct_method="INTEGER_ACCURATE"``; Pillow's
default), so JPEG pixels are identical. Everything else (16-bit, CMYK / YCCK, palette or
colour-key transparency, WebP, TIFF, ...) is routed to Pillow inside the same graph
(``inspect_image`` picks the decoder from the header; tests/pipeline/sources/test_decode.py
holds each mode against ``load_rgb``).

Decoding a JPEG for a model of S px is cheaper than decoding it whole: libjpeg-turbo can scale
by 1/2, 1/4 or 1/8 inside its inverse DCT, so a 12 Mpx phone photo for a 224 px model is decoded
straight to 504x378 (1/8) at a fraction of the work. ``load_rgb(path, min_side=S)`` and the in-graph
decoders take the largest of those scales that keeps the shorter side at least S px
(``jpeg_scale``), so no detail the resize to S would keep is lost; the antialiased resize to S
follows as before. Pillow's ``draft`` and TF's ``decode_jpeg(ratio=)`` run the same libjpeg-turbo
scaled IDCT and give the same bytes (tested). Other formats (and CMYK JPEGs, or a JPEG only Pillow
can read) have no scaled decode here and are decoded whole.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from common.errors import DataError
from pipeline.sources.jpeg_header import read_jpeg_header

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


# The decoders of ``decode_in_graph``, in the order of its branches. Manifests store these numbers:
# append new ones, never renumber (or raise manifest.VERSION).
TF_JPEG, TF_PNG, TF_PNG_ALPHA, TF_BMP, TF_GIF, PILLOW = range(6)
DECODER_NAMES = ("tf-jpeg", "tf-png", "tf-png-alpha", "tf-bmp", "tf-gif", "pillow")

# EXIF orientation (tag 0x0112) -> the Pillow transpose that shows the photo upright
# (the mapping of PIL.ImageOps.exif_transpose).
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


JPEG_SCALES = (1, 2, 4, 8)  # the reductions libjpeg-turbo's scaled IDCT offers (1/1 .. 1/8)


def jpeg_scale(width: int, height: int, min_side: int | None) -> int:
    """The largest JPEG reduction (1, 2, 4 or 8) that leaves the shorter side of a ``width`` x
    ``height`` image at least ``min_side`` pixels; 1 when ``min_side`` is None."""
    if not min_side:
        return 1
    short = min(width, height)
    return max(s for s in JPEG_SCALES if s == 1 or short // s >= min_side)


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about one file: its size as shown (after EXIF orientation), which
    decoder gives ``load_rgb``'s pixels, and the EXIF orientation (1..8; 1 = as stored)."""

    width: int
    height: int
    decoder: int
    orientation: int


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8 from the EXIF block read with the header; 1 without one (or a broken one)."""
    if "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(0x0112, 1)
    except PILLOW_ERRORS:
        return 1  # an unreadable EXIF block does not make the pixels unreadable
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _choose_decoder(img: Image.Image, head: bytes) -> int:
    """The in-graph decoder that reproduces ``load_rgb`` for this file, else PILLOW."""
    if "transparency" in img.info:
        return PILLOW  # palette or colour-key transparency: Pillow's compositing rules
    if img.format == "JPEG":
        return TF_JPEG if img.mode in ("L", "RGB") else PILLOW  # CMYK / YCCK: Pillow
    if img.format == "PNG" and len(head) >= 26 and head[24] == 8:  # IHDR bit depth 8 (16-bit: Pillow)
        return {0: TF_PNG, 2: TF_PNG, 3: TF_PNG, 4: TF_PNG_ALPHA, 6: TF_PNG_ALPHA}.get(head[25], PILLOW)
    if img.format == "BMP" and len(head) >= 34 and struct.unpack_from("<I", head, 14)[0] >= 40:
        bits, compression = struct.unpack_from("<HI", head, 28)
        return TF_BMP if bits == 24 and compression == 0 and img.mode == "RGB" else PILLOW
    if img.format == "GIF" and img.mode in ("P", "L"):
        return TF_GIF  # the first frame (sources read stills)
    return PILLOW


def _head(img: Image.Image) -> bytes:
    """The first 64 bytes of the file ``img`` was opened from (its format's fixed header)."""
    fp = img.fp
    where = fp.tell()
    try:
        fp.seek(0)
        return fp.read(64)
    finally:
        fp.seek(where)


def inspect_image(path: str | Path) -> ImageInfo:
    """The header of one file (no pixel is decoded): oriented size, decoder, orientation. A plain
    JPEG's markers are read directly (``jpeg_header``: the same answer, without Pillow's cost);
    every other file is opened with Pillow.

    Raises:
        DataError: as ``load_rgb``, except that truncated or corrupt pixel data goes unnoticed.
    """
    path = Path(path)
    jpeg = read_jpeg_header(path)
    if jpeg is not None:
        if jpeg.width * jpeg.height > MAX_IMAGE_PIXELS:
            raise DataError(path, _too_large(jpeg.width, jpeg.height))
        width, height = (jpeg.height, jpeg.width) if jpeg.orientation >= 5 else (jpeg.width, jpeg.height)
        return ImageInfo(width, height, TF_JPEG, jpeg.orientation)  # 1 or 3 components: Pillow's L or RGB
    return inspect_with_pillow(path)


def inspect_with_pillow(path: Path) -> ImageInfo:
    """``inspect_image`` by Pillow, the reference, for any file."""
    with _opened(path) as img:
        head = _head(img)
        orientation = exif_orientation(img)
        width, height = img.size
        if orientation >= 5:  # a quarter turn: width and height swap
            width, height = height, width
        return ImageInfo(width, height, _choose_decoder(img, head), orientation)


def header_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels as shown (after EXIF orientation), from the header, without
    decoding the pixels.

    Raises:
        DataError: as ``load_rgb``, except that truncated pixel data goes unnoticed.
    """
    info = inspect_image(path)
    return info.width, info.height


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


def load_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Decode an image file fully, EXIF orientation applied. Returns uint8 [H, W, 3].

    ``min_side``: the model's input side, when the pixels are for a model: a JPEG is then decoded
    at the largest scale reduction that keeps its shorter side at least that many pixels
    (``jpeg_scale``; the module docstring).

    Raises:
        DataError: missing, empty, truncated, corrupt or non-image file, or one with more than
            ``MAX_IMAGE_PIXELS`` pixels (refused from the header, before decoding).
    """
    path = Path(path)
    with _opened(path) as img:
        array = _decoded_rgb(img, jpeg_scale(*img.size, min_side))
    return _checked_shape(path, array)


def load_rgb_scaled(path: str | Path, scale: int) -> np.ndarray:
    """``load_rgb`` with the JPEG reduction given (1, 2, 4 or 8; applied to the JPEGs that
    ``inspect_image`` routes to TF_JPEG, ignored for other files)."""
    path = Path(path)
    with _opened(path) as img:
        array = _decoded_rgb(img, scale)
    return _checked_shape(path, array)


def _decoded_rgb(img: Image.Image, scale: int) -> np.ndarray:
    orientation = exif_orientation(img)  # read before load(), as inspect_image reads it
    if scale > 1 and img.format == "JPEG" and img.mode in ("L", "RGB"):  # what TF_JPEG decodes
        img.draft(None, (img.size[0] // scale, img.size[1] // scale))  # libjpeg-turbo's scaled IDCT
    img.load()  # decodes every byte: catches truncation that verify() misses
    rgb = _to_rgb(img)
    if orientation in _ORIENT:
        rgb = rgb.transpose(_ORIENT[orientation])
    return np.asarray(rgb, dtype=np.uint8)


def _checked_shape(path: Path, array: np.ndarray) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise DataError(path, f"decoded to an unexpected shape {array.shape}")
    return array


@tf.autograph.experimental.do_not_convert  # plain TF ops: autograph's rewrite only costs tracing time
def orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] as stored -> as shown, for EXIF orientation int32 [] 1..8 (exact: the same
    transposes ``load_rgb`` applies with Pillow)."""
    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,                                   # 1: as stored
        lambda: tf.reverse(image, [1]),                  # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),               # 3: turned 180 degrees
        lambda: tf.reverse(image, [0]),                  # 4: mirrored top-bottom
        lambda: transpose(image),                        # 5: transposed
        lambda: transpose(tf.reverse(image, [0])),       # 6: turn 90 degrees clockwise to show
        lambda: transpose(tf.reverse(image, [0, 1])),    # 7: transversed
        lambda: transpose(tf.reverse(image, [1])),       # 8: turn 90 degrees anticlockwise to show
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    out = tf.switch_case(index, branches)
    out.set_shape([None, None, 3])
    return out


def _jpeg(scale):
    """bytes -> uint8 [H, W, 3]: TF's JPEG decoder at ``scale`` (an int, or an int32 [] tensor
    holding one of ``JPEG_SCALES``: a switch over the four)."""
    def at(ratio):
        return lambda b: tf.io.decode_jpeg(b, channels=3, dct_method="INTEGER_ACCURATE", ratio=ratio)

    if isinstance(scale, int):
        return at(scale)
    index = tf.argmax(tf.equal(tf.cast(scale, tf.int32), JPEG_SCALES), output_type=tf.int32)  # 1 -> 0 ... 8 -> 3
    return lambda b: tf.switch_case(index, [lambda r=r: at(r)(b) for r in JPEG_SCALES])


def _decoders(path: tf.Tensor, scale=1) -> list:
    """The branches of ``decode_in_graph``, in decoder order: () -> uint8 [H, W, 3] as stored
    (``scale``: the JPEG reduction, ``jpeg_scale``)."""
    def tf_decoded(fn):
        return lambda: fn(tf.io.read_file(path))

    def pillow():
        image = tf.numpy_function(lambda p, s: load_rgb_scaled(p.decode(), int(s)), [path, scale], tf.uint8,
                                  stateful=False)
        image.set_shape([None, None, 3])
        return image  # load_rgb has applied the orientation already

    return [
        tf_decoded(_jpeg(scale)),
        tf_decoded(lambda b: tf.io.decode_png(b, channels=3)),
        tf_decoded(lambda b: composite_on_white(tf.io.decode_png(b, channels=4))),
        tf_decoded(lambda b: tf.io.decode_bmp(b, channels=3)),
        tf_decoded(lambda b: tf.io.decode_gif(b)[0]),
        pillow,
    ]


@tf.autograph.experimental.do_not_convert  # plain TF ops: autograph's rewrite only costs tracing time
def decode_in_graph(path: tf.Tensor, decoder: tf.Tensor, orientation: tf.Tensor, scale=1) -> tf.Tensor:
    """``load_rgb``'s pixels inside tf.data: string [] path, int32 [] decoder and orientation (from
    ``inspect_image``) and JPEG reduction (``jpeg_scale``; ``load_rgb_scaled``) -> uint8 [H, W, 3].
    TF kernels for the common formats (parallel, no GIL); the PILLOW decoder calls
    ``load_rgb_scaled``. A file TF cannot decode fails the element with TF's error (the sources
    check files before training, so this names no path)."""
    decoder = tf.cast(decoder, tf.int32)
    image = tf.switch_case(decoder, _decoders(path, scale))
    image.set_shape([None, None, 3])
    # Pillow has turned its output already; TF's is turned here (one switch after the decode keeps
    # the traced graph small: 6 + 8 branches, not 6 x 8).
    return orient(image, tf.where(tf.equal(decoder, PILLOW), 1, tf.cast(orientation, tf.int32)))


def graph_decoder(decoders, orientations, scales=None):
    """The cheapest ``decode_in_graph`` for a dataset whose files have these decoders, EXIF
    orientations and JPEG reductions (ints, one per file; ``scales`` None: all 1):
    (path, decoder, orientation[, scale]) -> uint8 [H, W, 3].

    Per-element branching costs more than the decode of a small JPEG in tf.data, so when every file
    has the same TF decoder and scale and no orientation, the decoder's op is used directly."""
    decoders, orientations = set(int(d) for d in decoders), set(int(o) for o in orientations)
    scales = {1} if scales is None else set(int(s) for s in scales)
    if len(decoders) == 1 and orientations <= {1} and len(scales) <= 1:
        (only,) = decoders
        fixed = next(iter(scales), 1)

        @tf.autograph.experimental.do_not_convert  # plain TF ops: autograph's rewrite only costs tracing time
        def direct(path, decoder, orientation, scale=1):
            image = _decoders(path, fixed)[only]()
            image.set_shape([None, None, 3])
            return image

        return direct
    return decode_in_graph


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
