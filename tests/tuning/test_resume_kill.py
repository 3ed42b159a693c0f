"""SIGKILL a real search mid-trial, run the same command again: it continues, it does not restart."""
from __future__ import annotations

import csv
import json
import signal
import subprocess

import pytest

from tests.tuning.run_logs import wait_for_first_line

pytestmark = pytest.mark.heavy


def test_rerun_after_sigkill_continues_where_it_was(tmp_path, tiny_args, tune_subprocess):
    command, env = tune_subprocess
    run = tmp_path / "run"
    # Grid: Keras Tuner 1.4.8 raises KeyError when a grid search is reloaded (#1055).
    args = tiny_args(run, "--tuner", "grid", "--trials", "3", "--space-set", "learning_rate=0.001,0.003,0.0003")
    project = run / "tuning" / "project"

    log = tmp_path / "first.log"
    with log.open("wb") as out:  # a file, not a pipe nobody reads: the child can never block on it
        first = subprocess.Popen(command(args), env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_first_line(project / "trial_1" / "runs.log", first, log)  # trial 0 done, trial 1 started
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the search ended before it could be killed"
    finished = json.loads((project / "trial_0" / "trial.json").read_text())
    assert finished["status"] == "COMPLETED"
    assert json.loads((project / "trial_1" / "trial.json").read_text())["status"] == "RUNNING"  # killed mid-trial
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
    points = {(r["learning_rate"], r["units_1"], r["conv_blocks"], r["input_scale"]) for r in rows}
    assert len(points) == 3  # three grid points
    assert (run / "model.keras").exists() and (run / "metrics.json").exists()
