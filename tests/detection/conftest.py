"""Fixtures of the detection tests: tiny data made here, one tiny detector trained once per session.

The trained detector is shared (training and tflite conversion dominate the folder's
run time on a CPU): a 64 px SSD overfit on 8 images of the built-in shapes, whose
"test" split is those same 8 images, so its metrics say whether it learned them.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def overfit_source(data_dir):
    """8 shapes images (64 px); test is the same 8 images; train repeats them 6 times, so one
    epoch is 6 steps (per-epoch checkpointing would otherwise dominate); no validation split."""
    from pipeline.sources.specs import open_source

    shapes = open_source(OVERFIT_DATA, "detect", data_dir=data_dir)
    return replace(shapes, split_sizes={"train": 8 * TRAIN_REPEATS, "validation": 0, "test": 8},
                   load_split=lambda split: shapes.load_split("train").repeat(TRAIN_REPEATS if split == "train" else 1))


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory, overfit_source):
    """(run folder, metrics, config) of a tiny detector overfit on 8 images."""
    from pipeline.detection_dataset import NO_AUGMENT
    from pipeline.training.detector import DetectTrainConfig, train_detector

    cfg = DetectTrainConfig(data=OVERFIT_DATA, ssd=TINY_SSD, augment=NO_AUGMENT, epochs=6, batch_size=8,
                            learning_rate=1e-2, patience=6)
    run = tmp_path_factory.mktemp("det-runs") / "overfit"
    metrics = train_detector(cfg, overfit_source, run, verbose=0)
    return run, metrics, cfg


@pytest.fixture(scope="session")
def exported(trained_detector, overfit_source):
    """(run, {mode: {"path", "verify"}}) for RUN/export/model_{float32,int8}.tflite, exported through the
    export contract (verified on the test split before anything is written)."""
    from export.detector_export import DetectorExport
    from export.exporter import ExportConfig, export_run

    run, _, _ = trained_detector
    cfg = ExportConfig(modes=("float32", "int8"), calib=8, min_agreement=0.9, latency_runs=3)
    card = export_run(DetectorExport(run, cfg, source=overfit_source, log=lambda *_: None), run, cfg,
                      log=lambda *_: None)
    return run, {mode: {"path": str(run / "export" / entry["file"]), "verify": entry["verification"],
                        "card": card} for mode, entry in card["models"].items()}
