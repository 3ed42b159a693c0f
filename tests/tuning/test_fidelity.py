"""Trial budgets in optimizer steps (tuning.fidelity), a diverging trial failed, and which trials compete."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_tuner.errors import FailedTrialError

from pipeline.training.budget import CLASSIFIER_RULE, DETECTOR_RULE, plan_budget
from tuning.fidelity import Fidelity, plan_fidelity
from tuning.hypermodel import fit_steps
from tuning.objective import Constraints, ObjectiveConfig, TrialRecord, contenders, default_record, top_rung


def test_rungs_are_a_ninth_a_third_and_all_of_the_top_rung():
    fidelity = Fidelity(top_steps=2000)
    assert fidelity.unit_steps == 223 and fidelity.full_steps == 2007  # whole units, never fewer steps
    assert fidelity.rungs("hyperband") == [223, 669, 2007]
    assert fidelity.rungs("random") == fidelity.rungs("bayesian") == [2007]
    # A run of a trial trains the units beyond those it continues from, with a schedule of its own.
    assert fidelity.trial_steps({"tuner/epochs": 3, "tuner/initial_epoch": 1}) == 2 * 223
    assert fidelity.trial_steps({}) == 2007  # not Hyperband: the top rung
    assert "rungs of 223, 669, 2,007 steps" in fidelity.describe("hyperband")


@pytest.mark.parametrize("rule, images, batch", [(CLASSIFIER_RULE, 1131, 64), (CLASSIFIER_RULE, 50_000, 64),
                                                 (DETECTOR_RULE, 480, 32)])
def test_the_top_rung_is_make_trains_budget(rule, images, batch):
    """The issue's 1,131-image digits search trained 54 steps a trial; its top rung is now 2,000."""
    top = plan_fidelity(rule, images, batch).top_steps
    assert top == plan_budget(images, batch, rule).steps
    assert top >= rule.min_steps
    assert plan_fidelity(rule, images, batch, steps=500).top_steps == 500
    assert plan_fidelity(rule, images, batch, epochs=2).top_steps == 2 * math.ceil(images / batch)


def test_a_diverging_trial_fails_with_a_reason():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.full((32, 4), np.nan, np.float32)  # what a learning rate far too high ends in
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, np.int64))).batch(8).repeat()
    with pytest.raises(FailedTrialError, match="training loss became nan: this configuration diverges"):
        fit_steps(model, Fidelity(top_steps=9), data, epochs=2, verbose=0)
    fine = tf.data.Dataset.from_tensor_slices((np.ones((32, 4), np.float32), np.zeros(32, np.int64))).batch(8)
    history = fit_steps(_fresh(), Fidelity(9), fine.repeat(), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2  # two units of one step each


def _fresh():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_only_top_rung_trials_compete_and_the_default_is_found_among_them():
    default = {"alpha": 0.35, "learning_rate": 0.003}
    records = [TrialRecord("0", "COMPLETED", dict(default), 0.50, steps=900),
               TrialRecord("1", "COMPLETED", {"alpha": 0.5, "learning_rate": 0.003}, 0.90, steps=100),
               TrialRecord("2", "COMPLETED", dict(default), 0.40, steps=300),
               TrialRecord("3", "FAILED", {"alpha": 0.75, "learning_rate": 0.003}, message="diverged")]
    assert [r.trial_id for r in top_rung(records, 900)] == ["0"]  # trial 1's 0.90 is after 1/9 of the budget
    assert default_record(records, default, 900).trial_id == "0"
    assert default_record(records, None, 900) is None  # the space does not hold the default



def test_a_limit_no_top_rung_trial_meets_falls_back_to_the_highest_rung_that_does():
    def trial(tid, steps, latency):
        return TrialRecord(tid, "COMPLETED", {}, 0.9, 1000, 50_000, latency, latency, steps=steps)

    records = [trial("0", 900, 0.6), trial("1", 100, 0.2), trial("2", 300, 0.25), trial("3", 300, 0.5),
               trial("4", 900, 0.4)]
    plain = ObjectiveConfig()
    assert [r.trial_id for r in contenders(records, plain, 900)] == ["0", "4"]
    fast = ObjectiveConfig(constraints=Constraints(max_latency_ms=0.3))
    assert [r.trial_id for r in contenders(records, fast, 900)] == ["2", "3"]  # trial 2 meets it, at 300 steps
    impossible = ObjectiveConfig(constraints=Constraints(max_latency_ms=0.01))
    assert [r.trial_id for r in contenders(records, impossible, 900)] == ["0", "4"]  # nothing to fall back to
