"""``DATA=`` specs -> a ``Source``. One opener per kind of source, all to one schema.

    shapes[:key=value,...]   built-in procedural data (keys: seed, size, train, validation, test)
    tfds:NAME[:CONFIG]       a tensorflow-datasets dataset by name (downloads where there is internet)
    folder:PATH              a class-per-subfolder image tree
    voc:PATH[,classes=A,B]   Pascal VOC tree (detection)
    coco:FILE.json[,images=DIR]  COCO instances file (detection)
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from common.errors import ConfigError, UserError
from pipeline.sources.coco_source import open_coco
from pipeline.sources.folder_source import open_folder
from pipeline.sources.images import composite_on_white
from pipeline.sources.options import parse_options
from pipeline.sources.schema import SPLITS, TASKS, Source
from pipeline.sources.shapes_builder import make_builder, shapes_config
from pipeline.sources.voc_source import open_voc

FORMS = "shapes, tfds:NAME, folder:PATH, voc:PATH, coco:FILE.json"
IMAGE_CHANNELS = (1, 2, 3, 4)  # gray, gray + alpha, RGB, RGBA: what a tfds Image feature may hold


def default_data_dir() -> Path:
    """Where tfds data (the built-in shapes too) is prepared: $TFDS_DATA_DIR, else ./data/tfds."""
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.cwd() / "data" / "tfds")


def _quiet_tfds():
    tfds.disable_progress_bar()
    return tfds


def _detection_example(ex: dict) -> dict:
    return {
        "image": ex["image"],
        "boxes": tf.cast(ex["objects"]["bbox"], tf.float32),
        "labels": tf.cast(ex["objects"]["label"], tf.int32),
    }


def _rgb(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, C], C in ``IMAGE_CHANNELS`` -> uint8 [H, W, 3]. Alpha (C = 2 or 4) is composited
    over white, the same bytes a file source gives for the same pixels (images.composite_on_white)."""
    if image.shape[-1] in (2, 4):
        image = composite_on_white(image)
    if image.shape[-1] == 1:
        return tf.image.grayscale_to_rgb(image)
    return image


def _check_image_feature(spec: str, name: str, feature) -> None:
    """A tfds Image feature ``_rgb`` can turn into the schema's uint8 [H, W, 3]."""
    shape = tuple(feature.shape)
    if len(shape) != 3:
        raise ConfigError(f"DATA={spec}: {name}'s image is not an [H, W, C] image (shape {shape})")
    if shape[-1] not in IMAGE_CHANNELS:
        raise ConfigError(f"DATA={spec}: {name}'s images have {shape[-1]} channels; expected one of "
                          f"{', '.join(map(str, IMAGE_CHANNELS))} (gray, gray + alpha, RGB, RGBA)")


def open_shapes(spec: str, options: str, task: str, data_dir: Path) -> Source:
    opts = parse_options(options, {"seed": int, "size": int, "train": int, "validation": int, "test": int}, spec)
    try:
        config = shapes_config(
            task, seed=opts.get("seed", 0), image_size=opts.get("size"),
            train=opts.get("train"), validation=opts.get("validation"), test=opts.get("test"),
        )
    except ValueError as e:
        raise ConfigError(f"DATA={spec}: {e}") from None
    _quiet_tfds()
    builder = make_builder(config, data_dir=str(data_dir))
    builder.download_and_prepare()
    info = builder.info
    convert = (lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)}) if task == "classify" \
        else _detection_example

    def load(split: str) -> tf.data.Dataset:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    names = info.features["label"].names if task == "classify" else info.features["objects"]["label"].names
    return Source(
        name=spec, task=task, label_names=tuple(names),
        split_sizes={s: info.splits[s].num_examples for s in SPLITS}, load_split=load,
    )


def _tfds_splits(available: list[str]) -> dict[str, str]:
    """Map our three splits onto what the dataset has, carving the missing ones from train."""
    val = next((s for s in ("validation", "val") if s in available), None)
    test = "test" if "test" in available else None
    if "train" not in available:
        raise ConfigError(f"dataset has no 'train' split (it has {available})")
    if val and test:
        return {"train": "train", "validation": val, "test": test}
    if test:
        return {"train": "train[:90%]", "validation": "train[90%:]", "test": test}
    if val:
        return {"train": "train[:90%]", "validation": val, "test": "train[90%:]"}
    return {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}


def _split_sizes(spec: str, builder, splits: dict[str, str]) -> dict[str, int]:
    """Examples in each of our splits, whose tfds names may be slices (``train[:90%]``).

    From the prepared metadata, where tfds works a slice's size out of the shard lengths. A builder
    whose metadata lists no splits (``tfds.testing.mock_data`` without metadata files) is counted
    by reading each split once. These sizes become steps per epoch and trial subsets, so a size
    that cannot be known is an error, never a guess.

    Raises:
        ConfigError: naming the dataset and split, when tfds cannot resolve the split or it never ends.
    """
    sizes = {}
    for ours, theirs in splits.items():
        if builder.info.splits:
            try:
                sizes[ours] = int(builder.info.splits[theirs].num_examples)
            except ValueError as e:  # tfds' error for an unknown split or a slice it cannot resolve
                raise ConfigError(f"DATA={spec}: the size of split {theirs!r} (our {ours}) is "
                                  f"unknown: {str(e).splitlines()[0]}") from None
        else:
            sizes[ours] = _count_examples(spec, builder, theirs, ours)
    return sizes


