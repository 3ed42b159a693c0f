"""Anchor fitting: k-means of box shapes, the recall measure, and the fitted config."""
import json
import math

import numpy as np
import pytest

from models.anchor_fit import AnchorFit, anchor_recall, box_shapes, fit_anchors, kmeans_iou
from models.anchors import AnchorConfig, generate_anchors

# One 2x2 level (64 px input, stride 32), one square anchor of side 0.5 per cell: the four quadrants.
TINY = AnchorConfig(input_size=64, strides=(32,), min_scale=0.5, max_scale=0.5, aspect_ratios=(1.0,), extra_scale=False)


def boxes_around(centres, shapes):
    """Normalized [ymin, xmin, ymax, xmax] [N, 4] from (cy, cx) [N, 2] and (h, w) [N, 2]."""
    centres, shapes = np.asarray(centres, float), np.asarray(shapes, float)
    return np.concatenate([centres - shapes / 2, centres + shapes / 2], axis=1)


def jittered_boxes(rng, n, shape, jitter=0.05, lo=0.3, hi=0.7):
    """n boxes of about ``shape`` (h, w), +-jitter relative, centred uniformly in [lo, hi]^2."""
    shapes = np.asarray(shape) * (1 + rng.uniform(-jitter, jitter, (n, 2)))
    return boxes_around(rng.uniform(lo, hi, (n, 2)), shapes)


