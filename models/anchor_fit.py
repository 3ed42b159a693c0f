"""Anchors fitted to the training boxes, as YOLO's autoanchor does for its priors.

``fit_anchors`` clusters the ground-truth box shapes (k-means with distance 1 - IoU),
turns the clusters into an ``AnchorConfig`` (new scales and aspect ratios, same input
size, strides and extra square anchor) and keeps it only if more boxes reach the
matching threshold with it than with the base config. ``anchor_recall`` is that
measure: it uses the real anchors of ``generate_anchors(cfg)``, positions included,
so a box is "covered" only if an anchor near it has the right size and shape.

Boxes are the project's one format: normalized [ymin, xmin, ymax, xmax], float [N, 4].
Shapes are (height, width) as fractions of the image side. Pure NumPy, no TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.anchors import AnchorConfig, generate_anchors

MIN_FITTED_SCALE = 0.02  # fitted scales are clamped into [MIN_FITTED_SCALE, 1.0]
RATIO_LIMITS = (0.05, 20.0)  # fitted aspect ratios (width / height) are clamped into this range
SMALL_BOX_QUANTILE = 0.1  # the low quantile of box sizes tried as min_scale
LARGE_BOX_QUANTILE = 0.9  # the high quantile tried as max_scale


@dataclass(frozen=True)
class AnchorFit:
    """What ``fit_anchors`` found.

    config:      the anchors to train with: the fitted config if its recall beats the base's,
                 else the base config itself.
    recall:      ``anchor_recall`` of ``config`` (so ``recall >= base_recall`` always).
    base_recall: ``anchor_recall`` of the base config.
    clusters:    the IoU k-means centroids, (height, width) pairs sorted by area.
    chosen:      "fitted" or "base": which config ``config`` is.
    """

    config: AnchorConfig
    recall: float
    base_recall: float
    clusters: tuple[tuple[float, float], ...]
    chosen: str

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "recall": self.recall,
            "base_recall": self.base_recall,
            "clusters": [list(c) for c in self.clusters],
            "chosen": self.chosen,
        }


def _as_boxes(boxes) -> np.ndarray:
    """float64 [N, 4] from anything array-like of boxes; an empty input gives [0, 4]."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] normalized [ymin, xmin, ymax, xmax], got shape {boxes.shape}")
    return boxes


