"""Fixtures for the export tests: one tiny trained run folder, made once per session, offline.

The run is a 2-block CNN on 32px built-in shapes, trained for a few seconds;
every export test reuses it (and its converted models) to stay fast.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

EXPORT_SHAPES = "shapes:train=192,validation=32,test=48,size=32,seed=3"


@pytest.fixture(scope="session")
def export_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export_tfds")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, export_data_dir):
    """Path of a run folder (config.json, labels.txt, model.keras) trained on tiny shapes."""
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
def export_data(tiny_run, export_data_dir):
    """export.classifier_export.ExportData for the tiny run (model, calibration and test images)."""
    from export.classifier_export import load_export_data

    return load_export_data(tiny_run, calib=16, data_dir=export_data_dir)


@pytest.fixture(scope="session")
def converted(export_data):
    """mode -> .tflite bytes (no metadata) for the modes that need no fine-tuning."""
    from export.convert import convert_keras

    return {mode: convert_keras(export_data.model, mode, export_data.calibration)
            for mode in ("float32", "float16", "dynamic", "int8")}


@pytest.fixture(scope="session")
def qat_model(export_data):
    """A tf_keras QAT model of the tiny run, fine-tuned one epoch."""
    from export import keras2

    return keras2.qat_fine_tune(export_data.model, export_data.builder(), export_data.train_batches(), epochs=1)


@pytest.fixture
def test_images(export_data):
    """float32 [N, 32, 32, 3] 0..255 and int32 [N] from the test split."""
    return export_data.test_images, export_data.test_labels

