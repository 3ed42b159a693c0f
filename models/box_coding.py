"""SSD box coding: boxes <-> regression targets relative to anchors.

Boxes and anchors are normalized [ymin, xmin, ymax, xmax], float32 (the
project's one box format); the "centers" form [cy, cx, h, w] exists only
inside the coding. Everything is TensorFlow ops, so the same functions run in
a ``tf.data`` map, in a Keras model and eagerly (NumPy arrays in, tensors out).
"""
from __future__ import annotations

import tensorflow as tf

# Standard SSD variances for (cy, cx, h, w): they scale the deltas to roughly unit
# variance. The only place they are written; the exporter's TFLite_Detection_PostProcess
# scales (y_scale=10, x_scale=10, h_scale=5, w_scale=5) are their reciprocals.
BOX_VARIANCES = (0.1, 0.1, 0.2, 0.2)


def corners_to_centers(boxes) -> tf.Tensor:
    """[..., 4] [ymin, xmin, ymax, xmax] -> float32 [..., 4] [cy, cx, h, w]."""
    ymin, xmin, ymax, xmax = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
    return tf.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], axis=-1)


def centers_to_corners(boxes) -> tf.Tensor:
    """[..., 4] [cy, cx, h, w] -> float32 [..., 4] [ymin, xmin, ymax, xmax]."""
    cy, cx, h, w = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
    return tf.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


def encode_boxes(boxes, anchors) -> tf.Tensor:
    """Regression targets of ``boxes`` relative to ``anchors``.

    Args:
        boxes:   float32 [..., A, 4] corners, each with positive height and width
                 (a zero side gives -inf; the matcher never assigns such a box).
        anchors: float32 [A, 4] corners (broadcast against ``boxes``).

    Returns:
        float32 [..., A, 4] deltas [ty, tx, th, tw] =
        [(cy - cya) / ha, (cx - cxa) / wa, log(h / ha), log(w / wa)] / BOX_VARIANCES.
    """
    cy, cx, h, w = tf.unstack(corners_to_centers(boxes), axis=-1)
    cya, cxa, ha, wa = tf.unstack(corners_to_centers(anchors), axis=-1)
    deltas = tf.stack([(cy - cya) / ha, (cx - cxa) / wa, tf.math.log(h / ha), tf.math.log(w / wa)], axis=-1)
    return deltas / tf.constant(BOX_VARIANCES, tf.float32)


def decode_boxes(deltas, anchors) -> tf.Tensor:
    """Inverse of ``encode_boxes``: float32 [..., A, 4] deltas -> float32 [..., A, 4] corners.

    Args:
        deltas:  float32 [..., A, 4] [ty, tx, th, tw], as ``encode_boxes`` makes them.
        anchors: float32 [A, 4] corners.
    """
    ty, tx, th, tw = tf.unstack(tf.cast(deltas, tf.float32) * tf.constant(BOX_VARIANCES, tf.float32), axis=-1)
    cya, cxa, ha, wa = tf.unstack(corners_to_centers(anchors), axis=-1)
    centers = tf.stack([ty * ha + cya, tx * wa + cxa, tf.exp(th) * ha, tf.exp(tw) * wa], axis=-1)
    return centers_to_corners(centers)
