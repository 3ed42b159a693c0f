"""What the annotation-file sources (voc:, coco:) share.

One validated record type, one image-header check, one decode of every image before anything is
written (file_check.py, remembered in a manifest like folder:'s), one way to skip-and-count
bad samples, and one tf.data builder that decodes images in parallel into the
detection schema (in-graph with TF's decoders where they match ``load_rgb``:
images.decode_in_graph). (The seeded split is splits.py's, the option parser options.py's:
folder: and the specs use them too.)
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.errors import DataError
from pipeline.sources import manifest
from pipeline.sources.file_check import check_files
from pipeline.sources.images import PILLOW, ImageInfo, graph_decoder, inspect_image
from pipeline.sources.schema import SPLITS, Skipped, Source

SKIP_HINT = "; fix or remove it, or pass SKIP_BAD=1 to skip and count bad samples"


@dataclass(frozen=True)
class Annotated:
    """One image and its objects, validated.

    boxes: float32 [N, 4] normalized [ymin, xmin, ymax, xmax]; labels: int32 [N];
    difficult: bool [N] (VOC difficult / COCO iscrowd: evaluation may ignore these objects).
    decoder, orientation: how to decode the image (``images.inspect_image``).
    """

    image: Path
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    decoder: int = PILLOW
    orientation: int = 1


def image_info(path: Path) -> ImageInfo:
    """Size as shown (after EXIF orientation) and decoder, from the image header, without decoding the pixels.

    Raises:
        DataError: missing or unreadable image, or one above ``images.MAX_IMAGE_PIXELS`` (so a
            decompression bomb is skipped and counted under skip_bad like any other bad sample).
    """
    if not path.is_file():
        raise DataError(path, "image file not found")
    return inspect_image(path)


def orientation_note(info: ImageInfo) -> str:
    """For a size mismatch: "" or why the size as shown is not the stored one (EXIF orientation)."""
    if info.orientation < 5:
        return ""
    return (f" as shown (its EXIF orientation {info.orientation} turns the stored {info.height}x{info.width} "
            f"pixels a quarter turn; boxes are read against the image as shown)")


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
    decoders = np.array([r.decoder for r in records], np.int32).reshape(-1)
    orientations = np.array([r.orientation for r in records], np.int32).reshape(-1)
    decode = graph_decoder(decoders, orientations)

    @tf.autograph.experimental.do_not_convert  # plain TF ops: autograph's rewrite only costs tracing time
    def example(path, decoder, orientation, start, count):
        rows = tf.range(start, start + count)
        return {"image": decode(path, decoder, orientation), "boxes": tf.gather(boxes, rows),
                "labels": tf.gather(labels, rows), "difficult": tf.gather(difficult, rows)}

    ds = tf.data.Dataset.from_tensor_slices(([str(r.image) for r in records], decoders, orientations, starts, counts))
    return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)


def _checked_pixels(data: dict[str, list[Annotated]], skipped: list[Skipped], skip_bad: bool, kind: str,
                    where: Path, data_dir: Path | None) -> dict[str, list[Annotated]]:
    """Every image decoded once before anything is written (file_check.check_files; the manifest in
    ``data_dir`` skips the ones already checked): a truncated or corrupt image raises naming the file,
    or is skipped and counted. Records get the decoder the check settled on."""
    files = sorted({r.image for records in data.values() for r in records})
    store = manifest.prepared_dir(data_dir, kind, where) if data_dir is not None else None
    known = manifest.load(store) if store is not None else {}
    checked = check_files(files, [""] * len(files), known)
    if store is not None and (checked.checked or checked.entries.keys() != known.keys()):
        manifest.save(store, Path(where).resolve(), checked.entries)
    out = {}
    for split, records in data.items():
        good = []
        for r in records:
            entry = checked.entries[str(r.image)]
            if entry.problem is None:
                good.append(replace(r, decoder=entry.decoder, orientation=entry.orientation))
            elif skip_bad:
                skipped.append(Skipped(str(r.image), entry.problem))
            else:
                raise DataError(r.image, entry.problem + SKIP_HINT)
        out[split] = good
    return out


def detection_source(spec: str, label_names, data: dict[str, list[Annotated]], skipped, where, *,
                     kind: str, skip_bad: bool = False, data_dir: Path | None = None) -> Source:
    """``data_dir``: where the manifest of checked images lives (None: every image is decoded to check it)."""
    data = _checked_pixels(data, skipped, skip_bad, kind, Path(where), data_dir)
    for split in SPLITS:
        if not data[split]:
            raise DataError(where, f"the {split} split is empty (after skipping bad samples); add more annotated images")
    return Source(
        name=spec, task="detect", label_names=tuple(label_names),
        split_sizes={s: len(data[s]) for s in SPLITS},
        load_split=lambda split: detection_dataset(data[split]),
        skipped=tuple(skipped),
    )
