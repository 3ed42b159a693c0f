"""The step budget's arithmetic and its schedule (pipeline.training.budget)."""
import math

import pytest

import tensorflow as tf

from pipeline.training.budget import (FINAL_LR_SHARE, MIN_PLANNED_EPOCHS, WARMUP_SHARE, Budget, BudgetClock,
                                      BudgetRule, budget_clock, plan_budget, warmup_cosine)

RULE = BudgetRule(min_steps=2000, min_epochs=10, max_epochs=300, time_budget_min=20.0, train_to_forward=3.0)


def test_a_small_dataset_gets_the_minimum_steps_in_whole_epochs():
    b = plan_budget(1400, 64, RULE)  # 22 steps an epoch
    assert b.steps_per_epoch == 22
    assert b.epochs == math.ceil(2000 / 22) == 91
    assert b.steps >= 2000 and b.steps - 2000 < 22
    assert "2000 steps" in b.reason


def test_a_large_dataset_gets_the_minimum_epochs():
    b = plan_budget(64_000, 64, RULE)  # 1000 steps an epoch: 10 epochs beat 2000 steps
    assert (b.epochs, b.steps) == (10, 10_000)
    assert "10 epochs" in b.reason


def test_a_tiny_dataset_is_not_repeated_forever():
    b = plan_budget(50, 64, RULE)  # 1 step an epoch
    assert (b.epochs, b.steps) == (300, 300)
    assert "300 epochs" in b.reason


def test_the_time_budget_caps_the_steps():
    b = plan_budget(64_000, 64, RULE, step_seconds=0.5)  # 20 min at 0.5 s: 2400 steps, 3 epochs
    assert b.epochs == 2 and b.steps <= 2400
    assert "time budget" in b.reason
    assert b.est_minutes == pytest.approx(b.steps * 0.5 / 60)
    longer = plan_budget(64_000, 64, RULE, step_seconds=0.5, time_budget_min=60)
    assert longer.epochs == 7  # 7200 steps fit in an hour


def test_explicit_epochs_and_steps_win_over_the_rule_and_the_clock():
    assert plan_budget(1400, 64, RULE, epochs=3, step_seconds=100.0).epochs == 3
    b = plan_budget(1400, 64, RULE, steps=100, step_seconds=100.0)
    assert b.epochs == 5 and b.steps == 110  # rounded up to whole epochs
    with pytest.raises(ValueError):
        plan_budget(1400, 64, RULE, epochs=3, steps=100)


def test_a_budget_round_trips_through_json():
    b = plan_budget(1400, 64, RULE, step_seconds=0.03)
    assert Budget.from_dict(b.to_dict()) == b
    assert "estimated" in b.describe() and str(b.steps) in b.describe()


GROUPING = BudgetRule(min_steps=4000, min_epochs=10, max_epochs=400, time_budget_min=30.0, train_to_forward=8.0,
                      min_epoch_seconds=45.0)


def test_short_passes_are_grouped_into_epochs_of_at_least_the_rules_seconds():
    b = plan_budget(480, 16, GROUPING, step_seconds=0.3)  # 30 steps, 9 s a pass
    assert b.passes_per_epoch == 5 and b.steps_per_epoch == 150  # 45 s an epoch
    assert b.steps >= 4000 and b.steps - 4000 < 150
    assert b.wanted_epochs == b.epochs == 27
    assert "5 passes over the data each" in b.describe()
    capped = plan_budget(480, 16, GROUPING, step_seconds=0.6)  # 3000 steps fit in 30 min: 100 passes
    assert capped.passes_per_epoch == 3 and capped.steps <= 3000 and capped.steps > 3000 - capped.steps_per_epoch
    assert capped.wanted_epochs * capped.steps_per_epoch >= 4000  # what a clock may extend it to


def test_grouping_keeps_enough_epochs_and_never_touches_explicit_or_untimed_plans():
    few = plan_budget(16_000, 16, GROUPING, step_seconds=0.01)  # 10 s a pass, but only 10 passes wanted
    assert few.passes_per_epoch == 1 and few.epochs == 10
    # 1 s a pass, 40 passes wanted: 40 s, most of a 1-min budget
    some = plan_budget(1600, 16, GROUPING, step_seconds=0.01, time_budget_min=1.0)
    assert some.passes_per_epoch == 40 // MIN_PLANNED_EPOCHS and some.epochs >= MIN_PLANNED_EPOCHS
    assert plan_budget(480, 16, GROUPING).passes_per_epoch == 1  # no estimate
    assert plan_budget(480, 16, GROUPING, epochs=7, step_seconds=0.3).steps_per_epoch == 30
    assert plan_budget(480, 16, RULE, step_seconds=0.3).passes_per_epoch == 1  # the rule groups nothing


