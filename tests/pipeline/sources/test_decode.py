"""The in-graph decoder gives load_rgb's bytes for every image mode, and EXIF orientation is applied.

Each file is decoded the way the sources decode it (inspect_image picks the decoder from the
header, decode_in_graph runs inside a tf.data map) and compared with the reference, load_rgb,
byte for byte. The decoder each mode gets is asserted too: the common formats must stay on TF's
kernels (fast, no GIL), the special ones on Pillow.
"""
import struct
import zlib

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image, ImageOps

from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.preprocess import preprocess_image
from pipeline.sources.images import (DECODER_NAMES, PILLOW, TF_BMP, TF_GIF, TF_JPEG, TF_PNG, TF_PNG_ALPHA,
                                     decode_in_graph, header_size, inspect_image, jpeg_scale, load_rgb,
                                     load_rgb_scaled)
from pipeline.sources.specs import open_source

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (21, 34, 3), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (21, 34, 4), dtype=np.uint8)


def _in_graph(path, scale: int = 1) -> np.ndarray:
    info = inspect_image(path)
    ds = tf.data.Dataset.from_tensors((str(path), info.decoder, info.orientation, np.int32(scale)))
    return next(iter(ds.map(decode_in_graph))).numpy()


def _png_raw(path, pixels: np.ndarray, color_type: int, bit_depth: int, extra: bytes = b""):
    """A PNG written by hand (Pillow cannot write 16-bit RGB): pixels uint8/uint16 [H, W, C]."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = pixels.shape[:2]
    big_endian = pixels.astype(">u2" if bit_depth == 16 else np.uint8)
    raw = b"".join(b"\0" + big_endian[y].tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


_TRNS = b"tRNS\0\x10\0\x20\0\x30"  # an RGB colour key: (16, 32, 48) is transparent
_TRNS_CHUNK = struct.pack(">I", 6) + _TRNS + struct.pack(">I", zlib.crc32(_TRNS))


def _jpeg(image, **kw):
    return lambda p: image.save(p, "JPEG", **kw)


def _pal_transparent(p):
    img = Image.fromarray(RGB).convert("P")
    img.info["transparency"] = 3
    img.save(p, transparency=3)


def _gif_transparent(p):
    rgba = RGBA.copy()
    rgba[..., 3] = np.where(rgba[..., 3] > 128, 255, 0)  # GIF transparency is on or off
    Image.fromarray(rgba, "RGBA").save(p, "GIF")
    assert "transparency" in Image.open(p).info


MODES = {
    # name: (file name, writer, expected decoder)
    "jpeg rgb 4:2:0": ("a.jpg", _jpeg(Image.fromarray(RGB), quality=90), TF_JPEG),
    "jpeg rgb 4:4:4": ("a.jpg", _jpeg(Image.fromarray(RGB), quality=75, subsampling=0), TF_JPEG),
    "jpeg rgb 4:2:2": ("a.jpg", _jpeg(Image.fromarray(RGB), quality=75, subsampling=1), TF_JPEG),
    "jpeg progressive": ("a.jpg", _jpeg(Image.fromarray(RGB), quality=80, progressive=True), TF_JPEG),
    "jpeg gray": ("a.jpg", _jpeg(Image.fromarray(RGB[..., 0])), TF_JPEG),
    "jpeg cmyk": ("a.jpg", _jpeg(Image.fromarray(RGBA, "RGBA").convert("CMYK")), PILLOW),
    "png rgb": ("a.png", lambda p: Image.fromarray(RGB).save(p), TF_PNG),
    "png gray": ("a.png", lambda p: Image.fromarray(RGB[..., 1]).save(p), TF_PNG),
    "png palette": ("a.png", lambda p: Image.fromarray(RGB).convert("P").save(p), TF_PNG),
    "png palette + transparency": ("a.png", _pal_transparent, PILLOW),
    "png rgba": ("a.png", lambda p: Image.fromarray(RGBA, "RGBA").save(p), TF_PNG_ALPHA),
    "png gray + alpha": ("a.png", lambda p: Image.fromarray(RGBA[..., 2:], "LA").save(p), TF_PNG_ALPHA),
    "png 1-bit": ("a.png", lambda p: Image.fromarray(RGB[..., 0] > 128).save(p), PILLOW),
    "png 16-bit gray": ("a.png", lambda p: Image.fromarray(RNG.integers(0, 65536, (9, 7), dtype=np.uint16)).save(p),
                        PILLOW),
    "png 16-bit rgb": ("a.png", lambda p: _png_raw(p, RNG.integers(0, 65536, (9, 7, 3)), 2, 16), PILLOW),
    "png rgb + colour key": ("a.png", lambda p: _png_raw(p, RGB, 2, 8, extra=_TRNS_CHUNK), PILLOW),
    "bmp 24-bit": ("a.bmp", lambda p: Image.fromarray(RGB).save(p), TF_BMP),
    "bmp 8-bit palette": ("a.bmp", lambda p: Image.fromarray(RGB).convert("P").save(p), PILLOW),
    "bmp 32-bit rgba": ("a.bmp", lambda p: Image.fromarray(RGBA, "RGBA").save(p), PILLOW),
    "gif": ("a.gif", lambda p: Image.fromarray(RGB).convert("P").save(p), TF_GIF),
    "gif gray": ("a.gif", lambda p: Image.fromarray(RGB[..., 0]).save(p), TF_GIF),
    "gif transparent": ("a.gif", _gif_transparent, PILLOW),
    "webp": ("a.webp", lambda p: Image.fromarray(RGB).save(p, lossless=True), PILLOW),
    "tiff": ("a.tif", lambda p: Image.fromarray(RGB).save(p), PILLOW),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_decodes_in_graph_to_load_rgbs_bytes(tmp_path, mode):
    name, write, decoder = MODES[mode]
    path = tmp_path / name
    write(path)
    info = inspect_image(path)
    assert DECODER_NAMES[info.decoder] == DECODER_NAMES[decoder]
    reference = load_rgb(path)
    got = _in_graph(path)
    assert got.dtype == np.uint8 and got.shape == reference.shape
    np.testing.assert_array_equal(got, reference)
    assert (info.width, info.height) == (reference.shape[1], reference.shape[0])


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea", "rocket"])
def test_real_photo_jpegs_are_byte_identical(tmp_path, photo):
    """Photographic content (not noise) through libjpeg-turbo's accurate IDCT on both sides."""
    path = tmp_path / f"{photo}.jpg"
    Image.fromarray(getattr(skimage.data, photo)()).save(path, quality=87)
    assert inspect_image(path).decoder == TF_JPEG
    np.testing.assert_array_equal(_in_graph(path), load_rgb(path))


