"""A chief and 2 workers on loopback: trials are shared, none runs twice, one report comes out."""
from __future__ import annotations

import pytest

import csv
import subprocess

pytestmark = pytest.mark.heavy  # real searches: trains, converts and times models


def test_two_workers_share_the_trials(tmp_path, tiny_args, tune_subprocess):
    command, env = tune_subprocess
    run = tmp_path / "run"
    done = subprocess.run(command(tiny_args(run, "--tuner", "random", "--trials", "3", "--workers", "2")), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=400)
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-3000:]

    tuning = run / "tuning"
    rows = list(csv.DictReader((tuning / "trials.csv").open()))
    assert [(r["trial_id"], r["status"]) for r in rows] == [(str(i), "COMPLETED") for i in range(3)]
    ran_by = {}
    for i in range(3):
        lines = (tuning / "project" / f"trial_{i}" / "runs.log").read_text().splitlines()
        assert len(lines) == 1, lines  # no trial ran twice
        ran_by[i] = lines[0].split()[0]
    assert set(ran_by.values()) == {"worker1", "worker2"}, ran_by  # both workers took trials
    assert sorted(p.name for p in (tuning / "cluster").iterdir()) == ["chief.log", "worker1.log", "worker2.log"]
    assert (tuning / "report.md").exists() and (tuning / "best_hyperparameters.json").exists()
    assert (run / "model.keras").exists()