def brute_force_recall(boxes, cfg, threshold):
    """The [N, A] IoU matrix, spelled out: the reference anchor_recall must agree with."""
    a = generate_anchors(cfg).astype(np.float64)
    b = np.asarray(boxes, np.float64)
    ih = np.clip(np.minimum(b[:, None, 2], a[None, :, 2]) - np.maximum(b[:, None, 0], a[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(b[:, None, 3], a[None, :, 3]) - np.maximum(b[:, None, 1], a[None, :, 1]), 0, None)
    inter = ih * iw
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    iou = inter / (area_b[:, None] + area_a[None, :] - inter)
    return float(np.mean(iou.max(axis=1) >= threshold))


def test_box_shapes_gives_height_width_and_drops_degenerate_boxes():
    boxes = [[0.1, 0.2, 0.4, 0.3], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.6, 0.5], [0.2, 0.0, 0.3, 0.8]]
    np.testing.assert_allclose(box_shapes(boxes), [[0.3, 0.1], [0.1, 0.8]])
    assert box_shapes(np.zeros((0, 4))).shape == (0, 2)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_shapes(np.zeros((3, 2)))


def test_kmeans_iou_finds_three_well_separated_shapes():
    rng = np.random.default_rng(1)
    truth = np.array([(0.1, 0.1), (0.3, 0.15), (0.5, 0.8)])  # sorted by area, as the result is
    # +-20 % jitter: any single member may be 20 % off, the members' median is not.
    shapes = np.concatenate([t * (1 + rng.uniform(-0.2, 0.2, (200, 2))) for t in truth])
    centroids = kmeans_iou(shapes, 3, seed=0)
    assert centroids.shape == (3, 2)
    np.testing.assert_allclose(centroids, truth, rtol=0.03)


def test_kmeans_iou_is_deterministic_for_a_seed():
    shapes = np.random.default_rng(2).uniform(0.02, 0.9, (300, 2))
    first = kmeans_iou(shapes, 6, seed=7)
    np.testing.assert_array_equal(first, kmeans_iou(shapes, 6, seed=7))
    areas = first[:, 0] * first[:, 1]
    assert np.all(np.diff(areas) >= 0)


def test_kmeans_iou_with_more_clusters_than_distinct_shapes_returns_the_shapes():
    shapes = np.array([(0.1, 0.2)] * 5 + [(0.4, 0.4)] * 3)
    np.testing.assert_allclose(kmeans_iou(shapes, 5, seed=0), [(0.1, 0.2), (0.4, 0.4)])
    with pytest.raises(ValueError, match="> 0"):
        kmeans_iou([(0.1, 0.0)], 1)


def test_recall_is_one_for_the_anchors_zero_for_tiny_boxes_and_the_fraction_for_a_mix():
    anchors = generate_anchors(TINY)
    tiny = boxes_around([(0.25, 0.25), (0.75, 0.75)], [(0.05, 0.05)] * 2)  # IoU 0.01 with their cell's anchor
    assert anchor_recall(anchors, TINY, 0.5) == 1.0
    assert anchor_recall(tiny, TINY, 0.5) == 0.0
    assert anchor_recall(np.concatenate([anchors[:3], tiny]), TINY, 0.5) == pytest.approx(3 / 5)


def test_recall_counts_positions_not_only_shapes():
    # An anchor-sized box halfway between two cells: overlap 0.5 x 0.25 with each -> IoU 1/3,
    # although its shape is exactly the anchors' shape.
    between = boxes_around([(0.25, 0.5)], [(0.5, 0.5)])
    assert anchor_recall(between, TINY, 0.3) == 1.0
    assert anchor_recall(between, TINY, 0.34) == 0.0
    # Shifted by 0.1 in x from the first cell: overlap 0.5 x 0.4 -> IoU 0.2 / 0.3 = 2/3.
    shifted = boxes_around([(0.25, 0.35)], [(0.5, 0.5)])
    assert anchor_recall(shifted, TINY, 0.66) == 1.0
    assert anchor_recall(shifted, TINY, 0.67) == 0.0


def test_recall_ignores_degenerate_boxes_and_is_nan_without_boxes():
    anchors = generate_anchors(TINY)
    padded = np.concatenate([anchors[:1], np.zeros((3, 4))])
    assert anchor_recall(padded, TINY, 0.5) == 1.0
    assert math.isnan(anchor_recall(np.zeros((0, 4)), TINY, 0.5))
    assert math.isnan(anchor_recall(np.zeros((2, 4)), TINY, 0.5))
    with pytest.raises(ValueError, match="iou_threshold"):
        anchor_recall(anchors, TINY, 0.0)


@pytest.mark.parametrize(
    "cfg",
    [
        AnchorConfig(),  # 320 / 128 rounds up to a 3x3 map
        AnchorConfig(input_size=96, strides=(16, 48), min_scale=0.1, max_scale=0.6, aspect_ratios=(1.0, 3.0, 0.25)),
        AnchorConfig(input_size=64, strides=(32,), min_scale=0.3, max_scale=0.3, aspect_ratios=(0.5,), extra_scale=False),
    ],
)
def test_recall_agrees_with_the_full_iou_matrix(cfg):
    rng = np.random.default_rng(3)
    # Centres anywhere, also near and beyond the edges; sizes from tiny to the whole image.
    boxes = boxes_around(rng.uniform(-0.05, 1.05, (400, 2)), rng.uniform(0.01, 0.9, (400, 2)))
    for threshold in (0.3, 0.5, 0.7):
        assert anchor_recall(boxes, cfg, threshold) == pytest.approx(brute_force_recall(boxes, cfg, threshold), abs=1e-12)


def test_fit_raises_recall_for_tall_thin_boxes_the_default_anchors_miss():
    rng = np.random.default_rng(4)
    boxes = jittered_boxes(rng, 600, (0.4, 0.05))  # width / height 0.125; the defaults go down to 0.5
    base = AnchorConfig()
    fit = fit_anchors(boxes, base, 0.5)
    assert isinstance(fit, AnchorFit)
    assert fit.base_recall < 0.05
    assert fit.recall > 0.8
    assert fit.chosen == "fitted"
    assert fit.recall == pytest.approx(anchor_recall(boxes, fit.config, 0.5))
    cfg = fit.config
    assert (cfg.input_size, cfg.strides, cfg.extra_scale) == (base.input_size, base.strides, base.extra_scale)
    assert len(cfg.aspect_ratios) == len(base.aspect_ratios)
    assert all(round(r, 2) == r for r in cfg.aspect_ratios)
    assert min(cfg.aspect_ratios) < 0.2  # a thin anchor was made
    assert abs(math.log(cfg.aspect_ratios[0])) == min(abs(math.log(r)) for r in cfg.aspect_ratios)
    assert len(fit.clusters) == base.num_levels * len(base.aspect_ratios)
    assert AnchorConfig.from_dict(json.loads(json.dumps(fit.to_dict()))["config"]) == cfg
    assert generate_anchors(cfg).shape == (cfg.num_anchors, 4)


def test_fit_raises_recall_for_small_objects():
    rng = np.random.default_rng(5)
    boxes = jittered_boxes(rng, 600, (0.04, 0.04), lo=0.05, hi=0.95)
    base = AnchorConfig(input_size=320, strides=(8, 16, 32, 64))  # the smallest default anchor is 0.2 wide
    fit = fit_anchors(boxes, base, 0.5)
    assert fit.base_recall == 0.0
    assert fit.recall > 0.5
    assert fit.chosen == "fitted"
    assert 0.02 <= fit.config.min_scale < 0.08
    assert (fit.config.input_size, fit.config.strides) == (base.input_size, base.strides)


def test_fit_keeps_the_base_when_it_already_covers_every_box():
    base = AnchorConfig()
    anchors = generate_anchors(base)
    boxes = anchors[np.random.default_rng(6).choice(len(anchors), 500, replace=False)]
    fit = fit_anchors(boxes, base, 0.5)
    assert fit.base_recall == 1.0
    assert fit.chosen == "base"
    assert fit.config == base
    assert fit.recall == fit.base_recall


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_is_never_worse_than_the_base(seed):
    rng = np.random.default_rng(seed)
    # Boxes the default anchors mostly cover, of varied shapes and sizes.
    boxes = boxes_around(rng.uniform(0.2, 0.8, (400, 2)), rng.uniform(0.15, 0.7, (400, 2)))
    base = AnchorConfig()
    fit = fit_anchors(boxes, base, 0.5, seed=seed)
    assert fit.recall >= fit.base_recall
    assert fit.recall == pytest.approx(anchor_recall(boxes, fit.config, 0.5))
    assert fit.chosen == ("fitted" if fit.recall > fit.base_recall else "base")
    assert fit.chosen == "fitted" or fit.config == base


def test_fit_is_deterministic_and_fails_loudly_without_boxes():
    boxes = jittered_boxes(np.random.default_rng(7), 200, (0.2, 0.3), jitter=0.5)
    assert fit_anchors(boxes, AnchorConfig(), 0.5, seed=3) == fit_anchors(boxes, AnchorConfig(), 0.5, seed=3)
    with pytest.raises(ValueError, match="positive height and width"):
        fit_anchors(np.zeros((4, 4)), AnchorConfig(), 0.5)
