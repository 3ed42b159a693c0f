"""SIGKILL a real `cli.py train --task detect` after a checkpointed epoch, run it again: it resumes.

The detector's counterpart of the classifier's test in tests/pipeline/training/test_classifier.py, with the
backup damaged as a kill in the middle of writing it would leave it. Most of each process's time
is Keras tracing the train step (half a minute or more on 2 CPU cores), so the data is tiny:
64 px images, 2 steps an epoch, 5 epochs.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # each test starts and kills real training processes

ROOT = Path(__file__).resolve().parents[3]
DATA = "shapes:train=16,validation=4,test=4,size=64"
EPOCHS = 5
STARTUP_TIMEOUT = 420  # seconds until the first epoch is checkpointed; tracing dominates, slow under load


def _train_cmd(run: Path, data_dir: Path) -> list[str]:
    # --image-size 64: the default SSD on 64 px inputs (anchors follow the input size)
    return [sys.executable, "cli.py", "train", "--task", "detect", "--data", DATA, "--run", str(run),
            "--epochs", str(EPOCHS), "--image-size", "64", "--batch-size", "8", "--seed", "0",
            "--data-dir", str(data_dir)]


def _saved_epochs(metadata: Path) -> int:
    """Epochs finished according to BackupAndRestore's metadata; 0 while none is (completely) written."""
    try:
        return json.loads(metadata.read_text())["epoch"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _csv_losses(path: Path) -> dict[int, float]:
    with path.open(newline="") as f:
        return {int(row["epoch"]): float(row["loss"]) for row in csv.DictReader(f)}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _train_until_checkpointed_then_kill(run: Path, data_dir: Path, log: Path, epochs: int) -> None:
    """Start training in a child process, SIGKILL it as soon as ``epochs`` epochs are backed up."""
    from pipeline.sources.specs import open_source

    open_source(DATA, "detect", data_dir=data_dir)  # prepared here, once; the children only read it
    metadata = run / ".resume" / "backup" / "training_metadata.json"
    with log.open("wb") as out:
        proc = subprocess.Popen(_train_cmd(run, data_dir), cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while _saved_epochs(metadata) < epochs:
            if proc.poll() is not None:
                pytest.fail(f"training ended (status {proc.returncode}) before epoch {epochs} was checkpointed:\n"
                            + log.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"epoch {epochs} not checkpointed in {STARTUP_TIMEOUT} s:\n"
                            + log.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"


def _rerun(run: Path, data_dir: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(_train_cmd(run, data_dir), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def _epochs_started(stdout: str) -> list[int]:
    """The 1-based epoch numbers of Keras's "Epoch N/EPOCHS" lines (verbose=2 off a terminal)."""
    return [int(m.group(1)) for m in re.finditer(r"^Epoch (\d+)/%d$" % EPOCHS, stdout, re.M)]


def test_sigkilled_detector_run_resumes_even_from_a_half_written_backup(tmp_path, data_dir):
    """Killed after epoch 2 was backed up; the backup's weights are then cut in half, as a kill in
    the middle of saving leaves them. The rerun resumes from the previous epoch's copy
    (double_checkpoint), not from epoch 1, and the history holds every epoch once."""
    run = tmp_path / "killed"
    _train_until_checkpointed_then_kill(run, data_dir, tmp_path / "first.log", epochs=2)

    # Killed: nothing of a finished run, everything needed to resume.
    assert not (run / "metrics.json").exists() and not (run / "model.keras").exists()
    assert (run / "config.json").exists() and (run / "labels.txt").exists()
    backup = run / ".resume" / "backup"
    saved = _saved_epochs(backup / "training_metadata.json")
    previous = _saved_epochs(backup / "training_metadata.json.bkp")
    assert 2 <= saved < EPOCHS and 1 <= previous < saved, (saved, previous)
    before_kill = _csv_losses(run / ".resume" / "history.csv")  # the first process's epochs, one row each
    assert sorted(before_kill)[:saved] == list(range(saved)), before_kill
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    done = _rerun(run, data_dir)
    assert "Resuming" in done.stdout
    # from the previous checkpoint on, not from epoch 1
    assert _epochs_started(done.stdout) == list(range(previous + 1, EPOCHS + 1)), done.stdout[-3000:]

    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "model.keras").stat().st_size > 0
    assert metrics["epochs_run"] == EPOCHS  # one history across both processes
    losses = metrics["history"]["loss"]
    assert len(losses) == len(metrics["history"]["val_loss"]) == EPOCHS
    # the epochs before the resume point are kept as the first process logged them, not trained again
    assert losses[:previous] == pytest.approx([before_kill[e] for e in range(previous)], rel=1e-6)
    assert not (run / ".resume").exists()
