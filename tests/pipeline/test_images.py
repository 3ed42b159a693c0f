import io

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from pipeline.sources.images import load_rgb


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
