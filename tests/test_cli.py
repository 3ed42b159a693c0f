"""The command line as a user meets it: one writer per run folder, one-line errors, the task read
from what a run or a model records, and export / eval / predict of both tasks end to end.

Every test here starts `cli.py` in a child process (about 6 s of TensorFlow import each), so the
end-to-end ones share their work: one export per task (a module fixture), on copies of the
session's tiny runs (tests/conftest.py: tiny_run, trained_detector).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from export.classifier_export import predict_probabilities
from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.sources.specs import open_source
from tests.common.lock_holder import child_env, start_holder

pytestmark = pytest.mark.heavy

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=600)


def _ok(result: subprocess.CompletedProcess) -> list[str]:
    """stdout's lines of a command that must have succeeded."""
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout.splitlines()


@pytest.mark.parametrize("command", [["train", "--data", "shapes"], ["export"], ["tune"]])
def test_a_second_command_on_a_locked_run_folder_exits_2_naming_the_holder(tmp_path, command):
    run = tmp_path / "run"
    holder = start_holder(run, tmp_path / "release")
    try:
        if command == ["export"]:  # export reads the run's task first: give it a config
            (run / "config.json").write_text(json.dumps({"task": "classify"}))
            (run / "model.keras").write_bytes(b"")
        result = _cli(command[0], "--run", str(run), *command[1:])
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback, no TensorFlow start-up noise
    assert lines[0].startswith(f"error: {run}: in use by another command") and f"pid {holder.pid}" in lines[0]


def test_no_tensorflow_start_up_noise_on_a_user_error(tmp_path):
    result = _cli("train", "--data", "nonsense:x", "--run", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DATA='nonsense:x': unknown data source; expected one of: shapes, tfds:NAME, folder:PATH, "
        "voc:PATH, coco:FILE.json"]
    assert not (tmp_path / "r").exists()


def test_detector_refuses_cnn_flags_instead_of_dropping_them(tmp_path):
    result = _cli("train", "--task", "detect", "--filters", "8,16", "--run", str(tmp_path / "r"))
    assert result.returncode == 2 and "--filters" in result.stderr and "TASK=detect" in result.stderr
    assert not (tmp_path / "r").exists()


# --- classifier: export, eval, predict of a copy of the session's tiny run ---------------------------


@pytest.fixture(scope="module")
def classifier_cli(tiny_run, export_data_dir, tmp_path_factory):
    """(run, `cli.py export` result): int8 only, on a copy of tiny_run."""
    run = tmp_path_factory.mktemp("cli-classify") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "eval"))
    return run, _cli("export", "--run", str(run), "--quant", "int8", "--calib", "16", "--min-agreement", "0.9",
                     "--data-dir", str(export_data_dir))


@pytest.fixture(scope="module")
def classifier_test_split(tiny_run, export_data_dir):
    """float32 [N, S, S, 3] preprocessed test images and int32 [N] labels of tiny_run's data."""
    source = open_source(json.loads((tiny_run / "config.json").read_text())["data"], "classify",
                         data_dir=export_data_dir, seed=0)
    pairs = [(x.numpy(), y.numpy()) for x, y in
             classification_dataset(source, "test", PipelineConfig(image_size=32, batch_size=64), training=False)]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def test_classifier_export_writes_the_int8_model_and_a_card_naming_the_task(classifier_cli):
    run, result = classifier_cli
    lines = _ok(result)
    assert lines[-1] == f"Wrote {run / 'export'}: model_int8.tflite, labels.txt, model_card.json, export_report.md"
    assert (run / "export" / "model_int8.tflite").stat().st_size > 1000
    card = json.loads((run / "export" / "model_card.json").read_text())
    assert card["task"] == "classify" and card["models"]["int8"]["file"] == "model_int8.tflite"


def test_classifier_eval_writes_the_accuracy_of_the_model(classifier_cli, classifier_test_split, export_data_dir):
    run, _ = classifier_cli
    lines = _ok(_cli("eval", "--run", str(run), "--data-dir", str(export_data_dir)))
    out = run / "eval" / "model-test.json"
    assert lines[-1] == f"Wrote {out}"
    images, labels = classifier_test_split
    # the same model on the same split, scored here without the eval command's code
    expected = np.mean(predict_probabilities(keras.models.load_model(run / "model.keras"), images).argmax(1) == labels)
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(expected, abs=1e-6)