def _positive(boxes: np.ndarray) -> np.ndarray:
    """The rows of float [N, 4] boxes with height > 0 and width > 0."""
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def box_shapes(boxes) -> np.ndarray:
    """(height, width) of each box: float [N, 4] -> float64 [M, 2], M <= N.

    Boxes are normalized [ymin, xmin, ymax, xmax]. Degenerate boxes (height or width
    <= 0, e.g. the zero padding of a batch) have no shape to fit and are dropped.
    """
    boxes = _positive(_as_boxes(boxes))
    return np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def _centred_iou(shapes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing one centre: (h, w) float [N, 2], [K, 2] -> float64 [N, K]."""
    inter = np.minimum(shapes[:, None, 0], centroids[None, :, 0]) * np.minimum(shapes[:, None, 1], centroids[None, :, 1])
    union = (shapes[:, 0] * shapes[:, 1])[:, None] + (centroids[:, 0] * centroids[:, 1])[None, :] - inter
    return inter / union


def kmeans_iou(shapes, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """k-means of box shapes with distance 1 - IoU (boxes compared as if they shared a centre).

    Args:
        shapes:     float [N, 2] (height, width), all > 0 (see ``box_shapes``), N >= 1.
        k:          number of clusters wanted, >= 1.
        seed:       seeds the k-means++ initialisation; the same seed gives the same result.
        iterations: most Lloyd steps; stops earlier once the centroids no longer move.

    Returns:
        float64 [K', 2] centroids (height, width), the median of their members, sorted by
        area. K' = min(k, number of distinct shapes): there are never duplicate seeds.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 2 or shapes.shape[1] != 2 or len(shapes) == 0:
        raise ValueError(f"shapes must be a non-empty [N, 2] (height, width) array, got shape {shapes.shape}")
    if not np.all(shapes > 0):
        raise ValueError("shapes must be > 0; drop degenerate boxes first (box_shapes does)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)

    # k-means++: each next seed is drawn with probability ~ (1 - best IoU)^2, so it is far
    # from the seeds so far. When every shape is some seed already, there is nothing to add.
    centroids = shapes[[rng.integers(len(shapes))]]
    while len(centroids) < k:
        d2 = (1.0 - _centred_iou(shapes, centroids).max(axis=1)) ** 2
        total = d2.sum()
        if total <= 0.0:
            break
        centroids = np.concatenate([centroids, shapes[[rng.choice(len(shapes), p=d2 / total)]]])

    for _ in range(iterations):
        iou = _centred_iou(shapes, centroids)
        members = iou.argmax(axis=1)
        updated = centroids.copy()
        for j in range(len(centroids)):
            mine = shapes[members == j]
            if len(mine):
                updated[j] = np.median(mine, axis=0)
            else:
                # An empty cluster moves to the shape that the others cover worst.
                updated[j] = shapes[iou.max(axis=1).argmin()]
        if np.allclose(updated, centroids, rtol=0.0, atol=1e-9):
            break
        centroids = updated
    return centroids[np.argsort(centroids[:, 0] * centroids[:, 1], kind="stable")]


def _best_anchor_iou(boxes: np.ndarray, cfg: AnchorConfig) -> np.ndarray:
    """Best IoU of each box with any anchor of ``cfg``: float [N, 4] -> float64 [N].

    Exact, without the [N, A] IoU matrix. At one level, the anchors of one shape (slot k
    of every cell) form a grid of rows x columns, all the same size. Their overlap with a
    box along y depends on the row only and shrinks with the distance between centres,
    likewise along x; the intersection is the product of the two, and the IoU grows with
    the intersection when both areas are fixed. So the best anchor of the grid lies in
    the row and the column nearest the box's centre: the two rows (columns) around the
    centre are the only ones to check. Costs N * levels * per_location * 4 overlaps.
    """
    anchors = generate_anchors(cfg).astype(np.float64)
    k = cfg.per_location
    b_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0  # [N, 2] (cy, cx)
    best = np.zeros(len(boxes))
    offset = 0
    for n in cfg.feature_map_sizes:
        # The row order of generate_anchors: level, then cell row y, cell column x, slot k.
        level = anchors[offset : offset + n * n * k].reshape(n, n, k, 4)
        offset += n * n * k
        for slot in range(k):
            grid = level[:, :, slot, :]
            overlap = []
            for axis, lines in ((0, grid[:, 0, :]), (1, grid[0, :, :])):  # rows' y, columns' x extents
                lo, hi = lines[:, axis], lines[:, axis + 2]
                nearest = np.searchsorted((lo + hi) / 2.0, centre[:, axis])
                around = np.clip(np.stack([nearest - 1, nearest], axis=1), 0, n - 1)  # [N, 2]
                o = np.minimum(boxes[:, axis + 2, None], hi[around]) - np.maximum(boxes[:, axis, None], lo[around])
                overlap.append(np.maximum(o, 0.0).max(axis=1))
            inter = overlap[0] * overlap[1]
            a_area = (grid[0, 0, 2] - grid[0, 0, 0]) * (grid[0, 0, 3] - grid[0, 0, 1])
            np.maximum(best, inter / (b_area + a_area - inter), out=best)
    return best


def anchor_recall(boxes, cfg: AnchorConfig, iou_threshold: float) -> float:
    """Share of ground-truth boxes whose best IoU with an anchor of ``cfg`` is >= ``iou_threshold``.

    The anchors are ``generate_anchors(cfg)``, positions included. This is the share of
    boxes that get a positive by the threshold rule of ``models.matching.match_anchors``
    (which in addition hands every box its best anchor, however poor). Fast: 5000 boxes
    against 20k anchors take milliseconds (see ``_best_anchor_iou``).

    Args:
        boxes: float [N, 4] normalized [ymin, xmin, ymax, xmax]. Degenerate boxes (height or
               width <= 0, e.g. padding) can match nothing and are left out of the count.
        cfg:   the anchors.
        iou_threshold: in (0, 1].

    Returns:
        The recall in [0, 1]; NaN when there are no (non-degenerate) boxes, since with
        nothing to find a recall is undefined, and a NaN cannot pass for a good score.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    boxes = _positive(_as_boxes(boxes))
    if len(boxes) == 0:
        return float("nan")
    return float(np.mean(_best_anchor_iou(boxes, cfg) >= iou_threshold))


def _kmeans_1d(values: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means in one dimension: float [N] -> sorted float64 [K'], K' <= k.

    Seeded at evenly spaced quantiles, so it needs no random numbers; every value
    counts once, so a shape shared by many boxes weighs as much as its boxes.
    """
    centres = np.unique(np.quantile(values, (np.arange(k) + 0.5) / k))
    for _ in range(iterations):
        members = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        updated = np.array([values[members == j].mean() if np.any(members == j) else centres[j]
                            for j in range(len(centres))])
        if np.allclose(updated, centres, rtol=0.0, atol=1e-12):
            break
        centres = updated
    return np.sort(centres)


def _fitted_ratios(shapes: np.ndarray, base: AnchorConfig) -> tuple[float, ...]:
    """len(base.aspect_ratios) aspect ratios (width / height) fitted to the boxes' shapes.

    1-D k-means on log(w / h), rounded to 2 decimals and clamped into RATIO_LIMITS. If
    fewer distinct ratios come out (boxes of one or two shapes), the base's ratios fill
    the missing places, so no two anchors of a cell are the same. Sorted, with the ratio
    closest to 1 first (1.0 if present, as in the defaults).
    """
    count = len(base.aspect_ratios)
    centres = np.exp(_kmeans_1d(np.log(shapes[:, 1] / shapes[:, 0]), count))
    ratios = sorted({round(float(np.clip(r, *RATIO_LIMITS)), 2) for r in centres})
    for r in base.aspect_ratios:
        if len(ratios) >= count:
            break
        if r not in ratios:
            ratios.append(r)
    ratios.sort()
    first = min(ratios, key=lambda r: abs(math.log(r)))
    ratios.remove(first)
    return (first, *ratios)


def _scale_candidates(shapes: np.ndarray, clusters: np.ndarray, num_levels: int) -> list[tuple[float, float]]:
    """(min_scale, max_scale) pairs to try, from the clusters' and the boxes' sizes.

    Size means sqrt(h * w), the side of the square of the same area (an anchor's scale).
    """
    sizes = np.sqrt(shapes[:, 0] * shapes[:, 1])
    cluster_sizes = np.sqrt(clusters[:, 0] * clusters[:, 1])  # ascending: clusters are sorted by area
    low, high = np.quantile(sizes, [SMALL_BOX_QUANTILE, LARGE_BOX_QUANTILE])
    pairs = [
        (cluster_sizes[0], cluster_sizes[-1]),  # the smallest and the largest cluster
        (low, cluster_sizes[-1]),
        (low, high),
    ]
    if num_levels > 1 and len(cluster_sizes) >= num_levels:
        # One group of clusters per level, smallest first; a line through the groups'
        # (geometric) mean sizes gives the linearly spaced scales AnchorConfig can express.
        groups = np.array_split(np.log(cluster_sizes), num_levels)
        level_sizes = np.exp([g.mean() for g in groups])
        slope, intercept = np.polyfit(np.arange(num_levels), level_sizes, 1)
        pairs.append((intercept, intercept + slope * (num_levels - 1)))
    candidates = []
    for lo, hi in pairs:
        lo = round(float(np.clip(lo, MIN_FITTED_SCALE, 1.0)), 3)
        hi = round(float(np.clip(hi, MIN_FITTED_SCALE, 1.0)), 3)
        if num_levels == 1:
            hi = lo  # unused with one level
        pair = (min(lo, hi), max(lo, hi))
        if pair not in candidates:
            candidates.append(pair)
    return candidates


def fit_anchors(boxes, base: AnchorConfig, iou_threshold: float, seed: int = 0) -> AnchorFit:
    """Anchors fitted to the training boxes, or ``base`` if fitting does not raise recall.

    k = num_levels * len(base.aspect_ratios) shapes are found by ``kmeans_iou``. The
    scales (min_scale, max_scale) come from the sizes of the clusters and of the boxes,
    the aspect ratios from a 1-D k-means of the boxes' log(width / height); a few such
    constructions are built (fitted ratios, and the base's ratios) and the one of the best
    ``anchor_recall`` is the fitted config. input_size, strides and extra_scale are the
    base's, so the feature maps (and the backbone) stay as they are.

    Args:
        boxes: float [N, 4] normalized [ymin, xmin, ymax, xmax], e.g. every box of the
               training split. Degenerate boxes (padding) are ignored.
        base:  the config to improve on, and the fallback.
        iou_threshold: the matching threshold the recall is measured at, in (0, 1].
        seed:  seeds the k-means; the same boxes and seed give the same fit.

    Raises:
        ValueError: if there is no box with positive height and width.
    """
    boxes = _positive(_as_boxes(boxes))
    if len(boxes) == 0:
        raise ValueError("fit_anchors needs at least one box with positive height and width")
    shapes = box_shapes(boxes)
    base_recall = anchor_recall(boxes, base, iou_threshold)
    clusters = kmeans_iou(shapes, base.num_levels * len(base.aspect_ratios), seed=seed)

    best_cfg, best_recall = None, -1.0
    for ratios in dict.fromkeys([_fitted_ratios(shapes, base), base.aspect_ratios]):
        for lo, hi in _scale_candidates(shapes, clusters, base.num_levels):
            cfg = base.replace(min_scale=lo, max_scale=hi, aspect_ratios=ratios)
            recall = anchor_recall(boxes, cfg, iou_threshold)
            if recall > best_recall:  # ties keep the earlier, simpler construction
                best_cfg, best_recall = cfg, recall

    clusters = tuple((float(h), float(w)) for h, w in clusters)
    if best_recall > base_recall:
        return AnchorFit(config=best_cfg, recall=best_recall, base_recall=base_recall, clusters=clusters,
                         chosen="fitted")
    return AnchorFit(config=base, recall=base_recall, base_recall=base_recall, clusters=clusters, chosen="base")