JPEG_MODES = [m for m in MODES if m.startswith("jpeg") and m != "jpeg cmyk"]


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("mode", JPEG_MODES)
def test_jpegs_decoded_at_a_reduced_scale_give_pillows_draft_bytes(tmp_path, mode, scale):
    """libjpeg-turbo's scaled IDCT, through TF (decode_jpeg ratio=) and Pillow (draft): the same bytes."""
    name, write, _ = MODES[mode]
    path = tmp_path / name
    write(path)
    reference = load_rgb_scaled(path, scale)
    assert reference.shape[:2] == (-(-21 // scale), -(-34 // scale))  # libjpeg rounds up
    np.testing.assert_array_equal(_in_graph(path, scale), reference)


def test_a_photo_is_decoded_at_the_largest_scale_that_keeps_the_model_side(tmp_path):
    path = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(path, quality=87)  # 512 x 512
    assert load_rgb(path, min_side=64).shape == (64, 64, 3)  # 1/8
    assert load_rgb(path, min_side=65).shape == (128, 128, 3)  # 1/4: 1/8 would leave 64 px
    assert load_rgb(path, min_side=300).shape == load_rgb(path).shape == (512, 512, 3)
    np.testing.assert_array_equal(_in_graph(path, 4), load_rgb(path, min_side=65))
    # a phone photo for a 224 px model is decoded at 1/8; 320x240 for 64 px at 1/2 (1/4 leaves 60 px)
    assert jpeg_scale(4032, 3024, 224) == 8 and jpeg_scale(320, 240, 64) == 2 and jpeg_scale(9, 9, None) == 1


def test_only_jpegs_that_tf_decodes_are_decoded_at_a_reduced_scale(tmp_path):
    """PNGs have no scaled decode, and CMYK JPEGs (Pillow's) are decoded whole: min_side changes nothing."""
    for mode in ("png rgb", "jpeg cmyk"):
        name, write, _ = MODES[mode]
        write(tmp_path / name)
        np.testing.assert_array_equal(load_rgb(tmp_path / name, min_side=4), load_rgb(tmp_path / name))


def _with_orientation(path, pixels: np.ndarray, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillows_exif_transpose(tmp_path, orientation):
    stored = RNG.integers(0, 256, (16, 24, 3), dtype=np.uint8)  # wider than tall, as stored
    path = _with_orientation(tmp_path / f"o{orientation}.jpg", stored, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    reference = load_rgb(path)
    np.testing.assert_array_equal(reference, expected)
    info = inspect_image(path)
    assert info.orientation == orientation and info.decoder == TF_JPEG
    np.testing.assert_array_equal(_in_graph(path), reference)
    assert header_size(path) == ((16, 24) if orientation >= 5 else (24, 16))  # (width, height) as shown


def test_a_quarter_turned_phone_photo_is_upright(tmp_path):
    upright = np.zeros((30, 20, 3), np.uint8)
    upright[:5] = 255  # a white band at the top of the scene
    stored = np.rot90(upright, 1)  # the sensor's pixels: the band on the left... turned
    path = _with_orientation(tmp_path / "phone.jpg", np.ascontiguousarray(stored), 6)
    out = load_rgb(path)
    assert out.shape == (30, 20, 3)
    assert out[:3].mean() > 200 and out[10:].mean() < 30


def test_a_folder_of_mixed_modes_gives_load_rgbs_pixels(tmp_path):
    """Several decoders and orientations in one dataset (the per-element switch), through folder:."""
    for c in ("x", "y"):
        (tmp_path / "f" / c).mkdir(parents=True)
    MODES["jpeg rgb 4:2:0"][1](tmp_path / "f" / "x" / "a.jpg")
    MODES["jpeg cmyk"][1](tmp_path / "f" / "x" / "b.jpg")
    MODES["png rgba"][1](tmp_path / "f" / "x" / "c.png")
    MODES["png 16-bit gray"][1](tmp_path / "f" / "y" / "d.png")
    MODES["gif"][1](tmp_path / "f" / "y" / "e.gif")
    _with_orientation(tmp_path / "f" / "y" / "f.jpg", RGB, 6)
    files = sorted((tmp_path / "f").rglob("*.*"))
    expected = sorted(load_rgb(p).tobytes() for p in files)
    src = open_source(f"folder:{tmp_path / 'f'}", data_dir=tmp_path / "data")
    got = sorted(e["image"].numpy().tobytes() for s in ("train", "validation", "test") for e in src.examples(s))
    assert got == expected
    # The same folder opened knowing the input size: the check pass decodes the JPEGs at 1/2 (21 px
    # short sides, 8 px input), resizes the most common size in batches and the others one by one;
    # every image is preprocess_image(load_rgb(file, min_side=8)).
    src = open_source(f"folder:{tmp_path / 'f'}", data_dir=tmp_path / "data2", image_size=8)
    cfg = PipelineConfig(image_size=8, batch_size=8)
    got = sorted(x.astype(np.uint8).tobytes() for s in ("train", "validation", "test")
                 for batch, _ in classification_dataset(src, s, cfg, training=False).as_numpy_iterator() for x in batch)
    assert got == sorted(preprocess_image(load_rgb(p, min_side=8), 8).numpy().tobytes() for p in files)
    assert sorted(load_rgb(p, min_side=8).shape[0] for p in files if p.suffix == ".jpg") == [11, 17, 21]
