"""Matching ground-truth boxes to anchors, and the per-anchor training targets.

Pure TensorFlow with static output shapes (the anchor count), so
``encode_targets`` runs inside ``tf.data.Dataset.map`` and the targets are
made in the input pipeline, not in the training step. Boxes are normalized
[ymin, xmin, ymax, xmax], float32.
"""
from __future__ import annotations

import tensorflow as tf

from models.box_coding import encode_boxes

DEFAULT_IOU_THRESHOLD = 0.5  # SSD's: an anchor overlapping a box this much is a positive


def pairwise_iou(boxes_a, boxes_b) -> tf.Tensor:
    """Intersection over union of every pair: float32 [N, 4], [M, 4] -> float32 [N, M].

    A pair whose union is empty (two zero-area boxes) has IoU 0.
    """
    a = tf.cast(boxes_a, tf.float32)[:, None, :]
    b = tf.cast(boxes_b, tf.float32)[None, :, :]
    inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_h * inter_w
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return tf.math.divide_no_nan(inter, area_a + area_b - inter)


def _with_sentinel(boxes) -> tf.Tensor:
    """float32 [N + 1, 4]: a zero-area box at row 0, then ``boxes``.

    The sentinel has IoU 0 with every anchor, so it can never be matched, yet it
    keeps every argmax and gather defined when the image has no objects (N == 0).
    """
    return tf.concat([tf.zeros([1, 4], tf.float32), tf.cast(boxes, tf.float32)], axis=0)


def match_anchors(gt_boxes, anchors, iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> tf.Tensor:
    """Assign each anchor at most one ground-truth box.

    An anchor takes the box it overlaps most if that IoU >= ``iou_threshold``.
    In addition every box claims its single best anchor whatever the IoU (if
    it is above 0), so small or oddly shaped objects still get a positive;
    an anchor claimed by several boxes goes to the one it overlaps most.

    Args:
        gt_boxes: float32 [N, 4], N >= 0. Zero-area boxes (e.g. padding) never match.
        anchors:  float32 [A, 4].

    Returns:
        int32 [A]: index into ``gt_boxes`` of each anchor's box, -1 for background.
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    iou = pairwise_iou(_with_sentinel(gt_boxes), anchors)  # [N + 1, A]; row 0 is the sentinel
    best_gt = tf.argmax(iou, axis=0, output_type=tf.int32)
    matched = tf.where(tf.reduce_max(iou, axis=0) >= iou_threshold, best_gt, 0)

    best_anchor = tf.argmax(iou, axis=1, output_type=tf.int32)  # [N + 1]
    num_anchors = tf.shape(anchors)[0]
    claimed = (tf.range(num_anchors)[None, :] == best_anchor[:, None]) & (iou > 0.0)  # [N + 1, A]
    claimant = tf.argmax(tf.where(claimed, iou, -1.0), axis=0, output_type=tf.int32)
    matched = tf.where(tf.reduce_any(claimed, axis=0), claimant, matched)
    return matched - 1


def encode_targets(boxes, labels, anchors, iou_threshold: float = DEFAULT_IOU_THRESHOLD):
    """Per-anchor training targets of one image.

    Args:
        boxes:   float32 [N, 4], N >= 0 (an image with no objects is all background).
        labels:  int [N], 0-based class ids (index into the dataset's label names).
        anchors: float32 [A, 4], ``generate_anchors(cfg)``; a NumPy array keeps A static.

    Returns:
        class_ids: int32 [A]; 0 is background, ``label + 1`` for a matched anchor.
        deltas:    float32 [A, 4] ``encode_boxes`` of the matched box; 0 for background.
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    matched = match_anchors(boxes, anchors, iou_threshold)
    positive = matched >= 0
    rows = matched + 1  # rows of the sentinel-padded arrays; background points at the sentinel
    labels = tf.concat([[-1], tf.cast(labels, tf.int32)], axis=0)
    class_ids = tf.where(positive, tf.gather(labels, rows) + 1, 0)
    # Background anchors encode the zero-area sentinel (-inf); tf.where discards those rows.
    deltas = encode_boxes(tf.gather(_with_sentinel(boxes), rows), anchors)
    deltas = tf.where(positive[:, None], deltas, 0.0)
    return class_ids, deltas
