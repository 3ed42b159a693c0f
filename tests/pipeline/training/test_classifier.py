"""End to end: training into a run folder, resuming after SIGKILL, and the CLI's errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import cli
from models.cnn import CNNConfig
from pipeline.preprocess import preprocess_for_model
from pipeline.sources.images import load_rgb
from pipeline.sources.specs import open_source
from pipeline.training.classifier import TrainConfig, train_classifier

ROOT = Path(__file__).resolve().parents[3]
E2E_DATA = "shapes:train=900,validation=150,test=210,size=32"
SMALL_CNN = CNNConfig(filters=(16, 32), hidden_units=(64,), dropout=0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    # 20 epochs: under the warm-up + cosine schedule the mean learning rate is about half the peak
    cfg = TrainConfig(data=E2E_DATA, image_size=32, epochs=20, batch_size=32, learning_rate=2e-3, cnn=SMALL_CNN)
    source = open_source(E2E_DATA, data_dir=data_dir)
    run = tmp_path_factory.mktemp("runs") / "e2e"
    metrics = train_classifier(cfg, source, run, verbose=0)
    return run, metrics, cfg, source


@pytest.mark.heavy
def test_tiny_run_learns_well_above_chance(trained):
    run, metrics, _, source = trained
    chance = 1 / source.num_classes
    assert metrics["test"]["accuracy"] > 0.6 > 3 * chance
    assert metrics["epochs_run"] >= 2 and len(metrics["history"]["val_accuracy"]) == metrics["epochs_run"]


@pytest.mark.heavy
def test_run_folder_has_every_artifact(trained):
    run, metrics, cfg, source = trained
    for name in ("model.keras", "labels.txt", "config.json", "metrics.json", "report.md",
                 "plots/training_curves.png", "plots/confusion_matrix.png"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "labels.txt").read_text().split() == list(source.label_names)
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == cfg
    assert list((run / "samples").glob("*.png"))
    assert any((run / "logs").rglob("events.out.tfevents*"))
    assert not (run / ".resume").exists()
    assert not list(run.rglob(".*.tmp*"))  # no temporary leftovers
    report = (run / "report.md").read_text()
    assert f"{metrics['test']['accuracy']:.2%}" in report and "confusion_matrix.png" in report


@pytest.mark.heavy
def test_rerun_of_a_finished_run_is_a_no_op_and_other_settings_are_refused(trained, capsys):
    run, metrics, cfg, source = trained
    before = (run / "model.keras").stat().st_mtime_ns
    again = train_classifier(cfg, source, run, verbose=0)
    assert again["test"] == metrics["test"]
    assert (run / "model.keras").stat().st_mtime_ns == before
    assert "already trained" in capsys.readouterr().out
    from common.errors import UserError

    with pytest.raises(UserError, match="different settings.*epochs"):
        train_classifier(TrainConfig(**{**cfg.__dict__, "epochs": 3}), source, run, verbose=0)


@pytest.mark.heavy
def test_predict_prints_label_probability_table(trained, capsys):
    run, *_ = trained
    sample = sorted((run / "samples").glob("*.png"))[0]
    assert cli.main(["predict", "--run", str(run), "--image", str(sample), "--top-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["Label", "Probability"]
    rows = [line.split() for line in out[3:]]
    # the run's model on the same pixels, computed here: the table shows its three best classes
    probs = keras.models.load_model(run / "model.keras").predict_on_batch(preprocess_for_model(load_rgb(sample), 32))[0]
    labels = (run / "labels.txt").read_text().split()
    best = np.argsort(-probs, kind="stable")[:3]
    assert [name for name, _ in rows] == [labels[i] for i in best]
    assert [float(p) for _, p in rows] == pytest.approx(probs[best], abs=1e-4)  # printed with 4 decimals


@pytest.mark.heavy
def test_eval_writes_metrics_matching_training(trained, data_dir):
    run, metrics, *_ = trained
    assert cli.main(["eval", "--run", str(run), "--data-dir", str(data_dir)]) == 0
    result = json.loads((run / "eval" / "model-test.json").read_text())
    assert result["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)


def _train_cmd(run, data_dir, epochs):
    return [sys.executable, "cli.py", "train", "--data", E2E_DATA, "--run", str(run), "--epochs", str(epochs),
            "--image-size", "32", "--batch-size", "32", "--filters", "16,32", "--hidden-units", "64",
            "--data-dir", str(data_dir)]


@pytest.mark.heavy
def test_sigkilled_run_resumes_where_it_stopped(tmp_path, data_dir):
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_train_cmd(run, data_dir, 6), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run / ".resume" / "history.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists() and (run / "config.json").exists()

    done = subprocess.run(_train_cmd(run, data_dir, 6), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resuming" in done.stdout
    started = [line for line in done.stdout.splitlines() if line.startswith("Epoch ")]
    assert started and not started[0].startswith("Epoch 1/"), started  # did not start over
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 6  # one history across both processes
    assert not (run / ".resume").exists()


@pytest.mark.parametrize("args,message", [
    (["--data", "nonsense:thing"], "unknown data source"),
    (["--data", "folder:/definitely/not/here"], "folder not found"),
    (["--data", "shapes", "--epochs", "0"], "EPOCHS=0"),
    (["--data", "shapes", "--filters", "0"], "filters"),
])
def test_cli_errors_are_one_line_and_leave_no_run_folder(tmp_path, capsys, args, message):
    run = tmp_path / "r"
    assert cli.main(["train", "--run", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not run.exists()


def test_bad_image_in_folder_is_named_and_leaves_no_run_folder(tmp_path, capsys):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "d" / c / f"{i}.png")
    (tmp_path / "d" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    run = tmp_path / "r"
    assert cli.main(["train", "--run", str(run), "--data", f"folder:{tmp_path / 'd'}"]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not run.exists()


def test_predict_and_eval_on_missing_run(tmp_path, capsys):
    assert cli.main(["predict", "--run", str(tmp_path / "none")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["eval", "--run", str(tmp_path / "empty")]) == 2
    assert "model not found" in capsys.readouterr().err


def test_failed_new_run_removes_only_what_training_wrote(tmp_path, tiny_shapes):
    # A CNN that pools a 8px input away fails after the run folder was started.
    bad = TrainConfig(data="shapes", image_size=8, epochs=1, cnn=CNNConfig(filters=(4, 4, 4, 4)))
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="shrink"):
        train_classifier(bad, tiny_shapes, fresh, verbose=0)
    assert not fresh.exists()
    shared = tmp_path / "shared"
    (shared / "tuning").mkdir(parents=True)
    (shared / "tuning" / "trials.csv").write_text("kept")
    with pytest.raises(ValueError, match="shrink"):
        train_classifier(bad, tiny_shapes, shared, verbose=0)
    assert (shared / "tuning" / "trials.csv").read_text() == "kept"
    assert sorted(p.name for p in shared.iterdir()) == ["tuning"]


def test_a_run_that_fails_after_training_resumes_at_its_evaluation(tmp_path, tiny_shapes, monkeypatch, capsys):
    """A kill or an error while the test split is scored used to cost the whole training: the backup
    is gone once fit ends, and the failed new run was removed. The fitted weights now stay in
    RUN/.resume, and the rerun evaluates them without training again."""
    import pipeline.training.classifier as classifier

    cfg = TrainConfig(data="shapes", image_size=32, epochs=2, batch_size=32, cnn=SMALL_CNN)
    run = tmp_path / "run"

    def broken(*args, **kwargs):
        raise RuntimeError("scoring crashed")

    scoring = classifier.classification_metrics
    monkeypatch.setattr(classifier, "classification_metrics", broken)
    with pytest.raises(RuntimeError, match="scoring crashed"):
        train_classifier(cfg, tiny_shapes, run, verbose=0)
    assert (run / ".resume" / "fitted.weights.h5").exists() and not (run / "metrics.json").exists()

    monkeypatch.setattr(classifier, "classification_metrics", scoring)
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: pytest.fail("the fitted run trained again"))
    capsys.readouterr()
    metrics = train_classifier(cfg, tiny_shapes, run, verbose=0)
    assert "had ended in an earlier session" in capsys.readouterr().out
    assert metrics["epochs_run"] == 2 and metrics["train_seconds"] > 0
    assert (run / "metrics.json").exists() and not (run / ".resume").exists()
    kept = keras.models.load_model(run / "model.keras")
    assert metrics["test"]["accuracy"] == pytest.approx(
        classifier.classification_metrics(*classifier.predict_dataset(
            lambda x: kept.predict_on_batch(x),
            classifier.classification_dataset(tiny_shapes, "test", cfg.pipeline(), training=False)),
            list(tiny_shapes.label_names))["accuracy"])
