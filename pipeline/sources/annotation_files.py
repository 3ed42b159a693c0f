"""What the annotation-file sources (voc:, coco:) share.

One validated record type, one image-header check, one way to skip-and-count
bad samples, and one tf.data builder that decodes images in parallel into the
detection schema. (The seeded split is splits.py's, the option parser options.py's:
folder: and the specs use them too.)
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.errors import DataError
from pipeline.sources.images import decode_file, header_size
from pipeline.sources.schema import SPLITS, Skipped, Source

SKIP_HINT = "; fix or remove it, or pass SKIP_BAD=1 to skip and count bad samples"


@dataclass(frozen=True)
class Annotated:
    """One image and its objects, validated.

    boxes: float32 [N, 4] normalized [ymin, xmin, ymax, xmax]; labels: int32 [N];
    difficult: bool [N] (VOC difficult / COCO iscrowd: evaluation may ignore these objects).
    """

    image: Path
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels.

    Raises:
        DataError: missing or unreadable image, or one above ``images.MAX_IMAGE_PIXELS`` (so a
            decompression bomb is skipped and counted under skip_bad like any other bad sample).
    """
    if not path.is_file():
        raise DataError(path, "image file not found")
    return header_size(path)


def keep_or_skip(results: list, skipped: list[Skipped], skip_bad: bool) -> list:
    """Results in order, with each ``DataError`` among them raised, or recorded and dropped."""
    good = []
    for r in results:
        if not isinstance(r, DataError):
            good.append(r)
        elif skip_bad:
            skipped.append(Skipped(r.path, r.problem))
        else:
            raise DataError(r.path, r.problem + SKIP_HINT)
    return good


def parallel(fn, items: list) -> list:
    """``fn`` over ``items`` in threads (file reads dominate); a ``DataError`` is returned, not raised."""

    def call(item):
        try:
            return fn(item)
        except DataError as e:
            return e

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(call, items))


def detection_dataset(records: list[Annotated]) -> tf.data.Dataset:
    """Schema examples {image uint8 [H, W, 3], boxes float32 [N, 4], labels int32 [N],
    difficult bool [N]}, images decoded in parallel."""
    counts = np.array([len(r.labels) for r in records], np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    boxes = tf.constant(np.concatenate([r.boxes for r in records] or [np.zeros((0, 4), np.float32)]))
    labels = tf.constant(np.concatenate([r.labels for r in records] or [np.zeros(0, np.int32)]))
    difficult = tf.constant(np.concatenate([r.difficult for r in records] or [np.zeros(0, bool)]))

    def example(path, start, count):
        rows = tf.range(start, start + count)
        return {"image": decode_file(path), "boxes": tf.gather(boxes, rows),
                "labels": tf.gather(labels, rows), "difficult": tf.gather(difficult, rows)}

    ds = tf.data.Dataset.from_tensor_slices(([str(r.image) for r in records], starts, counts))
    return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)


def detection_source(spec: str, label_names, data: dict[str, list[Annotated]], skipped, where) -> Source:
    for split in SPLITS:
        if not data[split]:
            raise DataError(where, f"the {split} split is empty (after skipping bad samples); add more annotated images")
    return Source(
        name=spec, task="detect", label_names=tuple(label_names),
        split_sizes={s: len(data[s]) for s in SPLITS},
        load_split=lambda split: detection_dataset(data[split]),
        skipped=tuple(skipped),
    )
