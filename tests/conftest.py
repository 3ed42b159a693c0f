"""Shared fixtures: tiny data the tests make themselves, offline.

The trained detector is shared by the detection tests of several folders (training and tflite
conversion dominate their run time on a CPU): a 64 px SSD overfit on 8 images of the built-in
shapes, whose "test" split is those same 8 images, so its metrics say whether it learned them.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402

TINY_SHAPES = "shapes:train=280,validation=70,test=70,size=32"
EXPORT_SHAPES = "shapes:train=192,validation=32,test=48,size=32,seed=3"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data dir shared by the session; the built-in shapes variants are prepared into it."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_shapes(data_dir):
    """A small classification variant of the built-in data (32x32 images)."""
    from pipeline.sources.specs import open_source

    return open_source(TINY_SHAPES, "classify", data_dir=data_dir)


@pytest.fixture(scope="session")
def export_data_dir(tmp_path_factory):
    """The tfds data dir of tiny_run's data (EXPORT_SHAPES)."""
    return tmp_path_factory.mktemp("export_tfds")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, export_data_dir):
    """Path of a run folder (config.json, labels.txt, model.keras) of a 2-block CNN trained for a few
    seconds on 32 px built-in shapes (EXPORT_SHAPES, prepared in export_data_dir). Shared: copy it
    before writing into it (the export tests write its export/)."""
    import keras

    from common.run_folder import RunFolder, write_json
    from models.cnn import CNNConfig, build_cnn
    from pipeline.augment import AugmentConfig
    from pipeline.dataset import classification_dataset
    from pipeline.sources.specs import open_source
    from pipeline.training.classifier import TrainConfig

    cfg = TrainConfig(data=EXPORT_SHAPES, image_size=32, batch_size=32, epochs=12, seed=0,
                      cnn=CNNConfig(filters=(8, 16), hidden_units=(32,), dropout=0.0),
                      augment=AugmentConfig(flip=False))
    source = open_source(cfg.data, "classify", data_dir=export_data_dir, seed=0)
    run = RunFolder(tmp_path_factory.mktemp("run") / "tiny")
    run.root.mkdir(parents=True)
    keras.utils.set_random_seed(0)
    model = build_cnn(cfg.cnn, source.num_classes, cfg.image_size)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(classification_dataset(source, "train", cfg.pipeline(), training=False),
              epochs=cfg.epochs, verbose=0)
    write_json(run.config, cfg.to_dict())
    run.write_labels(list(source.label_names))
    model.save(run.model)
    return run.root


@pytest.fixture(scope="session")
def overfit_source(data_dir):
    """8 shapes images (64 px); test is the same 8 images; train repeats them 6 times, so one
    epoch is 6 steps (per-epoch checkpointing would otherwise dominate); no validation split."""
    from pipeline.sources.specs import open_source
    from tests.detection_data import OVERFIT_DATA, TRAIN_REPEATS

    shapes = open_source(OVERFIT_DATA, "detect", data_dir=data_dir)
    return replace(shapes, split_sizes={"train": 8 * TRAIN_REPEATS, "validation": 0, "test": 8},
                   load_split=lambda split: shapes.load_split("train").repeat(TRAIN_REPEATS if split == "train" else 1))


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory, overfit_source):
    """(run folder, metrics, config) of a tiny detector overfit on 8 images."""
    from pipeline.detection_dataset import NO_AUGMENT
    from pipeline.training.detector import DetectTrainConfig, train_detector
    from tests.detection_data import OVERFIT_DATA, TINY_SSD

    cfg = DetectTrainConfig(data=OVERFIT_DATA, ssd=TINY_SSD, augment=NO_AUGMENT, epochs=6, batch_size=8,
                            learning_rate=1e-2, auto_input=False, auto_anchors=False)
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
