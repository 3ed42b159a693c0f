"""Two workers on loopback (MultiWorkerMirroredStrategy, CPU): one is killed mid-run, the rerun resumes.

One scenario serves every test here, because each start of a worker costs a TensorFlow import:
`cli.py train --workers 2` is SIGKILLed in one worker after the first checkpoint, then run again to
completion; a single-worker run of the same settings is the reference layout.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from models.cnn import CNNConfig
from pipeline.dataset import classification_dataset
from pipeline.sources.specs import open_source
from pipeline.training.classifier import TrainConfig, train_classifier

pytestmark = pytest.mark.heavy  # each test starts and kills real training processes

ROOT = Path(__file__).resolve().parents[3]
DATA = "shapes:train=200,validation=40,test=40,size=32"
EPOCHS = 3  # <= patience, so early stopping cannot end the run before its last epoch
CNN = CNNConfig(filters=(8, 16), hidden_units=(32,))
ARGS = ["--data", DATA, "--epochs", str(EPOCHS), "--image-size", "32", "--batch-size", "32", "--lr", "3e-3",
        "--filters", "8,16", "--hidden-units", "32"]


def _layout(run: Path) -> set[str]:
    """Relative paths of a run folder, with TensorBoard's host/time-stamped file names generalised."""
    return {re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", str(p.relative_to(run)))
            for p in run.rglob("*") if p.is_file()}


def _worker(launcher: subprocess.Popen, index: int):
    """The psutil.Process of local worker ``index`` started by ``launcher`` (None until it exists)."""
    import psutil

    for child in psutil.Process(launcher.pid).children():
        try:
            if json.loads(child.environ().get("TF_CONFIG", "{}")).get("task", {}).get("index") == index:
                return child
        except psutil.Error:
            pass
    return None


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, data_dir):
    open_source(DATA, data_dir=data_dir)  # prepared once, before any worker starts
    base = tmp_path_factory.mktemp("multiworker")
    run, tmp = base / "run", base / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    command = [sys.executable, "cli.py", "train", "--run", str(run), "--data-dir", str(data_dir), *ARGS,
               "--workers", "2"]

    clock = {"start": time.time()}
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metadata = run / ".resume" / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not metadata.exists():
        time.sleep(0.1)
    assert first.poll() is None, "training ended before a worker could be killed:\n" + first.stdout.read().decode()
    victim = _worker(first, 1)
    assert victim is not None
    clock["kill"] = time.time()
    victim.send_signal(signal.SIGKILL)
    first_out = first.communicate(timeout=120)[0].decode(errors="replace")
    clock["stopped"] = time.time()
    checkpointed = json.loads(metadata.read_text())["epoch"]  # epochs finished and saved before the kill
    after_kill = {name: (run / name).exists() for name in ("config.json", "metrics.json", "model.keras")}
    leftovers = set(tmp.iterdir())  # the killed worker could not clean up after itself

    second = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=400)
    second_out = second.stdout.decode(errors="replace")
    assert second.returncode == 0, second_out[-4000:]
    clock["resumed"] = time.time()

    reference = base / "single"  # the same settings, one process, in this one
    cfg = TrainConfig(data=DATA, image_size=32, batch_size=32, epochs=EPOCHS, learning_rate=3e-3, cnn=CNN)
    train_classifier(cfg, open_source(DATA, data_dir=data_dir), reference, verbose=0)
    clock["single"] = time.time()
    print({k: round(v - clock["start"], 1) for k, v in clock.items()})
    return {"run": run, "reference": reference, "first": first, "first_out": first_out, "second_out": second_out,
            "checkpointed": checkpointed, "after_kill": after_kill, "tmp": tmp, "leftovers": leftovers}


def test_killing_a_worker_stops_the_run_and_keeps_its_checkpoint(scenario):
    assert scenario["first"].returncode != 0
    assert "Worker 1 of 2 exited" in scenario["first_out"]
    assert 1 <= scenario["checkpointed"] < EPOCHS
    assert scenario["after_kill"] == {"config.json": True, "metrics.json": False, "model.keras": False}


def test_rerun_resumes_from_the_last_checkpoint(scenario):
    out = scenario["second_out"]
    assert "Resuming the unfinished run" in out
    started = [int(m) for m in re.findall(r"^Epoch (\d+)/%d" % EPOCHS, out, flags=re.M)]
    assert started and started[0] == scenario["checkpointed"] + 1, started  # nothing redone, nothing skipped
    metrics = json.loads((scenario["run"] / "metrics.json").read_text())
    assert metrics["epochs_run"] == EPOCHS  # one history across both launches
    assert len(metrics["history"]["val_accuracy"]) == EPOCHS


def test_multiworker_run_folder_matches_a_single_worker_run(scenario):
    run, reference = scenario["run"], scenario["reference"]
    assert _layout(run) == _layout(reference)
    assert {"model.keras", "config.json", "metrics.json", "report.md", "labels.txt"} <= _layout(run)
    assert not (run / ".resume").exists()
    # The strategy is not part of the run's settings: both runs hold the same config.
    assert json.loads((run / "config.json").read_text()) == json.loads((reference / "config.json").read_text())
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())).epochs == EPOCHS
    # Non-chief workers wrote only to temporary folders, removed when they finished.
    assert set(scenario["tmp"].iterdir()) == scenario["leftovers"]


def test_multiworker_loss_goes_down_and_the_saved_model_is_the_one_scored(scenario, data_dir):
    run = scenario["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    loss = metrics["history"]["loss"]
    assert all(np.isfinite(loss)) and loss[-1] < loss[0], loss
    # model.keras scored here on the test split: the accuracy the run reported is this model's
    model = keras.models.load_model(run / "model.keras")
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    pairs = [(model.predict_on_batch(x).argmax(1), y.numpy())
             for x, y in classification_dataset(open_source(DATA, data_dir=data_dir), "test", cfg.pipeline(),
                                                training=False)]
    accuracy = np.mean(np.concatenate([p for p, _ in pairs]) == np.concatenate([y for _, y in pairs]))
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
