"""SIGKILL a real `cli.py train --task detect` after a checkpointed epoch, run it again: it resumes.

The detector's counterpart of the classifier's test in tests/pipeline/test_train.py, plus a
kill that lands while an epoch's backup is being written. Most of each process's time is Keras
tracing the train step (a minute or more on 2 CPU cores), so the data is tiny: 64 px images,
2 steps an epoch, 5 epochs.
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

ROOT = Path(__file__).resolve().parents[2]
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
    from pipeline.sources import open_source

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


def test_sigkilled_detector_run_resumes_where_it_stopped(tmp_path, data_dir):
    run = tmp_path / "killed"
    _train_until_checkpointed_then_kill(run, data_dir, tmp_path / "first.log", epochs=1)

    # Killed: nothing of a finished run, everything needed to resume.
    assert not (run / "metrics.json").exists() and not (run / "model.keras").exists()
    assert (run / "config.json").exists() and (run / "labels.txt").exists()
    saved = _saved_epochs(run / ".resume" / "backup" / "training_metadata.json")
    assert 1 <= saved < EPOCHS
    before_kill = _csv_losses(run / ".resume" / "history.csv")  # the first process's epochs, one row each
    assert sorted(before_kill)[:saved] == list(range(saved)), before_kill

    done = _rerun(run, data_dir)
    assert "Resuming" in done.stdout
    # from the checkpoint on, not from epoch 1: only the epochs the first process had not finished
    assert _epochs_started(done.stdout) == list(range(saved + 1, EPOCHS + 1)), done.stdout[-3000:]

    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "model.keras").stat().st_size > 0
    assert metrics["epochs_run"] == EPOCHS  # one history across both processes
    losses = metrics["history"]["loss"]
    assert len(losses) == len(metrics["history"]["val_loss"]) == EPOCHS
    # the first process's epochs are kept as it logged them, not trained again
    assert losses[:saved] == pytest.approx([before_kill[e] for e in range(saved)], rel=1e-6)
    assert not (run / ".resume").exists()


def test_a_backup_half_written_when_killed_resumes_from_the_previous_epoch(tmp_path, data_dir):
    run = tmp_path / "killed"
    _train_until_checkpointed_then_kill(run, data_dir, tmp_path / "first.log", epochs=2)
    backup = run / ".resume" / "backup"
    previous = _saved_epochs(backup / "training_metadata.json.bkp")
    assert previous >= 1, "no previous epoch's backup is kept"
    # what a kill in the middle of saving the weights leaves
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    done = _rerun(run, data_dir)
    assert "Resuming" in done.stdout
    assert _epochs_started(done.stdout) == list(range(previous + 1, EPOCHS + 1)), done.stdout[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == EPOCHS and len(metrics["history"]["loss"]) == EPOCHS
    assert (run / "model.keras").exists() and not (run / ".resume").exists()