def _count_examples(spec: str, builder, split: str, ours: str) -> int:
    """The number of examples ``builder.as_dataset(split)`` yields (read once, when the metadata lacks it)."""
    ds = builder.as_dataset(split=split, shuffle_files=False)
    cardinality = int(ds.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ConfigError(f"DATA={spec}: the size of split {split!r} (our {ours}) is unknown: "
                          f"its metadata lists no splits and the split never ends")
    if cardinality >= 0:
        return cardinality
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def _unlabelled_test(builder) -> bool:
    """VOC 2012 and COCO publish their test images without boxes: no use for measuring a detector."""
    config = builder.builder_config
    if getattr(config, "has_test_annotations", True) is False:  # voc
        return True
    return any(s.name == "test" and getattr(s, "annotation_type", None) == "none"  # coco
               for s in getattr(config, "splits", None) or ())


def _open_tfds_detection(spec: str, name: str, builder) -> Source:
    """Datasets with ``image`` and ``objects`` {``bbox`` (normalized [ymin, xmin, ymax, xmax]), ``label``}:
    voc, coco, ... VOC's ``is_difficult`` / COCO's ``is_crowd`` become the optional ``difficult``."""
    features = builder.info.features
    objects = features["objects"] if "objects" in features else None
    if "image" not in features or objects is None or "bbox" not in objects or "label" not in objects \
            or not hasattr(objects["label"], "names"):
        raise ConfigError(f"DATA={spec}: {name} is not an object-detection dataset with image and "
                          f"objects{{bbox, label}} (features: {list(features.keys())})")
    _check_image_feature(spec, name, features["image"])
    flag = next((k for k in ("is_difficult", "is_crowd") if k in objects), None)
    available = list(builder.info.splits.keys()) or ["train", "validation", "test"]
    if _unlabelled_test(builder):
        available = [s for s in available if s != "test"]
    splits = _tfds_splits(available)

    def convert(ex: dict) -> dict:
        out = _detection_example(ex)
        out["image"] = _rgb(ex["image"])
        if flag:
            out["difficult"] = tf.cast(ex["objects"][flag], tf.bool)
        return out

    def load(split: str) -> tf.data.Dataset:
        ds = builder.as_dataset(split=splits[split], shuffle_files=False)
        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    return Source(name=spec, task="detect", label_names=tuple(objects["label"].names),
                  split_sizes=_split_sizes(spec, builder, splits), load_split=load)


def open_tfds(spec: str, name: str, task: str, data_dir: Path) -> Source:
    tfds = _quiet_tfds()
    if not name:
        raise ConfigError(f"DATA={spec}: tfds: needs a dataset name, e.g. tfds:mnist")
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
    except Exception as e:  # tfds raises several types for an unknown name
        raise ConfigError(f"DATA={spec}: tensorflow-datasets has no dataset {name!r} ({str(e).splitlines()[0]})") from None
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise UserError(
            f"DATA={spec}: could not download or prepare {name!r} into {data_dir} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"It needs internet the first time; or point TFDS_DATA_DIR at a prepared copy."
        ) from None
    info = builder.info
    if task == "detect":
        return _open_tfds_detection(spec, name, builder)
    image_key, label_key = info.supervised_keys if info.supervised_keys else ("image", "label")
    features = info.features
    if image_key not in features or label_key not in features or not hasattr(features[label_key], "names"):
        raise ConfigError(f"DATA={spec}: {name} is not an image-classification dataset "
                          f"(features: {list(features.keys())})")
    _check_image_feature(spec, name, features[image_key])
    # Split names are known once prepared; a mocked or metadata-less builder lists none,
    # and then the common train/test pair is assumed.
    splits = _tfds_splits(list(info.splits.keys()) or ["train", "test"])

    def load(split: str) -> tf.data.Dataset:
        ds = builder.as_dataset(split=splits[split], shuffle_files=False)
        return ds.map(
            lambda ex: {"image": _rgb(ex[image_key]), "label": tf.cast(ex[label_key], tf.int32)},
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return Source(name=spec, task="classify", label_names=tuple(features[label_key].names),
                  split_sizes=_split_sizes(spec, builder, splits), load_split=load)


def open_source(spec: str, task: str = "classify", *, data_dir: Path | None = None,
                seed: int = 0, skip_bad: bool = False, image_size: int | Callable[[np.ndarray], int] | None = None
                ) -> Source:
    """Open a ``DATA=`` spec. Raises ConfigError / DataError with a message naming what is wrong.

    ``data_dir``: where prepared data lives (tfds data, and the file sources' manifests).
    ``image_size``: the model's input side when the caller knows it, or the rule that will choose it
    from the images' (height, width) sides: ``folder:`` then keeps the resized pixels of the files it
    decodes to check them (one decode per file), and the first epoch reads those.
    """
    if task not in TASKS:
        raise ConfigError(f"TASK={task}: unknown task; expected one of {', '.join(TASKS)}")
    spec = (spec or "").strip()
    kind, sep, rest = spec.partition(":")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if kind == "shapes":
        return open_shapes(spec, rest, task, data_dir)
    if kind == "tfds" and sep:
        return open_tfds(spec, rest, task, data_dir)
    if kind == "folder" and sep:
        if task != "classify":
            raise ConfigError(f"DATA={spec}: folder: is a classification source; for TASK=detect use voc: or coco:")
        if not rest:
            raise ConfigError(f"DATA={spec}: folder: needs a path, e.g. folder:~/photos")
        return open_folder(spec, rest, seed=seed, skip_bad=skip_bad, data_dir=data_dir, image_size=image_size)
    if kind in ("voc", "coco") and sep:
        if task != "detect":
            raise ConfigError(f"DATA={spec}: {kind}: is a detection source; use it with TASK=detect")
        if kind == "voc":
            return open_voc(spec, rest, seed=seed, skip_bad=skip_bad, data_dir=data_dir)
        return open_coco(spec, rest, seed=seed, skip_bad=skip_bad, data_dir=data_dir)
    raise ConfigError(f"DATA={spec!r}: unknown data source; expected one of: {FORMS}")
