"""Real images for the quality benchmark, written once into a folder, offline.

Both sets are made from images that ship inside installed packages (no download):

* ``write_digits_folder``: scikit-learn's ``load_digits``, 1797 real 8x8 scans of handwritten
  digits, as a ``folder:`` tree ``ROOT/<digit>/<index>.png`` (8-bit grayscale, 0..16 scaled to 0..255).
* ``write_photo_detection_set``: a Pascal VOC tree (``voc:``) of 256x256 JPEG photos. Four object
  classes are cut from real photos: ``face`` (the 100 face crops of scikit-image's ``lfw_subset``),
  ``coin`` (the 24 coins of ``coins.png``, found by a watershed segmentation), ``cat`` (Chelsea's
  head) and ``cup`` (the espresso cup and saucer of ``coffee.png``). Each is pasted through a soft
  elliptical alpha mask, at a random size, flip, small rotation and brightness / contrast / colour
  gain, onto a random crop of a real background photo (scikit-learn's china and flower, and
  scikit-image's grass, gravel, brick, moon, Hubble deep field, retina, immunohistochemistry,
  rocket, motorcycle, cell). Photos that show an unlabelled face, cat, cup or coin (astronaut,
  camera, chelsea, coffee, coins) are not used as backgrounds.

Both writers are deterministic and idempotent: a marker file naming the parameters is written last
(atomically); a folder whose marker matches is left as it is, any other is written over.
"""
from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage
from skimage import filters, measure, segmentation
from sklearn.datasets import load_digits, load_sample_images

from common.run_folder import read_json, write_text

MARKER = ".complete"  # hidden: neither the folder source nor the VOC source reads it

PHOTO_SIZE = 256
OBJECT_SIDES = (13, 90)  # px, the longer side of a pasted object before rotation (log-uniform)
MAX_OBJECTS = 5
EMPTY_SHARE = 0.03  # images with no object at all
MAX_COVER = 0.3  # of either box's area that another may cover (so IoU < 0.3, and nothing is hidden)
MIN_VISIBLE_SIDE = 8  # px: a box clipped smaller than this is placed again
MAX_ROTATION = 15.0  # degrees
EDGE_SOFTNESS = 0.15  # share of the ellipse's radius over which the alpha falls from 1 to 0
SPLIT_SHARES = (0.8, 0.1, 0.1)  # train, val, test (ImageSets/Main/*.txt)
JPEG_QUALITY = 90


def _is_complete(root: Path, params: dict) -> bool:
    marker = root / MARKER
    return marker.is_file() and read_json(marker) == params


def _clear(root: Path, folders: list[str]) -> None:
    """Remove the folders a writer owns under ``root`` (and its marker), nothing else."""
    (root / MARKER).unlink(missing_ok=True)
    for name in folders:
        shutil.rmtree(root / name, ignore_errors=True)


def _mark_complete(root: Path, params: dict) -> None:
    write_text(root / MARKER, json.dumps(params, sort_keys=True))


# --- digits -------------------------------------------------------------------------------


