"""Assemble a detection source's examples into what the SSD trains and is scored on.

Training (``detection_dataset(..., training=True)``)::

    examples -> preprocess_image (resize to S, boxes unchanged: they are normalized)
        -> cache -> shuffle -> augment (per image, seeded) -> encode_targets -> batch -> prefetch

Evaluation (``detection_eval_dataset``) skips augmentation and target encoding
and keeps the ground truth, padded per batch, for mAP.

Box-aware augmentation, in this order, every step keeping boxes and pixels consistent:

* horizontal flip: x -> 1 - x, so [ymin, xmin, ymax, xmax] -> [ymin, 1 - xmax, ymax, 1 - xmin];
* a square window of the image is resampled to S x S: a zoom-in crop (window inside the image)
  or a zoom-out (image inside the window, the border filled with the image's mean colour).
  The rule for objects the window cuts: **a box is kept if its centre lies strictly inside the
  window, and is then clipped to it; otherwise it is dropped** (with its label). An image whose
  boxes are all dropped becomes a background image and is kept;
* brightness, contrast and saturation (pixels only).

Boxes are normalized [ymin, xmin, ymax, xmax], float32, throughout. Pixel (i, j)
of an S x S image covers [i/S, (i+1)/S) x [j/S, (j+1)/S), so a window maps box
coordinates and pixel centres by the same affine map (``resample_window``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from models.anchors import AnchorConfig, generate_anchors
from models.losses import pack_targets
from models.matching import DEFAULT_IOU_THRESHOLD, encode_targets
from pipeline.dataset import PipelineConfig, cache_split
from pipeline.preprocess import preprocess_image, to_model_input
from pipeline.sources.schema import Source

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class DetectionAugmentConfig:
    """Training augmentation of a detector; all off (flip=False, probabilities and ranges 0) disables it.

    flip:         horizontal flips, half the images.
    crop_prob:    chance of a zoom-in crop; its side is uniform in [min_crop, 1] of the image side.
    zoom_out_prob: chance of a zoom-out (only when not cropped); the canvas side is uniform in
                  [1, max_zoom_out] image sides, the image placed anywhere on it.
    brightness:   max shift, fraction of 255.  contrast / saturation: max relative change.
    """

    flip: bool = True
    crop_prob: float = 0.4
    min_crop: float = 0.6
    zoom_out_prob: float = 0.3
    max_zoom_out: float = 1.6
    brightness: float = 0.1
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self):
        problems = []
        if not (0 <= self.crop_prob <= 1 and 0 <= self.zoom_out_prob <= 1):
            problems.append("crop_prob and zoom_out_prob must be in [0, 1]")
        if not 0 < self.min_crop <= 1:
            problems.append(f"min_crop must be in (0, 1], got {self.min_crop}")
        if self.max_zoom_out < 1:
            problems.append(f"max_zoom_out must be >= 1, got {self.max_zoom_out}")
        if min(self.brightness, self.contrast, self.saturation) < 0:
            problems.append("brightness, contrast and saturation must be >= 0")
        if problems:
            raise ValueError("invalid DetectionAugmentConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return bool(self.flip or self.crop_prob or self.zoom_out_prob or self.brightness
                    or self.contrast or self.saturation)


NO_AUGMENT = DetectionAugmentConfig(flip=False, crop_prob=0.0, zoom_out_prob=0.0,
                                    brightness=0.0, contrast=0.0, saturation=0.0)


# ---------------------------------------------------------------------------------------------
# Pure box geometry (normalized [ymin, xmin, ymax, xmax], float32)


def flip_boxes(boxes) -> tf.Tensor:
    """Boxes of a horizontally flipped image: float32 [N, 4] -> float32 [N, 4]."""
    ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(tf.cast(boxes, tf.float32), [-1, 4]), axis=-1)
    return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def boxes_in_window(boxes, labels, window):
    """Boxes seen through ``window`` (a region of the image, may extend beyond it).

    Args:
        boxes:  float32 [N, 4] in image coordinates.
        labels: int32 [N].
        window: float32 [4] [y0, x0, y1, x1] in image coordinates, y1 > y0, x1 > x0.

    Returns:
        (boxes float32 [M, 4] in window coordinates, clipped to [0, 1]; labels int32 [M]):
        the M <= N boxes whose centre lies strictly inside the window, in input order.
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    window = tf.cast(window, tf.float32)
    origin = tf.stack([window[0], window[1], window[0], window[1]])
    extent = tf.stack([window[2] - window[0], window[3] - window[1]] * 2)
    moved = (boxes - origin) / extent
    cy = (moved[:, 0] + moved[:, 2]) / 2
    cx = (moved[:, 1] + moved[:, 3]) / 2
    keep = (cy > 0) & (cy < 1) & (cx > 0) & (cx < 1)
    return tf.clip_by_value(tf.boolean_mask(moved, keep), 0.0, 1.0), tf.boolean_mask(labels, keep)


