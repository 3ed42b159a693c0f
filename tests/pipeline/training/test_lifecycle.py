"""The one run lifecycle both tasks train through: kill-safe callback order, and cleanup that keeps tuning/."""
from __future__ import annotations

import json

import keras
import pytest

from common.errors import UserError
from common.run_folder import RunFolder
from pipeline.training.lifecycle import prepare_run_folder, run_lifecycle, training_callbacks


def test_the_history_row_is_written_before_the_backup(tmp_path):
    """A kill between the two then reruns the epoch, whose new row replaces the old one; the
    other order (the classifier's, before) lost that epoch's row for good."""
    run = RunFolder(tmp_path / "run")
    callbacks = training_callbacks(run, stopping=None, history_csv=tmp_path / "history.csv", log_dir=tmp_path / "logs")
    kinds = [type(c) for c in callbacks]
    assert kinds.index(keras.callbacks.CSVLogger) < kinds.index(keras.callbacks.BackupAndRestore)


def test_a_failed_new_run_keeps_tuning_and_removes_what_it_wrote(tmp_path):
    run = RunFolder(tmp_path / "run")
    (run.tuning / "project").mkdir(parents=True)
    (run.tuning / "settings.json").write_text("{}")

    def train(r, resuming):
        r.config.write_text(json.dumps({"task": "detect"}))
        r.resume_dir.mkdir()
        raise RuntimeError("out of memory in epoch 1")

    with pytest.raises(RuntimeError, match="epoch 1"):
        run_lifecycle(run.root, {"task": "detect"}, force=False, train=train, describe_done=str)
    assert sorted(p.name for p in run.root.iterdir()) == ["tuning"]
    assert (run.tuning / "settings.json").exists()


def test_force_replaces_a_run_but_keeps_tuning(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text(json.dumps({"task": "classify", "epochs": 1}))
    (run.root / "model.keras").write_bytes(b"old")
    (run.root / "metrics.json").write_text("{}")
    (run.export).mkdir()
    (run.export / "model_int8.tflite").write_bytes(b"stale")
    run.tuning.mkdir()
    with pytest.raises(UserError, match="different settings"):
        prepare_run_folder(run, {"task": "classify", "epochs": 2}, force=False)
    assert prepare_run_folder(run, {"task": "classify", "epochs": 2}, force=True) == "new"
    assert sorted(p.name for p in run.root.iterdir()) == ["tuning"]
