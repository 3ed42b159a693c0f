"""The one example schema every source converges on, and the ``Source`` handle.

Classification example::

    {"image": uint8 [H, W, 3], "label": int32 []}

Detection example::

    {"image": uint8 [H, W, 3],
     "boxes": float32 [N, 4]   normalized [ymin, xmin, ymax, xmax],
     "labels": int32 [N]}      index into Source.label_names; N may be 0 (background image)

    optional: "difficult": bool [N]  (VOC difficult / COCO iscrowd) objects evaluation may ignore;
              present for every example of a source that has it (voc:, coco:, tfds voc / coco)

Images may differ in size between examples; preprocessing resizes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorflow as tf

SPLITS = ("train", "validation", "test")
TASKS = ("classify", "detect")


@dataclass(frozen=True)
class Skipped:
    """A sample left out because the user asked to skip bad samples."""

    path: str
    problem: str


@dataclass(frozen=True)
class Source:
    """A dataset as the rest of the pipeline sees it.

    name:        the DATA= spec it came from.
    task:        "classify" or "detect".
    label_names: class names, index order.
    split_sizes: examples per split ("train", "validation", "test").
    load_split:  split name -> tf.data.Dataset of schema examples (decoding in parallel).
    skipped:     bad samples that were skipped (only with skip_bad), for the report.
    train_label_counts: images per class in the train split, when the source knows them without
                 decoding (folder:); () otherwise (the training recipe then counts a sample).
    load_resized: (split, size) -> the split's examples with images already resized to
                 size x size by ``preprocess_image`` (pixels a source decoded while checking its
                 files, or decoded and resized there more cheaply than one by one), or None.
    load_arrays: (split, size) -> (images uint8 [N, size, size, 3], labels int32 [N]) of a
                 classification split the source holds in memory, resized, in split order; or None.
    train_sides: int [n, 2] (height, width) as shown of the train images, when the source knows them
                 from the headers (folder:); None otherwise (the training recipe decodes a sample).
    """

    name: str
    task: str
    label_names: tuple[str, ...]
    split_sizes: dict
    load_split: Callable[[str], tf.data.Dataset] = field(repr=False)
    skipped: tuple[Skipped, ...] = ()
    train_label_counts: tuple[int, ...] = ()
    load_resized: Callable[[str, int], tf.data.Dataset | None] | None = field(default=None, repr=False)
    load_arrays: Callable[[str, int], tuple | None] | None = field(default=None, repr=False)
    train_sides: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def examples(self, split: str) -> tf.data.Dataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.load_split(split)

    def resized_examples(self, split: str, size: int) -> tf.data.Dataset | None:
        """The split at ``size`` px as the source prepared it, or None (then resize ``examples``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.load_resized(split, size) if self.load_resized is not None else None

    def resized_arrays(self, split: str, size: int):
        """(images uint8 [N, size, size, 3], labels int32 [N]) held in memory, or None."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.load_arrays(split, size) if self.load_arrays is not None else None


def classification_element_spec() -> dict:
    return {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "label": tf.TensorSpec([], tf.int32),
    }


def detection_element_spec() -> dict:
    return {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "boxes": tf.TensorSpec([None, 4], tf.float32),
        "labels": tf.TensorSpec([None], tf.int32),
    }