def write_digits_folder(root: Path, limit: int | None = None) -> Path:
    """scikit-learn's digits as ``ROOT/<digit>/<index>.png`` (mode L, 8x8, uint8 0..255).

    limit: only the first ``limit`` scans (None: all 1797; the set cycles through the digits, so
    any prefix is close to balanced). Returns ``root``.
    """
    root = Path(root)
    digits = load_digits()
    n = len(digits.images) if limit is None else min(limit, len(digits.images))
    params = {"set": "sklearn-digits", "images": n}
    if _is_complete(root, params):
        return root
    _clear(root, [str(d) for d in range(10)])  # a partial or different earlier set
    for index in range(n):
        pixels = np.round(digits.images[index] * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
        folder = root / str(int(digits.target[index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    _mark_complete(root, params)
    return root


# --- the photo detection set -------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    """Where one object instance lies in a real photo.

    image: float32 [H, W, 3], 0..255. box: (y0, x0, y1, x1) pixels, end exclusive.
    jitter: the share of the box's side by which each crop may shift or grow (single instances
    get more, so that copies of the same cat or cup differ).
    """

    name: str
    image: np.ndarray
    box: tuple[int, int, int, int]
    jitter: float


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 or float [H, W] or [H, W, 3] (float in 0..1) -> float32 [H, W, 3] in 0..255."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = image * 255.0
    image = image.astype(np.float32)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def _coin_boxes(coins: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The 24 coins of skimage's coins.png: watershed on the Sobel elevation map from dark
    (background) and bright (coin) markers, holes filled, small fragments dropped."""
    markers = np.zeros_like(coins)
    markers[coins < 30], markers[coins > 150] = 1, 2
    regions = ndimage.binary_fill_holes(segmentation.watershed(filters.sobel(coins), markers) - 1)
    boxes = [tuple(r.bbox) for r in measure.regionprops(measure.label(regions)) if r.area > 300]
    if len(boxes) != 24:
        raise RuntimeError(f"coins.png: found {len(boxes)} coins, expected 24 (scikit-image's image changed?)")
    return boxes


def _templates() -> dict[str, list[_Template]]:
    """Every object instance by class name (sorted names: the VOC source's label order)."""
    faces = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    coins = skimage.data.coins()
    coins_rgb, chelsea, coffee = _rgb(coins), _rgb(skimage.data.chelsea()), _rgb(skimage.data.coffee())
    return {
        "cat": [_Template("cat", chelsea, (0, 25, 300, 405), 0.10)],  # the head fills the photo
        "coin": [_Template("coin", coins_rgb, box, 0.04) for box in _coin_boxes(coins)],
        "cup": [_Template("cup", coffee, (12, 72, 392, 484), 0.06)],  # cup and saucer
        "face": [_Template("face", _rgb(f), (0, 0, f.shape[0], f.shape[1]), 0.0) for f in faces],
    }


def _backgrounds() -> list[np.ndarray]:
    photos = [_rgb(im) for im in load_sample_images().images]  # china, flower
    for name in ("grass", "gravel", "brick", "moon", "hubble_deep_field", "retina", "immunohistochemistry",
                 "rocket", "cell"):
        photos.append(_rgb(getattr(skimage.data, name)()))
    photos.append(_rgb(skimage.data.stereo_motorcycle()[0]))  # the left view
    return photos


def _background(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of ``photo`` (a third to all of its shorter side), resized to
    PHOTO_SIZE and maybe flipped: float32 [S, S, 3]."""
    h, w = photo.shape[:2]
    side = int(rng.uniform(min(h, w) / 3, min(h, w)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side].astype(np.uint8))
    out = np.asarray(crop.resize((PHOTO_SIZE, PHOTO_SIZE), Image.BICUBIC), np.float32)
    return out[:, ::-1] if rng.random() < 0.5 else out


def _soft_ellipse(height: int, width: int) -> np.ndarray:
    """float32 [H, W] alpha: 1 inside the inscribed ellipse, falling to 0 over its outer EDGE_SOFTNESS."""
    y = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    x = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    r = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    return np.clip((1 - r) / EDGE_SOFTNESS, 0, 1).astype(np.float32)


def _cut(template: _Template, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One randomized copy of an object: (rgb float32 [h, w, 3] 0..255, alpha float32 [h, w] 0..1),
    already rotated and flipped; its box is where alpha > 0.5."""
    y0, x0, y1, x1 = template.box
    bh, bw = y1 - y0, x1 - x0
    j = template.jitter
    grow = rng.uniform(1 - j, 1 + j)
    ch, cw = bh * grow, bw * grow
    cy, cx = (y0 + y1) / 2 + rng.uniform(-j, j) * bh, (x0 + x1) / 2 + rng.uniform(-j, j) * bw
    h, w = template.image.shape[:2]
    top, left = int(max(0, round(cy - ch / 2))), int(max(0, round(cx - cw / 2)))
    bottom, right = int(min(h, round(cy + ch / 2))), int(min(w, round(cx + cw / 2)))
    crop = template.image[top:bottom, left:right]

    longer = math.exp(rng.uniform(math.log(OBJECT_SIDES[0]), math.log(OBJECT_SIDES[1])))
    aspect = (crop.shape[1] / crop.shape[0]) * math.exp(rng.uniform(-0.15, 0.15))  # width / height
    oh, ow = (longer, longer * aspect) if aspect <= 1 else (longer / aspect, longer)
    oh, ow = (int(round(min(max(s, OBJECT_SIDES[0]), OBJECT_SIDES[1]))) for s in (oh, ow))

    # photometric jitter: brightness, contrast about the object's mean, a small per-channel gain
    pixels = crop * rng.uniform(0.7, 1.3)
    pixels = (pixels - pixels.mean()) * rng.uniform(0.8, 1.2) + pixels.mean()
    pixels = np.clip(pixels * rng.uniform(0.9, 1.1, size=3), 0, 255)
    rgba = np.dstack([pixels, np.full(crop.shape[:2], 255.0)]).astype(np.uint8)
    image = Image.fromarray(rgba).resize((ow, oh), Image.BICUBIC)
    alpha = Image.fromarray((_soft_ellipse(oh, ow) * 255).astype(np.uint8))
    image.putalpha(alpha)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = image.rotate(rng.uniform(-MAX_ROTATION, MAX_ROTATION), resample=Image.BICUBIC, expand=True)
    out = np.asarray(image, np.float32)
    return out[..., :3], out[..., 3] / 255.0


def _cover(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller area of two pixel boxes (y0, x0, y1, x1), end exclusive."""
    ih = min(a[2], b[2]) - max(a[0], b[0])
    iw = min(a[3], b[3]) - max(a[1], b[1])
    if ih <= 0 or iw <= 0:
        return 0.0
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return ih * iw / min(area(a), area(b))


def _paste(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, top: int, left: int) -> tuple[int, int, int, int] | None:
    """Alpha-composite the object at (top, left), clipped to the canvas; return its visible box
    (pixels where alpha > 0.5, (y0, x0, y1, x1) end exclusive), or None when none is visible."""
    h, w = alpha.shape
    size = canvas.shape[0]
    y0, x0, y1, x1 = max(0, top), max(0, left), min(size, top + h), min(size, left + w)
    if y0 >= y1 or x0 >= x1:
        return None
    a = alpha[y0 - top:y1 - top, x0 - left:x1 - left, None]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + rgb[y0 - top:y1 - top, x0 - left:x1 - left] * a
    rows, cols = np.nonzero(a[..., 0] > 0.5)
    if rows.size == 0:
        return None
    return y0 + int(rows.min()), x0 + int(cols.min()), y0 + int(rows.max()) + 1, x0 + int(cols.max()) + 1


def _place(rng: np.random.Generator, alpha: np.ndarray, boxes: list) -> tuple[int, int] | None:
    """A top-left corner where at least ~3/4 of the object is inside the image and its visible
    box overlaps no earlier box by more than MAX_COVER; None after 30 tries."""
    h, w = alpha.shape
    rows, cols = np.nonzero(alpha > 0.5)
    for _ in range(30):
        top = int(rng.integers(-h // 4, PHOTO_SIZE - (3 * h) // 4 + 1))
        left = int(rng.integers(-w // 4, PHOTO_SIZE - (3 * w) // 4 + 1))
        box = (max(0, top + rows.min()), max(0, left + cols.min()),
               min(PHOTO_SIZE, top + rows.max() + 1), min(PHOTO_SIZE, left + cols.max() + 1))
        if min(box[2] - box[0], box[3] - box[1]) < MIN_VISIBLE_SIDE:
            continue
        if all(_cover(box, other) < MAX_COVER for other in boxes):
            return top, left
    return None


def _voc_xml(image_id: str, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    """VOC annotation: pixel boxes 1-based and inclusive (end-exclusive x1 is the inclusive xmax)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", PHOTO_SIZE), ("height", PHOTO_SIZE), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for name, (y0, x0, y1, x1) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bnd, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def render_photo(index: int, seed: int, templates: dict[str, list[_Template]],
                 backgrounds: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """Image ``index`` of the set: (uint8 [S, S, 3], [(class name, (y0, x0, y1, x1) end-exclusive px)]).
    Depends only on (seed, index)."""
    rng = np.random.default_rng([seed, index])
    canvas = _background(backgrounds[int(rng.integers(len(backgrounds)))], rng)
    wanted = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, MAX_OBJECTS + 1))
    names = sorted(templates)
    objects = []
    for _ in range(wanted):
        pool = templates[names[int(rng.integers(len(names)))]]
        rgb, alpha = _cut(pool[int(rng.integers(len(pool)))], rng)
        corner = _place(rng, alpha, [box for _, box in objects])
        if corner is None:
            continue  # no room left: fewer objects
        box = _paste(canvas, rgb, alpha, *corner)
        if box is not None:
            objects.append((pool[0].name, box))
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8), objects


def write_photo_detection_set(root: Path, n_images: int = 600, seed: int = 0) -> Path:
    """A Pascal VOC tree of ``n_images`` photos: ROOT/JPEGImages/<id>.jpg, ROOT/Annotations/<id>.xml,
    ROOT/ImageSets/Main/{train,val,test}.txt (80/10/10 by id order; the images are independent
    draws). Deterministic for ``seed``. Returns ``root``."""
    root = Path(root)
    params = {"set": "photo-detection", "images": n_images, "seed": seed, "size": PHOTO_SIZE}
    if _is_complete(root, params):
        return root
    _clear(root, ["JPEGImages", "Annotations", "ImageSets"])  # a partial or different earlier set
    templates, backgrounds = _templates(), _backgrounds()
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    ids = [f"{i:05d}" for i in range(n_images)]
    for i, image_id in enumerate(ids):
        pixels, objects = render_photo(i, seed, templates, backgrounds)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
        (root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, objects))
    n_train = round(SPLIT_SHARES[0] * n_images)
    n_val = round(SPLIT_SHARES[1] * n_images)
    splits = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
    for name, split_ids in splits.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in split_ids))
    _mark_complete(root, params)
    return root
