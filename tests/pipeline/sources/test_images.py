import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from common.errors import DataError
from pipeline.sources import images
from pipeline.sources.images import header_size, load_rgb


def _save(path, img, **kw):
    img.save(path, **kw)
    return path


def test_modes_are_converted_to_rgb(tmp_path):
    gray = _save(tmp_path / "g.png", Image.new("L", (5, 4), 100))
    out = load_rgb(gray)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and (out == 100).all()

    rgba = Image.new("RGBA", (3, 3), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent -> white background
    out = load_rgb(_save(tmp_path / "a.png", rgba))
    assert tuple(out[1, 1]) == (255, 0, 0) and tuple(out[0, 0]) == (255, 255, 255)

    pal = Image.new("P", (3, 3), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert tuple(load_rgb(_save(tmp_path / "p.png", pal))[0, 0]) == (10, 200, 30)

    deep = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    deep16 = _save(tmp_path / "d.png", deep)
    assert Image.open(deep16).mode.startswith("I")
    assert (load_rgb(deep16) == 255).all()
    half = _save(tmp_path / "h.png", Image.fromarray(np.full((2, 2), 32768, np.uint16)))
    assert abs(int(load_rgb(half)[0, 0, 0]) - 128) <= 1  # scaled by bit depth

    cmyk = _save(tmp_path / "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=95)
    assert Image.open(cmyk).mode == "CMYK"
    r, g, b = load_rgb(cmyk)[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full -> red


@pytest.mark.parametrize("content,problem", [
    (b"", "empty file"),
    (b"this is not an image at all", "not an image"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as e:
        load_rgb(path)
    assert str(path) in str(e.value)


def test_truncated_image_is_reported(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError, match="truncated") as e:
        load_rgb(path)
    assert "cut.jpg" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_rgb(tmp_path / "nope.png")


def blank_png(path, width, height):
    """A valid all-black 1-bit PNG written row by row, so even a 20000x20000 one costs a few KB of
    memory and a fraction of a second (Image.new would allocate one byte per pixel)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    pixels = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def test_blank_png_helper_writes_a_real_image(tmp_path):
    out = load_rgb(blank_png(tmp_path / "b.png", 13, 5))
    assert out.shape == (5, 13, 3) and (out == 0).all()


def test_decompression_bomb_names_the_file_and_the_limit(tmp_path):
    bomb = blank_png(tmp_path / "big.png", 20000, 20000)
    assert bomb.stat().st_size < 100_000  # 400 Mpx in ~48 KB: what makes it a bomb
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match=r"400\.0 Mpx, above the 80 Mpx limit \(a decompression bomb") as e:
        load_rgb(bomb)
    assert e.value.path == str(bomb) and str(e.value).startswith(f"{bomb}: ")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="above the 80 Mpx limit"):
        header_size(bomb)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's global setting is left alone


def test_our_limit_applies_below_pillows_own(tmp_path):
    # 81 Mpx: under Pillow's default warning threshold (~89.5 Mpx), so only our limit refuses it.
    big = blank_png(tmp_path / "81mpx.png", 9000, 9000)
    with pytest.raises(DataError, match=r"image is 9000x9000 \(81\.0 Mpx\), above the 80 Mpx limit") as e:
        load_rgb(big)
    assert "81mpx.png" in str(e.value)


def test_pixel_limit_edge_is_checked_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    decoded = []
    real_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    assert load_rgb(blank_png(tmp_path / "at.png", 10, 10)).shape == (10, 10, 3)  # exactly 100 px
    assert load_rgb(blank_png(tmp_path / "below.png", 9, 11)).shape == (11, 9, 3)  # 99 px
    assert decoded  # the spy sees decoding
    decoded.clear()
    with pytest.raises(DataError, match=r"above.png: image is 101x1 .*limit"):
        load_rgb(blank_png(tmp_path / "above.png", 101, 1))  # 101 px
    assert not decoded  # refused from the header: no pixel was decoded
    assert header_size(tmp_path / "at.png") == (10, 10)
    with pytest.raises(DataError, match="above.png: image is 101x1"):
        header_size(tmp_path / "above.png")


@pytest.mark.parametrize("error", [
    struct.error("unpack requires a buffer of 4 bytes"), EOFError(), IndexError("list index out of range"),
    ZeroDivisionError("division by zero"), TypeError("bad tile"), KeyError(7), SyntaxError("broken PNG file"),
    ValueError("tile cannot extend outside image"), NotImplementedError("unsupported compression"),
    OverflowError("size too large"), MemoryError(), Image.DecompressionBombWarning("Image size (9 pixels)"),
    Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit of 178956970 pixels"),
])
def test_every_pillow_decode_error_is_one_line_naming_the_file(tmp_path, monkeypatch, error):
    path = blank_png(tmp_path / "odd.png", 4, 4)

    def fail(self):
        raise error

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", fail)
    with pytest.raises(DataError) as e:
        load_rgb(path)
    assert e.value.path == str(path) and "\n" not in str(e.value)
    if isinstance(error, Image.DecompressionBombError):
        assert "400.0 Mpx, above the 80 Mpx limit" in str(e.value)
