"""The SSD training loss: smooth-L1 box regression plus a classification term.

Contract with ``fit()``. The model has one output, ``predictions`` float32
[B, A, 4 + C + 1]: box deltas then class logits (background is class 0; see
``models.ssd.split_predictions``). One output rather than two because both
terms are normalized by the same count of positive anchors, which a
per-output Keras loss could not see. The matching ``y_true`` is float32
[B, A, 5]: the encoded deltas, then the class id as a float (``pack_targets``).

Classification is softmax cross-entropy on the positives plus the hardest
negatives (``neg_pos_ratio`` of them per positive, per image), or -- with
``focal=True`` -- a softmax focal loss over every anchor. Both terms are
summed and divided by the number of positives in the batch (at least 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import tensorflow as tf

from models.ssd import split_predictions


@dataclass(frozen=True)
class LossConfig:
    """Settings of the SSD loss.

    focal:         False: cross-entropy with hard-negative mining (SSD); True: focal loss
                   on all anchors, no mining (RetinaNet-style, with a softmax).
    neg_pos_ratio: hard negatives kept per positive anchor, per image (mining only).
    min_negatives: hard negatives kept per image even without positives, so images with
                   no objects still teach "background" (mining only; SSD uses 0).
    focal_alpha:   weight of positive anchors in the focal loss; background gets 1 - alpha.
    focal_gamma:   focusing exponent of the focal loss.
    box_weight:    weight of the localization term relative to classification.
    """

    focal: bool = False
    neg_pos_ratio: float = 3.0
    min_negatives: int = 0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_weight: float = 1.0

    def __post_init__(self):
        problems = []
        if self.neg_pos_ratio <= 0:
            problems.append(f"neg_pos_ratio must be > 0, got {self.neg_pos_ratio}")
        if self.min_negatives < 0:
            problems.append(f"min_negatives must be >= 0, got {self.min_negatives}")
        if not 0.0 < self.focal_alpha < 1.0:
            problems.append(f"focal_alpha must be in (0, 1), got {self.focal_alpha}")
        if self.focal_gamma < 0 or self.box_weight < 0:
            problems.append(f"focal_gamma and box_weight must be >= 0, got {self.focal_gamma}, {self.box_weight}")
        if problems:
            raise ValueError("invalid LossConfig: " + "; ".join(problems))


def pack_targets(class_ids, deltas) -> tf.Tensor:
    """``encode_targets`` output -> ``y_true``: int32 [..., A], float32 [..., A, 4] -> float32 [..., A, 5]."""
    return tf.concat([tf.cast(deltas, tf.float32), tf.cast(class_ids, tf.float32)[..., None]], axis=-1)


def unpack_targets(y_true):
    """Inverse of ``pack_targets``: float32 [..., A, 5] -> (int32 [..., A] class ids, float32 [..., A, 4] deltas)."""
    y_true = tf.convert_to_tensor(y_true, tf.float32)
    return tf.cast(tf.round(y_true[..., 4]), tf.int32), y_true[..., :4]


def smooth_l1(diff) -> tf.Tensor:
    """Elementwise smooth L1 (Huber with delta 1): 0.5 x^2 if |x| < 1 else |x| - 0.5."""
    x = tf.abs(diff)
    return tf.where(x < 1.0, 0.5 * x * x, x - 0.5)


def hard_negative_mask(neg_scores, positive, neg_pos_ratio: float = 3.0, min_negatives: int = 0) -> tf.Tensor:
    """Pick each image's highest-scoring negatives.

    Args:
        neg_scores: float32 [B, A], how wrong each anchor is as background (its loss).
        positive:   bool [B, A].

    Returns:
        bool [B, A]: the max(floor(neg_pos_ratio * positives), min_negatives) negative
        anchors of highest score in each image (fewer if the image has fewer negatives).
    """
    num_pos = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1)
    num_neg = tf.maximum(tf.floor(neg_pos_ratio * num_pos), float(min_negatives))
    # Positives sort last; ranks come from argsort of argsort. No gradient flows through a ranking.
    scores = tf.where(positive, -1.0, tf.stop_gradient(tf.cast(neg_scores, tf.float32)))
    rank = tf.argsort(tf.argsort(scores, axis=1, direction="DESCENDING"), axis=1)
    return (tf.cast(rank, tf.float32) < num_neg[:, None]) & ~positive


def loss_terms(y_true, y_pred, cfg: LossConfig = LossConfig()) -> dict:
    """The loss per image, before normalization.

    Args:
        y_true: float32 [B, A, 5] (``pack_targets``).
        y_pred: float32 [B, A, 4 + C + 1] (the model's ``predictions``).

    Returns:
        {"box": float32 [B] summed smooth L1 over positive anchors,
         "class": float32 [B] summed classification loss,
         "num_positives": float32 [B]}
    """
    class_ids, target_deltas = unpack_targets(y_true)
    deltas, logits = split_predictions(tf.cast(y_pred, tf.float32))
    positive = class_ids > 0
    pos = tf.cast(positive, tf.float32)

    box = tf.reduce_sum(tf.reduce_sum(smooth_l1(deltas - target_deltas), axis=-1) * pos, axis=1)

    log_probs = tf.nn.log_softmax(logits, axis=-1)
    log_p_true = tf.gather(log_probs, class_ids, axis=-1, batch_dims=2)  # [B, A]
    if cfg.focal:
        alpha = tf.where(positive, cfg.focal_alpha, 1.0 - cfg.focal_alpha)
        per_anchor = -alpha * tf.pow(1.0 - tf.exp(log_p_true), cfg.focal_gamma) * log_p_true
        cls = tf.reduce_sum(per_anchor, axis=1)
    else:
        ce = -log_p_true
        keep = positive | hard_negative_mask(ce, positive, cfg.neg_pos_ratio, cfg.min_negatives)
        cls = tf.reduce_sum(ce * tf.cast(keep, tf.float32), axis=1)
    return {"box": box, "class": cls, "num_positives": tf.reduce_sum(pos, axis=1)}


def per_image_loss(y_true, y_pred, cfg: LossConfig = LossConfig()) -> tf.Tensor:
    """float32 [B]: each image's share of the batch loss; their sum is the SSD loss.

    Normalized by the positives of the whole batch (not per image), so an image
    with many objects weighs more than one with a single object, as in SSD.
    """
    t = loss_terms(y_true, y_pred, cfg)
    num_pos = tf.maximum(tf.reduce_sum(t["num_positives"]), 1.0)
    return (cfg.box_weight * t["box"] + t["class"]) / num_pos


def ssd_loss(y_true, y_pred, cfg: LossConfig = LossConfig()) -> tf.Tensor:
    """float32 []: the batch loss, for a custom training step."""
    return tf.reduce_sum(per_image_loss(y_true, y_pred, cfg))


class SSDLoss(keras.losses.Loss):
    """``ssd_loss`` as a Keras loss: ``model.compile(loss=SSDLoss(LossConfig(...)))``.

    The reduction is fixed to "sum" because ``per_image_loss`` already divides by
    the batch's positives; a mean over the batch would divide twice. Loading a
    model saved with this loss compiled needs ``custom_objects={"SSDLoss": SSDLoss}``
    (or ``compile=False``).
    """

    def __init__(self, config: LossConfig | None = None, name: str = "ssd_loss", **kwargs):
        kwargs.pop("reduction", None)  # from_config passes it back; it is not a choice here
        super().__init__(name=name, reduction="sum", **kwargs)
        self.config = config if config is not None else LossConfig()

    def call(self, y_true, y_pred):
        return per_image_loss(y_true, y_pred, self.config)

    def get_config(self) -> dict:
        return {**super().get_config(), "config": asdict(self.config)}

    @classmethod
    def from_config(cls, config: dict) -> "SSDLoss":
        config = dict(config)
        return cls(LossConfig(**config.pop("config")), **config)
