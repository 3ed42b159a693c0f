"""Fixtures for the export tests: the session's tiny classifier run (tests/conftest.py: tiny_run),
its export data and its converted models, made once per session, offline; every export test
reuses them to stay fast.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


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



@pytest.fixture(scope="session")
def classifier_run(tiny_run, export_data_dir, tmp_path_factory):
    """A copy of tiny_run exported as float32 and int8 through the export contract (golden/ included)."""
    import shutil

    from export.classifier_export import ClassifierExport
    from export.exporter import ExportConfig, export_run

    run = tmp_path_factory.mktemp("web-classifier") / "classify-tiny"
    shutil.copytree(tiny_run, run)
    cfg = ExportConfig(modes=("float32", "int8"), calib=32, min_agreement=0.5, latency_runs=3)  # a tiny model
    export_run(ClassifierExport(run, cfg, data_dir=export_data_dir, log=lambda *_: None), run, cfg,
               log=lambda *_: None)
    return run


@pytest.fixture(scope="session")
def detector_run(exported, tmp_path_factory):
    """A copy of the session's exported tiny detector run (tests/conftest.py: exported; golden/ included)."""
    import shutil

    run, _ = exported
    copy = tmp_path_factory.mktemp("web-detector") / "detect-tiny"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("app", ".lock"))
    return copy
