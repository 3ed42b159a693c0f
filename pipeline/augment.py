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
    """float32 [B, S, S, 3] in 0..255, seed int64 [2] -> augmented float32 [B, S, S, 3] in 0..255.

    Two passes over the pixels, whatever is enabled: one resampling (the crop box carries the
    zoom, the translation and - with its x coordinates swapped - the flip) and one multiply-add
    (brightness and contrast folded into a per-image scale and offset).
    """
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    seeds = tf.random.experimental.stateless_split(seed, num=5)

    def uniform(i, lo, hi, shape=None):
        return tf.random.stateless_uniform(shape if shape is not None else [batch], seeds[i], lo, hi)

    if cfg.zoom or cfg.flip:
        if cfg.zoom:
            side = 1.0 / uniform(1, 1.0, 1.0 + cfg.zoom)  # crop side, normalized
            start = uniform(2, 0.0, 1.0, shape=[batch, 2]) * (1.0 - side)[:, None]
            end = start + side[:, None]
        else:
            start, end = tf.zeros([batch, 2]), tf.ones([batch, 2])
        ymin, xmin, ymax, xmax = start[:, 0], start[:, 1], end[:, 0], end[:, 1]
        if cfg.flip:  # a box whose x1 > x2 samples the crop mirrored
            flip = uniform(0, 0.0, 1.0) < 0.5
            xmin, xmax = tf.where(flip, xmax, xmin), tf.where(flip, xmin, xmax)
        boxes = tf.stack([ymin, xmin, ymax, xmax], axis=1)
        images = tf.image.crop_and_resize(images, boxes, tf.range(batch), size)
    if cfg.brightness or cfg.contrast:
        # (x - mean) * c + mean + b  ==  x * c + (mean * (1 - c) + b)
        scale = uniform(4, 1.0 - cfg.contrast, 1.0 + cfg.contrast) if cfg.contrast else tf.ones([batch])
        offset = uniform(3, -cfg.brightness, cfg.brightness) * 255.0 if cfg.brightness else tf.zeros([batch])
        if cfg.contrast:
            offset += tf.reduce_mean(images, axis=[1, 2, 3]) * (1.0 - scale)
        images = images * scale[:, None, None, None] + offset[:, None, None, None]
    return tf.clip_by_value(images, 0.0, 255.0)
