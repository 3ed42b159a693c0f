"""Procedural rendering of the built-in `shapes` data: pure NumPy + Pillow, no TensorFlow.

Each image is a function of one ``numpy.random.Generator``, so a (seed, split,
index) triple always gives the same pixels. Shapes vary in size, position,
rotation, stroke width, fill, colour, background texture and noise.

Boxes are ``normalized [ymin, xmin, ymax, xmax], float32``, measured from the
rendered pixels of each shape (tight around what is visible).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPE_NAMES = ("x", "o", "square", "triangle", "circle", "plus", "star")

_SUPERSAMPLE = 4  # draw 4x larger and downsample: smooth, anti-aliased edges
_MAX_ROTATION_DEG = 20.0  # wider would make "x" a rotated "plus"
_MIN_CONTRAST = 0.3  # luminance gap between shape and background, 0..1


def _luminance(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, [0.299, 0.587, 0.114]))


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground RGB in 0..1 with at least _MIN_CONTRAST luminance gap."""
    while True:
        bg, fg = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
        if abs(_luminance(bg) - _luminance(fg)) >= _MIN_CONTRAST:
            return bg, fg


def _background(rng: np.random.Generator, size: int, bg: np.ndarray) -> np.ndarray:
    """float32 [size, size, 3] in 0..1: a tinted gradient plus one low-contrast texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    tint = rng.uniform(-0.15, 0.15, 3)
    img = bg[None, None, :] + ramp * tint[None, None, :]
    kind = rng.integers(0, 4)
    amp = rng.uniform(0.03, 0.10)
    if kind == 1:  # smooth blotches: coarse noise upsampled
        cells = int(rng.integers(3, 8))
        coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        blot = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))
        img = img + amp * blot[..., None]
    elif kind == 2:  # stripes
        freq = rng.uniform(2, 8)
        phase = rng.uniform(0, 2 * math.pi)
        theta = rng.uniform(0, math.pi)
        stripes = np.sin(2 * math.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        img = img + amp * stripes[..., None]
    elif kind == 3:  # checkerboard
        n = int(rng.integers(3, 9))
        check = ((np.floor(xx * n) + np.floor(yy * n)) % 2) * 2 - 1
        img = img + amp * check[..., None]
    return img.astype(np.float32)


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return points @ rot.T


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    out = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return np.array(out)


_POLYGONS = {
    "square": np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]),
    "triangle": np.array([(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)]),
    "star": _star(),
}


def _draw_mask(rng: np.random.Generator, name: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """float32 [size, size] coverage in 0..1 of one shape centred at (cx, cy) pixels."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    c = np.array([cx, cy]) * s
    r = radius * s
    stroke = max(1.5, rng.uniform(0.12, 0.28) * radius) * s
    rotation = rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG)

    def to_canvas(points: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in (_rotate(points, rotation) * r + c)]

    if name in ("x", "plus"):
        half = 0.85
        arms = [((-half, -half), (half, half)), ((-half, half), (half, -half))] if name == "x" \
            else [((0, -1), (0, 1)), ((-1, 0), (1, 0))]
        for a, b in arms:
            draw.line(to_canvas(np.array([a, b])), fill=255, width=int(round(stroke)))
    elif name in ("o", "circle"):
        box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
        if name == "o":
            draw.ellipse(box, outline=255, width=int(round(stroke)))
        else:
            draw.ellipse(box, fill=255)
    else:
        poly = to_canvas(_POLYGONS[name])
        if rng.uniform() < 0.5:
            draw.polygon(poly, fill=255)
        else:
            draw.line(poly + [poly[0]], fill=255, width=int(round(stroke)), joint="curve")
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add sensor-like noise and quantize to uint8 [H, W, 3]."""
    sigma = rng.uniform(0.0, 0.06)
    img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box of the visible pixels, normalized [ymin, xmin, ymax, xmax] float32."""
    size_y, size_x = mask.shape
    ys, xs = np.nonzero(mask > 0.25)
    return np.array(
        [ys.min() / size_y, xs.min() / size_x, (ys.max() + 1) / size_y, (xs.max() + 1) / size_x],
        dtype=np.float32,
    )


def render_classification(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """One image with one shape. Returns (uint8 [size, size, 3], label index into SHAPE_NAMES)."""
    label = int(rng.integers(len(SHAPE_NAMES)))
    bg, fg = _colours(rng)
    img = _background(rng, size, bg)
    radius = rng.uniform(0.20, 0.42) * size
    margin = radius + 1
    cx, cy = rng.uniform(margin, size - margin, 2)
    mask = _draw_mask(rng, SHAPE_NAMES[label], size, cx, cy, radius)[..., None]
    img = img * (1 - mask) + fg[None, None, :] * mask
    return _finish(rng, img), label


def _overlaps(box: np.ndarray, others: list[np.ndarray], gap: float) -> bool:
    for o in others:
        if not (box[2] + gap <= o[0] or o[2] + gap <= box[0] or box[3] + gap <= o[1] or o[3] + gap <= box[1]):
            return True
    return False


def render_detection(
    rng: np.random.Generator, size: int, max_objects: int = 4, empty_fraction: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image with 0..max_objects non-overlapping shapes.

    Returns (uint8 [size, size, 3], boxes float32 [N, 4] normalized
    [ymin, xmin, ymax, xmax], labels int64 [N] indexing SHAPE_NAMES).
    """
    bg, _ = _colours(rng)
    img = _background(rng, size, bg)
    n = 0 if rng.uniform() < empty_fraction else int(rng.integers(1, max_objects + 1))
    boxes, labels = [], []
    for _ in range(n):
        for _attempt in range(30):
            radius = rng.uniform(0.08, 0.22) * size
            margin = radius + 1
            cx, cy = rng.uniform(margin, size - margin, 2)
            guess = np.array([cy - radius, cx - radius, cy + radius, cx + radius]) / size
            if not _overlaps(guess, boxes, gap=0.02):
                break
        else:
            continue  # no room left; fewer objects is fine
        label = int(rng.integers(len(SHAPE_NAMES)))
        while True:  # each object its own colour, visible against the local background
            fg = rng.uniform(0.0, 1.0, 3)
            if abs(_luminance(fg) - _luminance(bg)) >= _MIN_CONTRAST:
                break
        mask = _draw_mask(rng, SHAPE_NAMES[label], size, cx, cy, radius)
        img = img * (1 - mask[..., None]) + fg[None, None, :] * mask[..., None]
        boxes.append(guess)  # placement uses the outer circle; the stored box is the tight one
        labels.append((label, _mask_box(mask)))
    tight = np.array([b for _, b in labels], dtype=np.float32).reshape(-1, 4)
    ids = np.array([lab for lab, _ in labels], dtype=np.int64)
    return _finish(rng, img), tight, ids