def crop_and_resize_box(window, in_size: int, out_size: int) -> tf.Tensor:
    """The ``tf.image.crop_and_resize`` box that resamples ``window`` exactly.

    crop_and_resize samples output pixel i at input row Y0 * (H - 1) + i * (Y1 - Y0) * (H - 1) / (S - 1)
    (pixel-centre indices). We want the centre of output pixel i, (i + 0.5) / S in window
    coordinates, to land on input position (y0 + (i + 0.5) / S * h) * H - 0.5. Solving for Y0, Y1
    makes pixels and boxes move by the same map. float32 [4] -> float32 [4].
    """
    window = tf.cast(window, tf.float32)
    h_in, s = float(max(in_size - 1, 1)), float(max(out_size - 1, 1))
    start = tf.stack([window[0], window[1]])
    side = tf.stack([window[2] - window[0], window[3] - window[1]])
    lo = ((start + 0.5 * side / out_size) * in_size - 0.5) / h_in
    hi = lo + side * in_size * s / (out_size * h_in)
    return tf.stack([lo[0], lo[1], hi[0], hi[1]])


def resample_window(image, window, out_size: int) -> tf.Tensor:
    """float32 [S, S, 3] pixels seen through ``window`` -> float32 [out_size, out_size, 3].

    Parts of the window outside the image are filled with the image's mean colour.
    """
    image = tf.cast(image, tf.float32)
    in_size = image.shape[0]
    fill = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
    box = crop_and_resize_box(window, in_size, out_size)[None]
    out = tf.image.crop_and_resize((image - fill)[None], box, [0], [out_size, out_size], extrapolation_value=0.0)
    return out[0] + fill


def random_window(seed, cfg: DetectionAugmentConfig) -> tf.Tensor:
    """A square window [y0, x0, y1, x1]: a crop, a zoom-out, or the whole image [0, 0, 1, 1]."""
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    choice = tf.random.stateless_uniform([], seeds[0])
    u = tf.random.stateless_uniform([3], seeds[1])
    crop_side = cfg.min_crop + (1.0 - cfg.min_crop) * u[0]
    canvas_side = 1.0 + (cfg.max_zoom_out - 1.0) * u[0]
    crop_start = (1.0 - crop_side) * u[1:]
    zoom_start = -(canvas_side - 1.0) * u[1:]
    crop = tf.concat([crop_start, crop_start + crop_side], axis=0)
    zoom = tf.concat([zoom_start, zoom_start + canvas_side], axis=0)
    whole = tf.constant([0.0, 0.0, 1.0, 1.0])
    return tf.where(choice < cfg.crop_prob, crop,
                    tf.where(choice < cfg.crop_prob + cfg.zoom_out_prob, zoom, whole))