def test_a_run_well_inside_its_time_budget_keeps_one_pass_an_epoch():
    # sklearn's digits: 4,000 steps of 30 ms are 2 of the 30 minutes, so the epoch-end work costs no steps
    quick = plan_budget(1400, 16, GROUPING, step_seconds=0.03)
    assert quick.passes_per_epoch == 1 and quick.steps_per_epoch == 88 and quick.steps >= 4000
    # the same data at 0.3 s a step takes 20 of the 30 minutes: grouped
    assert plan_budget(1400, 16, GROUPING, step_seconds=0.3).passes_per_epoch > 1
    assert plan_budget(1400, 16, GROUPING, step_seconds=0.3, time_budget_min=300).passes_per_epoch == 1


def test_an_epoch_of_several_passes_feeds_its_steps_from_the_repeated_data():
    batches = tf.data.Dataset.range(10).batch(4)  # 3 batches a pass
    one = Budget(steps_per_epoch=3, epochs=2, reason="")
    assert one.epoch_feed(batches) == (batches, None)
    grouped = Budget(steps_per_epoch=6, epochs=2, reason="", passes_per_epoch=2)
    feed, steps = grouped.epoch_feed(batches)
    assert steps == 6
    assert [len(b) for b in feed.take(2 * steps)] == [4, 4, 2] * 4


def test_a_budget_saved_before_grouping_reads_as_one_pass_an_epoch():
    d = plan_budget(1400, 64, RULE, step_seconds=0.03).to_dict()
    del d["passes_per_epoch"]
    assert Budget.from_dict(d).passes_per_epoch == 1


