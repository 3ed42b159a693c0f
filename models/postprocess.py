"""From SSD outputs to detections: decode the boxes, softmax, class-wise NMS.

Pure TensorFlow, so it runs eagerly, inside a ``tf.function`` and in a
serving signature. Boxes are normalized [ymin, xmin, ymax, xmax], float32.
"""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from models.box_coding import decode_boxes

# Post-processing of every detector (Keras evaluation, predict, the exported op), in one place.
# A low score threshold: mAP needs the whole precision/recall curve; predict filters for display.
SCORE_THRESHOLD = 0.01
NMS_IOU = 0.5  # suppress a box overlapping a better one of its class this much
MAX_DETECTIONS = 100


class Detections(NamedTuple):
    """Up to K = max_detections detections per image, best first; rows past ``num`` are zero.

    boxes:   float32 [B, K, 4], clipped to the image.
    scores:  float32 [B, K], softmax probability of the class.
    classes: int32 [B, K], 0-based object class (the dataset's label id; background is never reported).
    num:     int32 [B], valid rows per image.
    """

    boxes: tf.Tensor
    scores: tf.Tensor
    classes: tf.Tensor
    num: tf.Tensor


def decode_detections(
    box_deltas,
    logits,
    anchors,
    score_threshold: float = 0.3,
    iou_threshold: float = NMS_IOU,
    max_detections: int = MAX_DETECTIONS,
) -> Detections:
    """Turn raw model outputs into detections.

    Args:
        box_deltas: float32 [B, A, 4], the first 4 channels of the model's predictions.
        logits:     float32 [B, A, C + 1], the rest; index 0 is background.
        anchors:    float32 [A, 4], ``generate_anchors`` of the model's AnchorConfig.
        score_threshold: drop detections whose class probability is below this.
        iou_threshold: suppress a box overlapping a better one of its class this much.
        max_detections: K, per image (also the cap per class).
    """
    boxes = decode_boxes(box_deltas, anchors)  # [B, A, 4]
    scores = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)[..., 1:]  # drop background
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],  # one box per anchor, shared by all classes
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        clip_boxes=True,
    )
    return Detections(
        boxes=nms.nmsed_boxes,
        scores=nms.nmsed_scores,
        classes=tf.cast(nms.nmsed_classes, tf.int32),
        num=tf.cast(nms.valid_detections, tf.int32),
    )
