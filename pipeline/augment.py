"""Training-only augmentation for classification, vectorised over a batch.

Random horizontal flip, a zoom-in crop with a small translation (the crop box
stays inside the image, so no artificial borders appear), brightness and
contrast. Randomness is stateless and seeded per batch, so a seed fixes the
whole augmented stream.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """flip: horizontal flips; zoom: max zoom-in (0.2 = crops down to 1/1.2 of the side), and the
    crop moves freely inside the image; brightness: max shift as a fraction of 255; contrast: max
    relative change. All zero disables augmentation."""

    flip: bool = True
    zoom: float = 0.15
    brightness: float = 0.1
    contrast: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return bool(self.flip or self.zoom or self.brightness or self.contrast)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """float32 [B, S, S, 3] in 0..255, seed int64 [2] -> augmented float32 [B, S, S, 3] in 0..255."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    seeds = tf.random.experimental.stateless_split(seed, num=5)

    def uniform(i, lo, hi, shape=None):
        return tf.random.stateless_uniform(shape if shape is not None else [batch], seeds[i], lo, hi)

    if cfg.flip:
        flip = uniform(0, 0.0, 1.0) < 0.5
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if cfg.zoom:
        side = 1.0 / uniform(1, 1.0, 1.0 + cfg.zoom)  # crop side, normalized
        free = 1.0 - side
        offsets = uniform(2, 0.0, 1.0, shape=[batch, 2]) * free[:, None]
        boxes = tf.concat([offsets, offsets + side[:, None]], axis=1)  # [ymin, xmin, ymax, xmax]
        images = tf.image.crop_and_resize(images, boxes, tf.range(batch), size)
    if cfg.brightness:
        images = images + (uniform(3, -cfg.brightness, cfg.brightness) * 255.0)[:, None, None, None]
    if cfg.contrast:
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        factor = uniform(4, 1.0 - cfg.contrast, 1.0 + cfg.contrast)[:, None, None, None]
        images = (images - mean) * factor + mean
    return tf.clip_by_value(images, 0.0, 255.0)