def augment_example(image, boxes, labels, seed, cfg: DetectionAugmentConfig):
    """One training image and its boxes, augmented consistently.

    Args:
        image: uint8 or float32 [S, S, 3] pixels 0..255 (S static).
        boxes: float32 [N, 4]; labels: int32 [N].
        seed:  int64 [2], a stateless seed.

    Returns:
        (float32 [S, S, 3] in 0..255, float32 [M, 4], int32 [M]), M <= N (see the module rule).
    """
    size = image.shape[0]
    image = tf.cast(image, tf.float32)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    labels = tf.cast(labels, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    if cfg.flip:
        flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        boxes = tf.cond(flip, lambda: flip_boxes(boxes), lambda: boxes)
    if cfg.crop_prob or cfg.zoom_out_prob:
        window = random_window(seeds[1], cfg)
        image = resample_window(image, window, size)
        boxes, labels = boxes_in_window(boxes, labels, window)
    if cfg.brightness:
        image = image + tf.random.stateless_uniform([], seeds[2], -cfg.brightness, cfg.brightness) * 255.0
    if cfg.contrast:
        mean = tf.reduce_mean(image)
        image = (image - mean) * tf.random.stateless_uniform([], seeds[3], 1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.saturation:
        grey = tf.reduce_mean(image, axis=-1, keepdims=True)
        factor = tf.random.stateless_uniform([], seeds[4], 1 - cfg.saturation, 1 + cfg.saturation)
        image = (image - grey) * factor + grey
    return tf.clip_by_value(image, 0.0, 255.0), boxes, labels


# ---------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class DetectionPipelineConfig:
    """How examples become batches; the input size comes from the model's AnchorConfig."""

    batch_size: int = 32
    shuffle_buffer: int = 10_000
    iou_threshold: float = DEFAULT_IOU_THRESHOLD  # anchor matching
    augment: DetectionAugmentConfig = DetectionAugmentConfig()


def _resized(source: Source, split: str, size: int, cache_dir: Path | None) -> tf.data.Dataset:
    """Schema examples with the image resized to S (uint8), cached; boxes/labels as given."""

    def resize(ex):
        out = {"image": preprocess_image(ex["image"], size),
               "boxes": tf.reshape(tf.cast(ex["boxes"], tf.float32), [-1, 4]),
               "labels": tf.cast(ex["labels"], tf.int32)}
        if "difficult" in ex:
            out["difficult"] = tf.cast(ex["difficult"], tf.bool)
        return out

    ds = source.examples(split).map(resize, num_parallel_calls=AUTOTUNE)
    return cache_split(ds, source, split, PipelineConfig(image_size=size), cache_dir)


def target_encoder(anchors: AnchorConfig, iou_threshold: float = DEFAULT_IOU_THRESHOLD):
    """(image [S, S, 3], boxes [N, 4], labels [N]) -> (float32 [S, S, 3], y_true float32 [A, 5]).

    ``encode_targets`` against ``generate_anchors(anchors)``, packed as ``SSDLoss`` expects.
    """
    anchor_boxes = generate_anchors(anchors)  # NumPy: keeps A static in the graph

    def encode(image, boxes, labels):
        class_ids, deltas = encode_targets(boxes, labels, anchor_boxes, iou_threshold)
        return to_model_input(image), pack_targets(class_ids, deltas)

    return encode


def detection_dataset(
    source: Source,
    split: str,
    anchors: AnchorConfig,
    cfg: DetectionPipelineConfig = DetectionPipelineConfig(),
    *,
    training: bool,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> tf.data.Dataset:
    """Batches for ``fit``: (images float32 [B, S, S, 3] in 0..255, y_true float32 [B, A, 5]).

    S = anchors.input_size, A = anchors.num_anchors. Targets are encoded here, in the
    pipeline. training=True shuffles (reshuffled each epoch) and augments, both
    deterministic given ``seed``; otherwise the source order, no augmentation.
    """
    size = anchors.input_size
    ds = _resized(source, split, size, cache_dir)
    if training:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if training and cfg.augment.enabled:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda ex, s: augment_example(ex["image"], ex["boxes"], ex["labels"], s, cfg.augment),
            num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda ex: (ex["image"], ex["boxes"], ex["labels"]), num_parallel_calls=AUTOTUNE)
    ds = ds.map(target_encoder(anchors, cfg.iou_threshold), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(cfg.batch_size, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)


def detection_eval_dataset(source: Source, split: str, image_size: int, batch_size: int = 32, *,
                           cache_dir: Path | None = None) -> tf.data.Dataset:
    """Batches with ground truth for scoring, in source order, no augmentation.

    Elements: {"image": float32 [B, S, S, 3] 0..255,
               "boxes": float32 [B, M, 4] (zero rows pad), "labels": int32 [B, M] (-1 pads),
               "difficult": bool [B, M] (False pads; all False when the source has no such flag)},
    M = most objects of an image in the batch.
    """
    def to_eval(ex):
        difficult = ex.get("difficult", tf.zeros_like(ex["labels"], tf.bool))
        return {"image": to_model_input(ex["image"]), "boxes": ex["boxes"], "labels": ex["labels"],
                "difficult": difficult}

    ds = _resized(source, split, image_size, cache_dir).map(to_eval, num_parallel_calls=AUTOTUNE)
    ds = ds.padded_batch(batch_size, padding_values={"image": 0.0, "boxes": 0.0, "labels": -1, "difficult": False})
    return ds.prefetch(AUTOTUNE)


def ground_truth(batch: dict) -> list[dict]:
    """Unpad an eval batch: a list of B dicts {"boxes": float32 [N, 4], "labels": int32 [N], "difficult": bool [N]}."""
    labels = np.asarray(batch["labels"])
    out = []
    for i in range(labels.shape[0]):
        keep = labels[i] >= 0
        out.append({"boxes": np.asarray(batch["boxes"])[i][keep].astype(np.float32),
                    "labels": labels[i][keep].astype(np.int32),
                    "difficult": np.asarray(batch["difficult"])[i][keep].astype(bool)})
    return out
