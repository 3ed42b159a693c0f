"""Tiny detection data and settings shared by the detection tests (the fixtures in tests/conftest.py
build their trained detector from these): an in-memory Source, rectangle images, a 64 px SSD."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.anchors import AnchorConfig
from models.ssd import SSDConfig
from pipeline.sources.schema import Source, detection_element_spec

OVERFIT_DATA = "shapes:train=8,validation=4,test=4,size=64"
TRAIN_REPEATS = 6
TINY_SSD = SSDConfig(
    anchors=AnchorConfig(input_size=64, strides=(16, 32), min_scale=0.25, max_scale=0.5, aspect_ratios=(1.0, 2.0, 0.5)),
    alpha=0.35, head_depth=0, head_filters=16, extra_filters=32,
    bn_momentum=0.5,  # a few dozen steps: moving statistics must keep up with the weights
)


def make_source(examples: list[dict], label_names=("a", "b", "c"), splits=("train", "validation", "test")) -> Source:
    """An in-memory detection Source whose every split holds ``examples`` (schema dicts of NumPy arrays)."""

    def gen():
        for ex in examples:
            yield {"image": np.asarray(ex["image"], np.uint8),
                   "boxes": np.asarray(ex["boxes"], np.float32).reshape(-1, 4),
                   "labels": np.asarray(ex["labels"], np.int32).reshape(-1)}

    def load(split):
        return tf.data.Dataset.from_generator(gen, output_signature=detection_element_spec())

    return Source(name="memory", task="detect", label_names=tuple(label_names),
                  split_sizes={s: len(examples) for s in splits}, load_split=load)


def rectangle_image(size: int, box, value=255) -> np.ndarray:
    """uint8 [size, size, 3] black with the pixels inside normalized ``box`` set to ``value``."""
    image = np.zeros((size, size, 3), np.uint8)
    ymin, xmin, ymax, xmax = (int(round(v * size)) for v in box)
    image[ymin:ymax, xmin:xmax] = value
    return image