def test_the_schedule_warms_up_then_decays_to_its_floor():
    peak, total = 1e-2, 1000
    lr = warmup_cosine(peak, total)
    values = [float(lr(step)) for step in range(0, total + 1, 10)]
    warmup_end = int(WARMUP_SHARE * total)
    assert values[0] == pytest.approx(0.1 * peak)
    assert float(lr(warmup_end)) == pytest.approx(peak, rel=1e-3)
    assert max(values) == pytest.approx(peak, rel=1e-3)
    after = values[warmup_end // 10:]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))  # never rises after the warm-up
    assert float(lr(total)) == pytest.approx(FINAL_LR_SHARE * peak, rel=1e-3)


class FakeModel:
    stop_training = False


def test_the_clock_shortens_a_run_that_would_overrun_its_time_budget(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("pipeline.training.budget.time.perf_counter", lambda: now[0])
    budget = plan_budget(1000, 100, RULE, step_seconds=0.01, time_budget_min=1.0)  # 10 steps an epoch
    assert budget.epochs == 200 and budget.limit_s == 60.0  # the rule's 2000 steps fit the estimate
    schedule = warmup_cosine(1e-2, budget.steps)
    replanned = []
    clock = BudgetClock(budget, schedule, budget.limit_s, on_replan=replanned.append)
    clock._model = FakeModel()
    monkeypatch.setattr(BudgetClock, "model", property(lambda self: self._model), raising=False)
    clock.on_train_begin()
    epoch_seconds = [10.0, 1.0, 1.0]  # tracing, then 0.1 s a step: 10x the estimate
    for epoch, seconds in enumerate(epoch_seconds):
        now[0] += seconds
        clock.on_epoch_end(epoch)
    # 12 s gone, 1 s an epoch: 48 more epochs fit in the minute
    assert clock.epochs == 51 and replanned and replanned[0].epochs == 51
    assert replanned[0].est_step_seconds == pytest.approx(0.1) and "re-planned" in replanned[0].reason
    assert float(schedule.total_steps.numpy()) == 510
    assert float(schedule(510)) == pytest.approx(FINAL_LR_SHARE * 1e-2, rel=1e-3)  # the decay ends at the new end
    for epoch in range(3, 51):
        now[0] += 1.0
        clock.on_epoch_end(epoch)
        assert clock.model.stop_training == (epoch == 50)


def test_the_clock_leaves_a_run_on_time_and_explicit_budgets_alone(monkeypatch):
    budget = plan_budget(1000, 100, RULE, step_seconds=0.01, time_budget_min=60.0)
    schedule = warmup_cosine(1e-2, budget.steps)
    assert budget_clock(plan_budget(1000, 100, RULE, epochs=5), schedule, resuming=False) == []
    assert budget_clock(budget, schedule, resuming=True) == []
    now = [0.0]
    monkeypatch.setattr("pipeline.training.budget.time.perf_counter", lambda: now[0])
    [clock] = budget_clock(budget, schedule, resuming=False)
    clock.on_train_begin()
    for epoch in range(3):
        now[0] += 0.1
        clock.on_epoch_end(epoch)
    assert clock.epochs == budget.epochs and float(schedule.total_steps.numpy()) == budget.steps


def test_the_clock_extends_a_time_capped_run_that_would_finish_early_but_not_past_the_rule(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("pipeline.training.budget.time.perf_counter", lambda: now[0])
    budget = plan_budget(1000, 100, RULE, step_seconds=0.3, time_budget_min=1.0)  # estimate: 200 steps fit
    assert (budget.epochs, budget.wanted_epochs, budget.fit_epochs) == (20, 200, 200)
    [clock] = budget_clock(budget, warmup_cosine(1e-2, budget.steps), resuming=False)
    clock.on_train_begin()
    for epoch, seconds in enumerate([5.0, 0.5, 0.5]):  # really 0.05 s a step: 6x faster than estimated
        now[0] += seconds
        clock.on_epoch_end(epoch)
    assert clock.epochs == 3 + int((60 - 6) / 0.5) == 111  # what fits in the minute, below the rule's 200
    assert float(clock.schedule.total_steps.numpy()) == 1110


def test_a_run_cut_on_a_busy_moment_is_extended_when_its_pace_recovers_in_its_first_half(monkeypatch):
    """The first check lands on a slow patch (another job on the CPU) and shortens the plan; once the
    pace is back, the clock extends it again while the run is in its first half, but not for a few
    epochs, and never in its second half."""
    now = [0.0]
    monkeypatch.setattr("pipeline.training.budget.time.perf_counter", lambda: now[0])
    budget = plan_budget(1000, 100, RULE, step_seconds=0.1, time_budget_min=1.0)  # 10 steps an epoch
    assert budget.epochs == 60 and budget.fit_epochs == 200
    [clock] = budget_clock(budget, warmup_cosine(1e-2, budget.steps), resuming=False)
    clock._model = FakeModel()
    monkeypatch.setattr(BudgetClock, "model", property(lambda self: self._model), raising=False)
    clock.on_train_begin()
    paces = [5.0, 2.0, 2.0] + [0.5] * 200  # traced; 2 s an epoch while busy, then 0.5 s
    epoch = 0
    plans = []
    while not clock.model.stop_training:
        now[0] += paces[epoch]
        clock.on_epoch_end(epoch)
        plans.append(clock.epochs)
        epoch += 1
    assert plans[2] == 3 + int((60 - 9) / 2.0) == 28  # cut at the first check
    assert max(plans) > 28 and plans[-1] == epoch  # extended later, and it ran to its plan
    changes = [k for k in range(1, len(plans)) if plans[k] != plans[k - 1]]
    assert all(k + 1 <= plans[k - 1] / 2 for k in changes[1:])  # every later extension in the first half
    assert all(plans[k] >= 1.25 * plans[k - 1] for k in changes[1:])  # by a real amount
    assert now[0] <= 60  # still within the time budget


def test_a_late_extension_may_be_small_when_it_restores_the_whole_plan(monkeypatch):
    """Cut at the first check to a little less than the rule wanted: once the pace is back, the clock
    gives the run all the rule wanted, though that adds less than a quarter."""
    now = [0.0]
    monkeypatch.setattr("pipeline.training.budget.time.perf_counter", lambda: now[0])
    budget = plan_budget(1000, 100, RULE, step_seconds=0.02, time_budget_min=1.0)
    assert budget.epochs == budget.fit_epochs == 200  # the rule's 2,000 steps fit the estimate
    [clock] = budget_clock(budget, warmup_cosine(1e-2, budget.steps), resuming=False)
    clock._model = FakeModel()
    monkeypatch.setattr(BudgetClock, "model", property(lambda self: self._model), raising=False)
    clock.on_train_begin()
    paces = [1.0, 0.34, 0.34] + [0.2] * 300  # busy at the first check (0.034 s a step), then 0.02 s
    replans = []
    clock.on_replan = replans.append
    epoch = 0
    while not clock.model.stop_training:
        now[0] += paces[epoch]
        clock.on_epoch_end(epoch)
        if epoch == 2:
            cut = clock.epochs
        epoch += 1
    assert cut < 200 <= cut * 1.25 and epoch == 200  # cut by less than a quarter, then restored whole
    assert [b.epochs for b in replans] == [cut, 200]  # once restored, the whole plan is not re-planned again
