"""Reloading Keras Tuner's store after a kill, without training anything (fast).

Keras Tuner 1.4.8 alone fails some of these: GridSearch raises KeyError in
LinkedList.next after a reload (keras-team/keras-tuner#1055), and a trial whose
trial.json was saved before oracle.json is never run again.
"""
from __future__ import annotations

import shutil

import pytest

from tests.tuning.tiny_oracle import finish as _finish, oracle as _tuner
from tuning.search import TuningFolder


def _values(trial) -> dict:
    return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}


@pytest.mark.parametrize("tuner", ["grid", "hyperband", "random", "bayesian"])
def test_interrupted_trial_reruns_and_search_continues_after_reload(tmp_path, tuner):
    folder = TuningFolder(tmp_path / "tuning")
    oracle = _tuner(tuner, folder)
    first = oracle.create_trial("tuner0")
    _finish(oracle, first, 0.4)
    interrupted = oracle.create_trial("tuner0")  # the process is killed during this trial

    oracle = _tuner(tuner, folder)
    rerun = oracle.create_trial("tuner0")
    assert rerun.trial_id == interrupted.trial_id
    assert _values(rerun) == _values(interrupted)
    _finish(oracle, rerun, 0.6)
    seen = [_values(first), _values(rerun)]
    for _ in range(2):  # Grid's KeyError came on the first new trial after a reload
        new = oracle.create_trial("tuner0")
        assert new.status == "RUNNING"
        assert new.trial_id not in (first.trial_id, interrupted.trial_id)
        if tuner != "hyperband":  # Hyperband's later rounds retrain earlier configurations on purpose
            assert _values(new) not in seen
        seen.append(_values(new))
        _finish(oracle, new, 0.5)
    assert oracle.trials[first.trial_id].score == pytest.approx(0.4)


def test_trial_saved_before_the_oracle_is_rerun(tmp_path):
    folder = TuningFolder(tmp_path / "tuning")
    oracle = _tuner("random", folder)
    _finish(oracle, oracle.create_trial("tuner0"), 0.4)
    before = folder.project / "oracle.before.json"
    shutil.copy(folder.project / "oracle.json", before)
    started = oracle.create_trial("tuner0")
    shutil.copy(before, folder.project / "oracle.json")  # killed after trial.json, before oracle.json

    oracle = _tuner("random", folder)
    assert oracle.create_trial("tuner0").trial_id == started.trial_id
