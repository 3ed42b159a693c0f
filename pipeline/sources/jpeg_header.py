"""An ordinary JPEG's header read from its markers, without Pillow: size, colour components, EXIF orientation.

    read_jpeg_header(path) -> JpegHeader(width, height, components, orientation) | None

The check pass reads the header of every new file (file_check.py), in Python, before the parallel
decode can start. Pillow's ``Image.open`` parses every marker into Python objects; this reads the
same facts with one ``read`` and a walk over the marker lengths (18 us a file against Pillow's 32 on
the pipeline benchmark's 320x240 photos).

It answers only for the plain case, and returns None for everything else, so that Pillow, the
reference, decides (``images.inspect_image``): not a JPEG, a frame other than 8-bit
baseline / extended / progressive Huffman, a component count other than 1 or 3, a multi-picture
(MPO) file, several EXIF segments, an EXIF block it cannot walk, an orientation Pillow would
take from XMP, or markers that do not reach the scan within ``HEAD_BYTES``. Where it answers, the
answer is Pillow's (tests/pipeline/sources/test_jpeg_header.py holds them side by side).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 1 << 17  # markers beyond this (a huge EXIF thumbnail or ICC profile): Pillow reads the file

_FRAMES = (0xC0, 0xC1, 0xC2)  # SOF0-2: the frames TF's decoder and Pillow decode alike
_NOT_FRAMES = (0xC4, 0xC8, 0xCC)  # DHT, JPG, DAC share the SOF range
_SCAN = 0xDA
_EXIF = b"Exif\0\0"
_XMP = b"http://ns.adobe.com/xap/1.0/\0"
_MPF = b"MPF\0"
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class JpegHeader:
    """As stored (before orientation): ``width`` x ``height``, ``components`` (1 gray, 3 colour),
    EXIF ``orientation`` as ``images.exif_orientation`` reads it (1 when absent or out of range)."""

    width: int
    height: int
    components: int
    orientation: int


def read_jpeg_header(path: str | Path) -> JpegHeader | None:
    """The header of a plain JPEG file; None when Pillow must decide (module docstring)."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEAD_BYTES)
    except OSError:
        return None
    if data[:3] != b"\xff\xd8\xff":
        return None
    frame, exif, xmp, pos = None, None, False, 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _SCAN:
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # a standalone marker before the scan: unusual
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos + 4:pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in _NOT_FRAMES:
            if marker not in _FRAMES or frame is not None or len(segment) < 6 or segment[0] != 8:
                return None
            frame = (int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big"), segment[5])
        elif marker == 0xE1 and segment.startswith(_EXIF):
            if exif is not None:
                return None  # Pillow joins several EXIF segments
            exif = segment[len(_EXIF):]
        elif marker == 0xE1 and segment.startswith(_XMP):
            xmp = True
        elif marker == 0xE2 and segment.startswith(_MPF):
            return None  # Pillow opens it as MPO
        pos += 2 + length
    else:
        return None  # the scan is not within the bytes read
    if frame is None or not frame[0] or not frame[1] or frame[2] not in (1, 3):
        return None
    orientation = 1
    if exif is not None:
        tag = _orientation_tag(exif)
        if tag is None or (tag == 0 and xmp):  # unreadable, or absent and maybe in the XMP (Pillow looks there)
            return None
        orientation = tag if 1 <= tag <= 8 else 1
    return JpegHeader(frame[0], frame[1], frame[2], orientation)


def _orientation_tag(tiff: bytes) -> int | None:
    """The orientation in IFD0 of an EXIF block (a TIFF header and directories); 0 when the tag is
    absent; None when the block is not one this walk reads exactly as Pillow does."""
    if tiff.startswith(_EXIF) or len(tiff) < 8:
        return None
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or int.from_bytes(tiff[2:4], order) != 42:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd < 8 or ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    found = []
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
        if int.from_bytes(entry[:2], order) != _ORIENTATION_TAG:
            continue
        kind, n = int.from_bytes(entry[2:4], order), int.from_bytes(entry[4:8], order)
        if n != 1 or kind not in (3, 4):  # one SHORT or LONG, held in the entry itself
            return None
        found.append(int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order))
    if len(found) > 1:
        return None
    return found[0] if found else 0
