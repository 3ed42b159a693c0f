"""Output a person reads: each command's last line names what it wrote; long steps show a bar.

The summary lines are pure functions of what the commands return (metrics.json's content, the
model card); the commands are driven here with stand-in tasks, so no model is trained.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pytest

import cli
from common.run_folder import RunFolder, write_json


def test_wrote_names_the_place_then_the_files_then_a_note():
    assert cli.wrote(Path("runs/x/eval/model-test.json")) == "Wrote runs/x/eval/model-test.json"
    assert cli.wrote("runs/x", ["a.json", "b.md"]) == "Wrote runs/x: a.json, b.md"
    assert cli.wrote("runs/x", ["a.json"], "3 files") == "Wrote runs/x: a.json (3 files)"


def test_train_summary_gives_the_tasks_test_score():
    classifier = {"test": {"accuracy": 0.991, "examples": 500}, "epochs_run": 10}
    assert cli.train_summary(Path("runs/classify-shapes"), classifier) == (
        "Wrote runs/classify-shapes: model.keras, metrics.json, report.md (test accuracy 99.10%)")
    detector = {"test": {"map50": 0.5123, "map": 0.31}, "test_split": "validation"}
    assert cli.train_summary("runs/detect-voc", detector) == (
        "Wrote runs/detect-voc: model.keras, metrics.json, report.md (validation mAP@.5 0.512)")


def test_export_summary_names_the_models_that_were_written():
    card = {"run": "runs/x", "models": {"float32": {"file": "model_float32.tflite", "passed": True},
                                        "int8": {"file": "model_int8.tflite", "passed": True},
                                        "dynamic": {"file": "model_dynamic.tflite", "passed": False}}}
    assert cli.export_summary(card) == ("Wrote runs/x/export: model_float32.tflite, model_int8.tflite, labels.txt, "
                                        "model_card.json, export_report.md")


def test_tune_summary():
    assert cli.tune_summary(Path("runs/x-tuned/tuning/report.md"), Path("runs/x-tuned")) == (
        "Wrote runs/x-tuned/tuning/report.md and retrained runs/x-tuned")


def test_written_since_lists_only_new_files(tmp_path):
    old, new = tmp_path / "old.md", tmp_path / "new.md"
    old.write_text("stale")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    start = time.time() - 1.0
    new.write_text("fresh")
    (tmp_path / "sub").mkdir()
    assert cli._written_since(tmp_path, start) == ["new.md"]


class _FakeClassifier:
    """A task whose train writes (or, already trained, only reads) metrics.json, as pipeline.training does."""

    def __init__(self, writes: bool):
        self.writes = writes

    def config_from_args(self, args):
        return None

    def train(self, cfg, args):
        metrics = {"test": {"accuracy": 0.875}}
        if self.writes:
            write_json(RunFolder(args.run).metrics, metrics)
        print("Test accuracy 87.50% (8 images). Run folder: ...")
        return metrics


def _train_args(run: Path) -> argparse.Namespace:
    return argparse.Namespace(task="classify", run=run, workers=1, strategy="auto")


@pytest.mark.parametrize("already_trained", [False, True])
def test_train_ends_with_the_summary_unless_nothing_was_written(tmp_path, monkeypatch, capsys, already_trained):
    import tasks

    run = tmp_path / "run"
    run.mkdir()
    if already_trained:
        write_json(RunFolder(run).metrics, {"test": {"accuracy": 0.875}})
    monkeypatch.setattr(tasks, "task_named", lambda name: _FakeClassifier(writes=not already_trained))
    cli.cmd_train(_train_args(run))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    if already_trained:
        assert last.startswith("Test accuracy")  # the task's own line stays last; no claim to have written
    else:
        assert last == f"Wrote {run}: model.keras, metrics.json, report.md (test accuracy 87.50%)"


def test_export_ends_with_the_summary(tmp_path, monkeypatch, capsys):
    import export.command
    import tasks

    class FakeTask:
        def export(self, run_dir, cfg, *, data_dir=None):
            print("Converting int8...")
            return {"run": str(run_dir), "models": {"int8": {"file": "model_int8.tflite", "passed": True}}}

    monkeypatch.setattr(tasks, "task_of", lambda run: FakeTask())
    monkeypatch.setattr(export.command, "export_config", lambda args: None)
    cli.cmd_export(argparse.Namespace(run=tmp_path, data_dir=None))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"Wrote {tmp_path / 'export'}: model_int8.tflite, labels.txt, model_card.json, export_report.md"


@pytest.fixture(scope="module")
def tiny_tflite():
    """(.tflite bytes, images float32 [5, 8, 8, 3], reference probabilities float32 [5, 3]) of a tiny model."""
    import keras

    from export.convert import convert_keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    return convert_keras(model, "float32"), images, np.asarray(model(images), np.float32)


def test_verification_shows_a_bar_only_when_asked(tiny_tflite, capsys):
    from export.verify import verify_classifier

    model_bytes, images, reference = tiny_tflite
    labels = reference.argmax(1).astype(np.int32)
    capsys.readouterr()
    quiet = verify_classifier(model_bytes, images, labels, reference, min_agreement=0.98)
    assert capsys.readouterr() == ("", "")
    shown = verify_classifier(model_bytes, images, labels, reference, min_agreement=0.98, progress="verifying float32")
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays for results (the Label / Probability table)
    assert "verifying float32" in err and "/5" in err
    assert shown == quiet


def test_detector_scoring_shows_a_bar_per_batch_only_when_asked(capsys):
    from pipeline.evaluation.coco_eval import evaluate_detector

    box = np.array([[[0.1, 0.1, 0.5, 0.5]]], np.float32)
    batches = [{"image": np.zeros((1, 8, 8, 3), np.float32), "boxes": box, "labels": np.array([[0]], np.int32),
                "difficult": np.array([[False]])} for _ in range(3)]

    def perfect(images):
        return [{"boxes": box[0], "classes": np.array([0]), "scores": np.array([0.9], np.float32)}] * len(images)

    capsys.readouterr()
    quiet, _, _ = evaluate_detector(perfect, batches, ["thing"])
    assert capsys.readouterr() == ("", "")
    shown, _, _ = evaluate_detector(perfect, batches, ["thing"], progress="verifying int8")
    out, err = capsys.readouterr()
    assert out == "" and "verifying int8" in err and "/3" in err
    assert shown == quiet and shown["map50"] == pytest.approx(1.0)
