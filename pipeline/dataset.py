"""Assemble a source's examples into batches the model trains on.

    examples (parallel decode) -> preprocess_image (parallel) -> cache -> shuffle
        -> batch -> augment (train only, vectorised) -> prefetch

Caching happens after resizing, when an example is smallest; in memory when
the split fits the budget, otherwise in a file cache under ``cache_dir``. A source that
already holds the split's resized pixels (``Source.resized_examples``: folder: decoded them
while checking its files) feeds them in directly: the first epoch decodes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.augment import AugmentConfig, augment_batch
from pipeline.preprocess import preprocess_image, to_model_input
from pipeline.sources.schema import Source

AUTOTUNE = tf.data.AUTOTUNE
MEMORY_CACHE_BUDGET = 2 << 30  # bytes of resized uint8 pixels we are willing to hold per split


@dataclass(frozen=True)
class PipelineConfig:
    image_size: int = 64
    batch_size: int = 64
    shuffle_buffer: int = 10_000
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    memory_cache_budget: int = MEMORY_CACHE_BUDGET  # bytes; a larger split is cached in a file under cache_dir


def cache_split(ds: tf.data.Dataset, source: Source, split: str, cfg: PipelineConfig, cache_dir: Path | None):
    """``ds`` (a split of decoded, resized images) cached after its first pass: in memory when the
    split fits ``cfg.memory_cache_budget`` or there is no ``cache_dir``, else in a file under ``cache_dir``."""
    n = source.split_sizes.get(split, 0)  # never negative: sources count or refuse (sources.specs)
    if n * cfg.image_size * cfg.image_size * 3 <= cfg.memory_cache_budget or cache_dir is None:
        return ds.cache()
    cache_dir.mkdir(parents=True, exist_ok=True)
    return ds.cache(str(cache_dir / f"{split}-{cfg.image_size}px"))


def resized_split(source: Source, split: str, size: int) -> tf.data.Dataset:
    """Schema examples with the image uint8 [size, size, 3] (``preprocess_image``): the source's
    prepared pixels when it has them, else its examples resized in parallel."""
    ds = source.resized_examples(split, size)
    if ds is not None:
        return ds

    def resize(ex):
        return {**ex, "image": preprocess_image(ex["image"], size)}

    return source.examples(split).map(resize, num_parallel_calls=AUTOTUNE)


def _batches_from_memory(images: np.ndarray, labels: np.ndarray, cfg: PipelineConfig, *, training: bool,
                         seed: int) -> tf.data.Dataset:
    """Batches of a split already resized in memory: the indices are shuffled (the same buffer and
    seed as the cached path, so the same order), and each batch is gathered at once."""
    images, labels = tf.constant(images), tf.constant(labels)
    ds = tf.data.Dataset.range(int(labels.shape[0]))
    if training:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size)
    return ds.map(lambda i: (to_model_input(tf.gather(images, i)), tf.gather(labels, i)), num_parallel_calls=AUTOTUNE)


def classification_dataset(
    source: Source,
    split: str,
    cfg: PipelineConfig,
    *,
    training: bool,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> tf.data.Dataset:
    """Batches of (images float32 [B, S, S, 3] in 0..255, labels int32 [B]).

    training=True shuffles (reshuffled each epoch) and augments; both are
    deterministic given ``seed``. Evaluation batches keep the source order.
    """
    size = cfg.image_size
    arrays = source.resized_arrays(split, size)
    if arrays is not None:
        ds = _batches_from_memory(*arrays, cfg, training=training, seed=seed)
    else:
        ds = resized_split(source, split, size)
        ds = ds.map(lambda ex: (ex["image"], ex["label"]), num_parallel_calls=AUTOTUNE)
        ds = cache_split(ds, source, split, cfg, cache_dir)
        if training:
            ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(cfg.batch_size, num_parallel_calls=AUTOTUNE)
        ds = ds.map(lambda x, y: (to_model_input(x), y), num_parallel_calls=AUTOTUNE)
    if training and cfg.augment.enabled:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda xy, s: (augment_batch(xy[0], s, cfg.augment), xy[1]), num_parallel_calls=AUTOTUNE
        )
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)
