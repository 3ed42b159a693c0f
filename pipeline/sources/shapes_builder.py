"""`shapes`: the built-in, procedurally generated dataset, as a real tensorflow-datasets builder.

Two variants (builder configs), both deterministic functions of a seed:

* ``classify``: one shape per 64x64 image; features ``image`` and ``label``.
* ``detect``:   0-4 shapes per 128x128 image; features ``image`` and
  ``objects`` = {``bbox`` (normalized [ymin, xmin, ymax, xmax]), ``label``}.

Nothing is downloaded: ``download_and_prepare`` renders the images and writes
TFRecords into the data dir once; later loads read them back. Other seeds or
sizes are custom configs made by ``shapes_config`` and stored under their own
names, so they never overwrite each other.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from pipeline.sources import shapes_render

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True)
class _Variant:
    task: str
    image_size: int
    train: int
    validation: int
    test: int
    seed: int


_DEFAULTS = {
    "classify": _Variant("classify", image_size=64, train=8000, validation=1000, test=2000, seed=0),
    "detect": _Variant("detect", image_size=128, train=4000, validation=500, test=500, seed=0),
}


class ShapesConfig(tfds.core.BuilderConfig):
    """A variant of the shapes data: task, image size, split sizes and seed."""

    def __init__(self, *, variant: _Variant, **kwargs):
        super().__init__(**kwargs)
        self.variant = variant


def _config_name(v: _Variant) -> str:
    if v == _DEFAULTS[v.task]:
        return v.task
    return f"{v.task}-{v.image_size}px-s{v.seed}-{v.train}-{v.validation}-{v.test}"


def shapes_config(
    task: str = "classify",
    *,
    seed: int = 0,
    image_size: int | None = None,
    train: int | None = None,
    validation: int | None = None,
    test: int | None = None,
) -> ShapesConfig:
    """The config for one variant; unset fields take the task's defaults."""
    if task not in _DEFAULTS:
        raise ValueError(f"unknown shapes task {task!r}; expected one of {sorted(_DEFAULTS)}")
    base = _DEFAULTS[task]
    v = _Variant(
        task=task,
        image_size=image_size or base.image_size,
        train=base.train if train is None else train,
        validation=base.validation if validation is None else validation,
        test=base.test if test is None else test,
        seed=seed,
    )
    if v.image_size < 16:
        raise ValueError(f"shapes image_size must be >= 16, got {v.image_size}")
    return ShapesConfig(name=_config_name(v), variant=v, description=f"shapes {v}")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def render_example(variant: _Variant, split: str, index: int) -> dict:
    """One example as numpy, a pure function of (variant.seed, split, index)."""
    rng = np.random.default_rng([variant.seed, _SPLIT_IDS[split], index])
    if variant.task == "classify":
        image, label = shapes_render.render_classification(rng, variant.image_size)
        return {"image": image, "label": label}
    image, boxes, labels = shapes_render.render_detection(rng, variant.image_size)
    return {"image": image, "objects": {"bbox": boxes, "label": labels}}


def _encoded(variant: _Variant, split: str, index: int) -> dict:
    ex = render_example(variant, split, index)
    ex["image"] = io.BytesIO(_png(ex["image"]))  # PNG-encode in the worker thread, not in tfds
    return ex


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes (x, o, square, triangle, circle, plus, star) for classification and detection."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [shapes_config("classify"), shapes_config("detect")]

    def _info(self) -> tfds.core.DatasetInfo:
        v = self.builder_config.variant
        image = tfds.features.Image(shape=(v.image_size, v.image_size, 3), encoding_format="png")
        label = tfds.features.ClassLabel(names=list(shapes_render.SHAPE_NAMES))
        if v.task == "classify":
            features = tfds.features.FeaturesDict({"image": image, "label": label})
            supervised = ("image", "label")
        else:
            objects = tfds.features.Sequence({"bbox": tfds.features.BBoxFeature(), "label": label})
            features = tfds.features.FeaturesDict({"image": image, "objects": objects})
            supervised = None
        return self.dataset_info_from_configs(
            features=features,
            supervised_keys=supervised,
            description="Procedurally generated shapes on textured, noisy backgrounds.",
        )

    def _split_generators(self, dl_manager):
        v = self.builder_config.variant
        sizes = {"train": v.train, "validation": v.validation, "test": v.test}
        return {split: self._generate_examples(split, n) for split, n in sizes.items() if n > 0}

    def _generate_examples(self, split: str, n: int):
        v = self.builder_config.variant
        # Pillow and NumPy release the GIL for most of the rendering work.
        with ThreadPoolExecutor(max_workers=4) as pool:
            for i, ex in enumerate(pool.map(lambda i: _encoded(v, split, i), range(n), chunksize=64)):
                yield i, ex


def make_builder(config: ShapesConfig, data_dir: str | None = None) -> Shapes:
    """A builder for ``config``; the predefined variants are passed by name, as tfds requires."""
    predefined = {c.name for c in Shapes.BUILDER_CONFIGS}
    return Shapes(config=config.name if config.name in predefined else config, data_dir=data_dir)