def test_classifier_predict_prints_the_label_probability_table(classifier_cli, classifier_test_split, tmp_path):
    run, _ = classifier_cli
    images, _ = classifier_test_split
    image = tmp_path / "sample.png"
    Image.fromarray(images[0].astype(np.uint8)).save(image)  # 32 px: predict's resize is a no-op
    lines = _ok(_cli("predict", "--run", str(run), "--image", str(image), "--top-k", "3"))
    assert lines[0] == str(image) and lines[1].split() == ["Label", "Probability"]
    rows = [line.split() for line in lines[3:]]
    probs = predict_probabilities(keras.models.load_model(run / "model.keras"), images[:1])[0]
    labels = (run / "labels.txt").read_text().split()
    expected = [(labels[i], probs[i]) for i in np.argsort(-probs)[:3]]
    assert [name for name, _ in rows] == [name for name, _ in expected]
    assert [float(p) for _, p in rows] == pytest.approx([p for _, p in expected], abs=1e-4)


# --- detector: export, eval, predict of a copy of the session's trained detector ----------------------


@pytest.fixture(scope="module")
def detector_cli(trained_detector, data_dir, tmp_path_factory):
    """(run, `cli.py export` result): int8 only, on a copy of the trained detector's run. Verified on
    its DATA='s own test split, 4 images it never saw, so MIN_AGREEMENT is lowered: what is tested
    here is the command, not the detector (tests/export/test_detector_export.py checks the export)."""
    run = tmp_path_factory.mktemp("cli-detect") / "run"
    shutil.copytree(trained_detector[0], run, ignore=shutil.ignore_patterns("export", "eval", "predictions"))
    return run, _cli("export", "--run", str(run), "--quant", "int8", "--calib", "4", "--min-agreement", "0.5",
                     "--data-dir", str(data_dir))


def test_detector_export_writes_the_int8_model_and_a_card_naming_the_task(detector_cli):
    run, result = detector_cli
    lines = _ok(result)
    assert lines[-1] == f"Wrote {run / 'export'}: model_int8.tflite, labels.txt, model_card.json, export_report.md"
    assert (run / "export" / "model_int8.tflite").stat().st_size > 1000
    card = json.loads((run / "export" / "model_card.json").read_text())
    assert card["task"] == "detect" and card["models"]["int8"]["file"] == "model_int8.tflite"


def test_detector_eval_reproduces_the_training_metrics(detector_cli, trained_detector, data_dir):
    run, _ = detector_cli
    _, metrics, _ = trained_detector
    # split "train" of the run's DATA=: the 8 images its test metrics were computed on
    lines = _ok(_cli("eval", "--run", str(run), "--data-dir", str(data_dir), "--split", "train"))
    out = run / "eval" / "model-train.json"
    assert lines[-1] == f"Wrote {out}"
    result = json.loads(out.read_text())
    assert result["images"] == 8 and result["map"] == pytest.approx(metrics["test"]["map"], abs=1e-6)
    assert f"mAP@.5 {result['map50']:.3f} over 8 images" in lines[-2]


def _detection_table(lines: list[str]) -> list[list[str]]:
    """The rows of a printed Label / Score / box table (after the image line, the header and the rule;
    the last line names the PNG the boxes were drawn in)."""
    assert lines[1].split() == ["Label", "Score", "ymin", "xmin", "ymax", "xmax"]
    assert lines[-1].startswith("Wrote ") and lines[-1].endswith(".png"), lines[-1]
    return [line.split() for line in lines[3:-1]]


def test_detector_predict_prints_boxes_and_draws_them(detector_cli):
    run, _ = detector_cli
    image = sorted((run / "samples").glob("*.png"))[0]  # no --image: the run's first sample
    lines = _ok(_cli("predict", "--run", str(run)))
    assert lines[0] == str(image)
    rows = _detection_table(lines)
    labels = (run / "labels.txt").read_text().split()
    assert rows and all(row[0] in labels for row in rows), lines  # it finds objects on an image it learned
    assert lines[-1] == f"Wrote {run / 'predictions' / image.name}"
    assert (run / "predictions" / image.name).stat().st_size > 0


def test_predict_with_only_a_tflite_reads_the_task_from_its_metadata(detector_cli, tmp_path):
    run, _ = detector_cli
    image = sorted((run / "samples").glob("*.png"))[0]
    lines = _ok(_cli("predict", "--model", str(run / "export" / "model_int8.tflite"), "--image", str(image),
                     cwd=tmp_path))  # no RUN: the detector's table, from task.json in the .tflite
    rows = _detection_table(lines)
    assert rows and all(row[0] in (run / "labels.txt").read_text().split() for row in rows), lines
    drawn = Path("runs") / "predictions" / image.name  # beside the command, without a run folder
    assert lines[-1] == f"Wrote {drawn}" and (tmp_path / drawn).stat().st_size > 0
