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


def test_under_a_limit_the_default_is_seeded_again_made_smaller(tmp_path):
    """Trial 0 is the default; with MAX_LATENCY_MS= (or MAX_SIZE_KB=) trials 1-4 are the same model
    at input_scale 0.75 and 0.5, then with 64 and 32 dense units, all at the top rung, on top of
    Hyperband's bracket."""
    from tuning.objective import Constraints, ObjectiveConfig
    from tuning.search import TuneConfig, make_tuner

    plain = TuneConfig(image_size=64, steps=9)
    limited = TuneConfig(image_size=64, steps=9,
                         objective=ObjectiveConfig(constraints=Constraints(max_latency_ms=0.1)))
    assert [s["input_scale"] for s in plain.search.seed_values(plain)] == [1.0]
    seeds = limited.search.seed_values(limited)
    assert [(s["input_scale"], s["units_1"]) for s in seeds] == [(1.0, 128), (0.75, 128), (0.5, 128), (1.0, 64),
                                                                   (1.0, 32)]
    assert all({**s, "input_scale": 1.0, "units_1": 128} == seeds[0] for s in seeds)  # the default, smaller
    assert limited.trials == plain.trials + 4
    oracle = make_tuner(limited, limited.search.hypermodel(limited, 3), TuningFolder(tmp_path / "tuning")).oracle
    oracle.verbose = 0
    values = []
    for k in range(6):
        trial = oracle.create_trial("tuner0")
        values.append(dict(trial.hyperparameters.values))
        _finish(oracle, trial, 0.5 + k / 10)
    for got, seed in zip(values, seeds):
        assert {k: got[k] for k in seed} == seed
        assert got["tuner/epochs"] == limited.fidelity.units and got["tuner/bracket"] == -1  # the top rung
    assert values[5]["tuner/bracket"] != -1 and values[5]["tuner/epochs"] < limited.fidelity.units  # the bracket
