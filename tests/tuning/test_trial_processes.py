"""Trials in fresh processes: a trial whose process dies is recorded as failed and the search goes on;
a Hyperband search trains in rungs of optimizer steps, with the default model as trial 0 at the top."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess

import pytest

import cli
from tests.tuning.run_logs import wait_for_first_line
from tests.tuning.tiny_oracle import finish as _finish, oracle as _tuner
from tuning.search import TuningFolder
from tuning.trial_processes import describe_exit
from tuning.tuner_compat import fail_interrupted_trials


def test_a_dead_process_trial_is_failed_not_rerun(tmp_path):
    folder = TuningFolder(tmp_path / "tuning")
    oracle = _tuner("random", folder)
    _finish(oracle, oracle.create_trial("tuner0"), 0.4)
    dying = oracle.create_trial("tuner0")  # its process is killed (out of memory) during this trial

    assert fail_interrupted_trials(folder.project, "killed by SIGKILL") == [dying.trial_id]
    saved = json.loads((folder.project / f"trial_{dying.trial_id}" / "trial.json").read_text())
    assert (saved["status"], saved["message"]) == ("FAILED", "killed by SIGKILL")
    oracle = _tuner("random", folder)
    nxt = oracle.create_trial("tuner0")
    assert nxt.trial_id not in ("0", dying.trial_id) and nxt.status == "RUNNING"  # not run again
    assert oracle.trials[dying.trial_id].status == "FAILED"
    assert fail_interrupted_trials(tmp_path / "nothing", "x") == []


def test_exit_statuses_are_described():
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL (out of memory?)"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(1) == "exit status 1"


@pytest.mark.heavy
def test_a_trial_whose_process_is_killed_is_recorded_and_the_search_goes_on(tmp_path, tiny_args, tune_subprocess):
    command, env = tune_subprocess
    run = tmp_path / "run"
    project = run / "tuning" / "project"
    args = tiny_args(run, "--tuner", "random", "--trials", "3", "--trials-per-process", "1")
    log = tmp_path / "tune.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command(args), env=env, stdout=out, stderr=subprocess.STDOUT)
        runs_log = project / "trial_1" / "runs.log"
        wait_for_first_line(runs_log, proc, log)
        line = runs_log.read_text()
        os.kill(int(line.split()[2]), signal.SIGKILL)  # the trial's own process, as the OOM killer would
        assert proc.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]

    rows = {r["trial_id"]: r for r in csv.DictReader((run / "tuning" / "trials.csv").open())}
    assert [(t, r["status"]) for t, r in rows.items()] == [("0", "COMPLETED"), ("1", "FAILED"), ("2", "COMPLETED")]
    assert rows["1"]["message"] == "the trial process died (killed by SIGKILL (out of memory?))"
    runs = {t: (project / f"trial_{t}" / "runs.log").read_text().splitlines() for t in rows}
    assert all(len(lines) == 1 for lines in runs.values())  # the killed trial was not run again
    assert len({lines[0].split()[2] for lines in runs.values()}) == 3  # a fresh process for each trial
    assert "1 | FAILED: the trial process died (killed by SIGKILL" in (run / "tuning" / "report.md").read_text()
    assert (run / "model.keras").exists()


@pytest.mark.heavy
def test_hyperband_trains_in_rungs_of_steps_with_the_default_at_the_top(tmp_path, tiny_args):
    run = tmp_path / "run"
    # One Hyperband bracket on 2-step epochs: units of 1 step, rungs of 1, 3 and 9 steps.
    assert cli.main(["tune", *tiny_args(run, "--trials", "14", "--trials-per-process", "7")]) == 0
    project = run / "tuning" / "project"
    rows = {r["trial_id"]: r for r in csv.DictReader((run / "tuning" / "trials.csv").open())}
    assert len(rows) == 14 and all(r["status"] == "COMPLETED" for r in rows.values())
    # Trial 0 is `make train`'s model at the top rung; the others climb the rungs: 9 x 1, 3 x 3, 1 x 9 steps.
    assert rows["00"]["steps"] == "9" and rows["00"]["filters_3"] == "64" and rows["00"]["learning_rate"] == "0.002"
    assert sorted(int(r["steps"]) for t, r in rows.items() if t != "00") == [1] * 9 + [3] * 3 + [9]
    promoted = [t for t, r in rows.items() if r["steps"] == "3"]
    assert all(rows[t]["val_accuracy"] != "" for t in promoted)
    pids = {(project / f"trial_{t}" / "runs.log").read_text().split()[2] for t in rows}
    assert len(pids) == 2  # 7 trials a process
    best = json.loads((run / "tuning" / "best_hyperparameters.json").read_text())
    assert best["steps"] == 9  # only top-rung trials can be shipped
    assert best["default"]["trial_id"] == "00" and best["default"]["default_wins"] == (best["trial_id"] == "00")
    assert (run / "model.keras").exists()
