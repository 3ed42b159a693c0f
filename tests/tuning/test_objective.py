"""Constraints, objective values, best-trial choice and Pareto fronts, on numbers worked out by hand."""
from __future__ import annotations

import pytest

from tuning.objective import (Constraints, ObjectiveConfig, TrialRecord, choose_best, explain_best,
                              objective_value, pareto_front, score)


def record(trial_id, acc, kb, ms, status="COMPLETED"):
    return TrialRecord(trial_id=trial_id, status=status, hyperparameters={}, quality=acc, params=1000,
                       int8_bytes=int(kb * 1024), latency_ms=ms, latency_p90_ms=ms, wall_seconds=1.0)


def test_pareto_front_by_hand():
    # (cost, accuracy): b dominates d (cheaper and as accurate); e ties a on cost but is worse.
    points = [(1.0, 0.50), (2.0, 0.70), (4.0, 0.90), (3.0, 0.70), (1.0, 0.40), (5.0, 0.90)]
    assert pareto_front(points) == [0, 1, 2]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]


def test_mnasnet_score_by_hand():
    assert score(0.8, 2.0, weight=1.0, reference_ms=1.0) == pytest.approx(0.4)
    assert score(0.8, 4.0, weight=0.5, reference_ms=1.0) == pytest.approx(0.4)
    assert score(0.8, 2.0, weight=0.0, reference_ms=1.0) == pytest.approx(0.8)


def test_infeasible_objective_is_below_every_feasible_one():
    cfg = ObjectiveConfig(constraints=Constraints(max_size_kb=100, max_latency_ms=2.0))
    assert objective_value(cfg, 0.0, 100 * 1024, 2.0) == 0.0  # on the limits is feasible
    assert objective_value(cfg, 0.99, 150 * 1024, 1.0) == pytest.approx(-0.5)
    assert objective_value(cfg, 0.99, 150 * 1024, 3.0) == pytest.approx(-1.0)
    assert objective_value(cfg, 0.99, 110 * 1024, 1.0) > objective_value(cfg, 0.99, 150 * 1024, 1.0)


def test_constraints_exclude_infeasible_trials_from_best():
    records = [record("0", 0.95, kb=500, ms=1.0), record("1", 0.90, kb=50, ms=5.0),
               record("2", 0.80, kb=60, ms=1.5), record("3", 0.99, kb=10, ms=0.5, status="FAILED")]
    assert choose_best(records, ObjectiveConfig()).trial_id == "0"
    limited = ObjectiveConfig(constraints=Constraints(max_size_kb=100, max_latency_ms=2.0))
    assert choose_best(records, limited).trial_id == "2"
    why = explain_best(records, limited)
    assert "Trial 2" in why and "Trial 0 was better" in why and "500.0 KB > MAX_SIZE_KB=100" in why
    assert "Trial 1 was better" in why and "5.000 ms > MAX_LATENCY_MS=2" in why
    assert choose_best(records, ObjectiveConfig(constraints=Constraints(max_size_kb=5))) is None
    assert "None of the 3 finished trials" in explain_best(records, ObjectiveConfig(constraints=Constraints(5)))


def test_score_objective_trades_accuracy_for_latency():
    records = [record("0", 0.90, kb=50, ms=8.0), record("1", 0.86, kb=50, ms=1.0)]
    assert choose_best(records, ObjectiveConfig(kind="score", latency_weight=0.0)).trial_id == "0"
    # 0.90 * 8 ** -0.07 = 0.777 < 0.86
    assert choose_best(records, ObjectiveConfig(kind="score", latency_weight=0.07)).trial_id == "1"


def test_ties_go_to_the_faster_then_smaller_model():
    records = [record("0", 0.9, kb=80, ms=2.0), record("1", 0.9, kb=90, ms=1.0), record("2", 0.9, kb=70, ms=1.0)]
    assert choose_best(records, ObjectiveConfig()).trial_id == "2"


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        Constraints(max_size_kb=0)
    with pytest.raises(ValueError):
        ObjectiveConfig(kind="speed")
