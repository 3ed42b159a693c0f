"""The JPEG header reader gives Pillow's answer, or steps aside for Pillow.

Every file is inspected twice: by ``inspect_image`` (the marker walk where it answers) and by
``inspect_with_pillow`` (the reference). They must agree on the size, the decoder and the EXIF
orientation; the plain JPEGs a camera or an editor writes must be read by the walk (or it saves
nothing), the unusual ones must be left to Pillow.
"""
import struct

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from pipeline.sources.images import MAX_IMAGE_PIXELS, TF_JPEG, inspect_image, inspect_with_pillow
from pipeline.sources.jpeg_header import read_jpeg_header

RNG = np.random.default_rng(5)
RGB = RNG.integers(0, 256, (21, 34, 3), dtype=np.uint8)


def _exif(**tags) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[int(tag[1:], 16)] = value
    return exif.tobytes()


def _with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """``data`` (a JPEG) with one more APPn segment right after SOI."""
    return data[:2] + struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload + data[2:]


def _save(path, image=None, **kw):
    (image or Image.fromarray(RGB)).save(path, "JPEG", **kw)
    return path


XMP_TURNED = b'http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'

READ = {  # plain JPEGs: the marker walk answers
    "baseline": lambda p: _save(p, quality=90),
    "progressive": lambda p: _save(p, quality=80, progressive=True),
    "gray": lambda p: _save(p, Image.fromarray(RGB[..., 0])),
    "exif without orientation": lambda p: _save(p, exif=_exif(x010F="camera")),
    **{f"orientation {o}": (lambda p, o=o: _save(p, exif=_exif(x0112=o))) for o in range(1, 9)},
    "orientation out of range": lambda p: _save(p, exif=_exif(x0112=9)),
    "xmp without exif": lambda p: p.write_bytes(_with_segment(_save(p).read_bytes(), 0xE1, XMP_TURNED)),
    "icc profile": lambda p: _save(p, icc_profile=b"\0" * 3000),
    "exif and xmp orientation": lambda p: p.write_bytes(
        _with_segment(_save(p, exif=_exif(x0112=3)).read_bytes(), 0xE1, XMP_TURNED)),
}

LEFT_TO_PILLOW = {  # unusual files: Pillow decides
    "cmyk": lambda p: _save(p, Image.fromarray(np.dstack([RGB, RGB[..., :1]]), "RGBA").convert("CMYK")),
    "orientation only in xmp": lambda p: p.write_bytes(
        _with_segment(_save(p, exif=_exif(x010F="camera")).read_bytes(), 0xE1, XMP_TURNED)),
    "two exif segments": lambda p: p.write_bytes(
        _with_segment(_save(p, exif=_exif(x0112=6)).read_bytes(), 0xE1, b"Exif\0\0" + _exif(x0112=3)[6:])),
    "mpo": lambda p: Image.fromarray(RGB).save(p, "MPO", save_all=True, append_images=[Image.fromarray(RGB[::-1])]),
    "png named .jpg": lambda p: Image.fromarray(RGB).save(p, "PNG"),
    "broken exif": lambda p: p.write_bytes(_with_segment(_save(p).read_bytes(), 0xE1, b"Exif\0\0MM\0*\xff\xff\xff\xff")),
    "markers cut short": lambda p: p.write_bytes(_save(p, exif=_exif(x0112=6)).read_bytes()[:40]),
}


@pytest.mark.parametrize("kind", list(READ))
def test_plain_jpegs_are_read_from_their_markers_as_pillow_reads_them(tmp_path, kind):
    path = tmp_path / "a.jpg"
    READ[kind](path)
    assert read_jpeg_header(path) is not None, "the marker walk should answer for this file"
    got, reference = inspect_image(path), inspect_with_pillow(path)
    assert got == reference
    assert got.decoder == TF_JPEG


@pytest.mark.parametrize("kind", list(LEFT_TO_PILLOW))
def test_unusual_files_are_left_to_pillow(tmp_path, kind):
    path = tmp_path / "a.jpg"
    LEFT_TO_PILLOW[kind](path)
    assert read_jpeg_header(path) is None
    try:
        reference = inspect_with_pillow(path)
    except DataError as refused:
        with pytest.raises(DataError) as got:
            inspect_image(path)
        assert got.value.problem == refused.problem  # the same refusal, from the same code
        return
    assert inspect_image(path) == reference


def test_the_orientation_pillow_reads_is_the_one_found(tmp_path):
    """A turned photo's size is reported as shown: width and height swap for orientations 5-8."""
    path = _save(tmp_path / "a.jpg", exif=_exif(x0112=6))
    info = inspect_image(path)
    assert (info.width, info.height, info.orientation) == (21, 34, 6)


def test_a_jpeg_over_the_pixel_limit_is_refused_from_its_markers(tmp_path):
    path = _save(tmp_path / "a.jpg")
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 10
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)  # height, width in the frame header
    path.write_bytes(bytes(data))
    assert read_jpeg_header(path) is not None
    with pytest.raises(DataError, match="above the 80 Mpx limit"):
        inspect_image(path)
