"""SIGKILL a real search mid-trial, run the same command again: it continues, it does not restart."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import time

import pytest


def _wait_for(path, proc, timeout: float = 150.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the search ended (status {proc.returncode}) before {path} appeared:\n"
                        + proc.stdout.read().decode(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.1)


def test_rerun_after_sigkill_continues_where_it_was(tmp_path, tiny_args, tune_subprocess):
    command, env = tune_subprocess
    run = tmp_path / "run"
    # Grid: Keras Tuner 1.4.8 raises KeyError when a grid search is reloaded (#1055).
    args = tiny_args(run, "--tuner", "grid", "--trials", "3", "--space-set", "learning_rate=0.001,0.003,0.0003")
    project = run / "tuning" / "project"

    first = subprocess.Popen(command(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(project / "trial_1" / "runs.log", first)  # trial 0 has finished, trial 1 is training
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = json.loads((project / "trial_0" / "trial.json").read_text())
    assert finished["status"] == "COMPLETED"
    assert not (run / "model.keras").exists()

    second = subprocess.run(command(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert second.returncode == 0, second.stdout.decode(errors="replace")[-3000:]

    runs = {t: (project / f"trial_{t}" / "runs.log").read_text().splitlines() for t in "012"}
    assert len(runs["0"]) == 1  # finished before the kill: not run again
    assert len(runs["1"]) == 2  # interrupted: run again from its start, by the new process
    assert runs["1"][0] != runs["1"][1]
    assert len(runs["2"]) == 1
    assert json.loads((project / "trial_0" / "trial.json").read_text())["metrics"] == finished["metrics"]
    rows = list(csv.DictReader((run / "tuning" / "trials.csv").open()))
    assert [(r["trial_id"], r["status"]) for r in rows] == [("0", "COMPLETED"), ("1", "COMPLETED"), ("2", "COMPLETED")]
    assert len({r["learning_rate"] + r["units_1"] + r["conv_blocks"] for r in rows}) == 3  # three grid points
    assert (run / "model.keras").exists() and (run / "metrics.json").exists()
