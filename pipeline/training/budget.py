"""How long a run trains: a budget in optimizer steps, derived from the data, and its schedule.

An epoch count means 2,000 steps on one dataset and 170 on another, so the unit is the
optimizer step. The rule (``plan_budget``), per task (``BudgetRule``):

1. wanted steps = at least ``min_steps``, and at least ``min_epochs`` passes over the data;
   at most ``max_epochs`` passes (a tiny dataset is not repeated forever);
2. capped by the time budget (TIME_BUDGET= minutes): steps x the estimated seconds per step
   must fit in it; the estimate times the model's forward pass on one batch before training
   (``estimate_step_seconds``), so the cap follows the machine the run is on; from its third
   epoch the run checks the estimate against the clock, ends earlier if it would overrun and
   extends a plan the estimate cut too short (``BudgetClock``, which re-fits the schedule);
3. rounded up to whole epochs (Keras trains in epochs; validation runs at their ends); down, when
   the time budget set the number. Where passes over the data are short next to the work at an
   epoch's end (validation, the backup for a resume), and the run is estimated to take at least
   ``GROUP_FROM_BUDGET_SHARE`` of its time budget (so that this work would cost it steps), an epoch
   holds several passes, so it lasts at least the rule's ``min_epoch_seconds`` (kept to at least
   ``MIN_PLANNED_EPOCHS`` epochs): 480 photos in batches of 16 are 13 s a pass for the detector,
   of which 2 s went to the epoch's end. A run well inside its budget keeps one pass an epoch: early
   stopping and the best-weight restore then choose among more, finer epochs (grouping sklearn's
   digits, a one-minute run, into epochs of 4 passes cost 0.7 points over 3 seeds).

STEPS= or EPOCHS= replace 1-2 (explicit settings win; the time budget does not cut them).

The learning rate warms up linearly over ``WARMUP_SHARE`` of the steps, then follows a cosine
to ``FINAL_LR_SHARE`` of its peak at the last step (``warmup_cosine``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import keras
import numpy as np
import tensorflow as tf

from common.errors import ConfigError

WARMUP_SHARE = 0.05  # of the planned steps
FINAL_LR_SHARE = 0.01  # the cosine ends at 1 % of the peak learning rate
STEP_OVERHEAD_S = 0.02  # Keras' per-step work (callbacks, the input pipeline hand-off, epoch-end validation
                        # spread over the steps), measured on a 2-core CPU with the small CNN
TIMED_FORWARD_RUNS = 3
MIN_PLANNED_EPOCHS = 20  # an epoch grouping several passes leaves the clock and early stopping this many
GROUP_FROM_BUDGET_SHARE = 0.5  # passes are grouped into epochs only in a run estimated to take this share
                               # of its time budget or more (module docstring, 3)


@dataclass(frozen=True)
class BudgetRule:
    """A task's default budget. min_steps: what a model of the task needs to converge on
    small data; min_epochs/max_epochs: passes over the data; time_budget_min: the wall-clock cap;
    train_to_forward: what a training step costs in forward passes of one batch (measured on a
    2-core CPU: about 3 for the CNN; about 6 for the SSD, whose step adds the loss's hard negative
    mining and depthwise-convolution gradients: 6.1 at 256 px and 6.5 at 224 px on the photo
    benchmark, epoch-end work included; 8 before epochs held several passes); min_epoch_seconds: an
    epoch of a time-budgeted plan holds whole passes over the data until it lasts this long (0: one
    pass an epoch)."""

    min_steps: int
    min_epochs: int
    max_epochs: int
    time_budget_min: float
    train_to_forward: float
    min_epoch_seconds: float = 0.0

    def limit_seconds(self, time_budget_min: float | None = None) -> float:
        """The wall-clock cap in seconds: TIME_BUDGET= minutes when given, else the rule's."""
        return 60.0 * (self.time_budget_min if time_budget_min is None else time_budget_min)


CLASSIFIER_RULE = BudgetRule(min_steps=2000, min_epochs=10, max_epochs=300, time_budget_min=20.0, train_to_forward=3.0,
                             min_epoch_seconds=45.0)
DETECTOR_RULE = BudgetRule(min_steps=4000, min_epochs=10, max_epochs=400, time_budget_min=30.0, train_to_forward=6.0,
                           min_epoch_seconds=45.0)


@dataclass(frozen=True)
class Budget:
    """The plan a run trains to, printed before training and recorded in metrics.json.

    epochs x steps_per_epoch = steps; an epoch is ``passes_per_epoch`` passes over the training data.
    ``reason``: which rule set the number, in words.
    ``est_step_seconds``: None when not estimated (EPOCHS= or STEPS= given and no estimate asked).
    ``limit_s``: the time budget the plan must hold to (``BudgetClock``); None for EPOCHS= / STEPS=.
    ``wanted_epochs``: what the rule asked for before the time cap (the most ``BudgetClock`` may extend to).
    """

    steps_per_epoch: int
    epochs: int
    reason: str
    est_step_seconds: float | None = None
    limit_s: float | None = None
    wanted_epochs: int | None = None
    passes_per_epoch: int = 1

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def est_minutes(self) -> float | None:
        return None if self.est_step_seconds is None else self.steps * self.est_step_seconds / 60.0

    def describe(self) -> str:
        passes = f", {self.passes_per_epoch} passes over the data each" if self.passes_per_epoch > 1 else ""
        line = (f"Training budget: {self.steps} steps ({self.epochs} epochs of {self.steps_per_epoch} steps{passes}); "
                f"{self.reason}")
        if self.est_minutes is not None:
            line += f"; estimated {self.est_minutes:.1f} min ({self.est_step_seconds * 1000:.0f} ms/step)"
        return line

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict) -> "Budget":
        return cls(**{k: d.get(k) for k in ("steps_per_epoch", "epochs", "reason", "est_step_seconds", "limit_s",
                                            "wanted_epochs")}, passes_per_epoch=d.get("passes_per_epoch", 1))

    @property
    def fit_epochs(self) -> int:
        """The ``epochs`` to give ``model.fit``: the most a BudgetClock may extend the run to."""
        return max(self.epochs, self.wanted_epochs or 0)

    def epoch_feed(self, dataset):
        """(dataset, steps_per_epoch) for ``model.fit``: the dataset repeated, and the epoch's steps, when an
        epoch holds several passes; as given (one pass an epoch) otherwise."""
        if self.passes_per_epoch == 1:
            return dataset, None
        return dataset.repeat(), self.steps_per_epoch


def check_budget_settings(epochs: int | None, steps: int | None, time_budget_min: float | None) -> None:
    """ConfigError for EPOCHS= / STEPS= / TIME_BUDGET= values no plan can honour (every task's config)."""
    if epochs is not None and steps is not None:
        raise ConfigError("EPOCHS= and STEPS= both given; choose one")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"EPOCHS={epochs}: must be at least 1")
    if steps is not None and steps < 1:
        raise ConfigError(f"STEPS={steps}: must be at least 1")
    if time_budget_min is not None and not time_budget_min > 0:
        raise ConfigError(f"TIME_BUDGET={time_budget_min}: must be a positive number of minutes")


def plan_budget(train_examples: int, batch_size: int, rule: BudgetRule, *, epochs: int | None = None,
                steps: int | None = None, time_budget_min: float | None = None,
                step_seconds: float | None = None) -> Budget:
    """The run's budget (see the module docstring for the rule).

    epochs / steps: explicit EPOCHS= / STEPS= (at most one); time_budget_min: TIME_BUDGET=, else the
    rule's; step_seconds: the estimated seconds per optimizer step (None: no time cap).
    """
    if epochs is not None and steps is not None:
        raise ValueError("give EPOCHS= or STEPS=, not both")
    per_epoch = max(1, math.ceil(train_examples / batch_size))
    if epochs is not None:
        return Budget(per_epoch, epochs, "EPOCHS= as given", step_seconds)
    if steps is not None:
        return Budget(per_epoch, max(1, math.ceil(steps / per_epoch)), f"STEPS={steps} in whole epochs", step_seconds)
    wanted = max(rule.min_steps, rule.min_epochs * per_epoch)
    reason = (f"at least {rule.min_steps} steps" if rule.min_steps >= rule.min_epochs * per_epoch
              else f"at least {rule.min_epochs} epochs")
    if wanted > rule.max_epochs * per_epoch:
        wanted, reason = rule.max_epochs * per_epoch, f"at most {rule.max_epochs} epochs of this small dataset"
    budget_min = rule.time_budget_min if time_budget_min is None else time_budget_min
    limit_s = rule.limit_seconds(time_budget_min)
    wanted_passes = passes = math.ceil(wanted / per_epoch)
    capped = step_seconds is not None and step_seconds > 0 and int(limit_s / step_seconds) < wanted
    if capped:  # whole passes that fit: rounded down, so the cap holds
        passes, reason = max(1, int(limit_s / step_seconds) // per_epoch), f"capped by the {budget_min:g} min time budget"
    near_limit = step_seconds and wanted * step_seconds >= GROUP_FROM_BUDGET_SHARE * limit_s
    group = _passes_per_epoch(per_epoch * step_seconds, passes, rule) if near_limit else 1
    wanted_epochs = math.ceil(wanted_passes / group)
    epochs = max(1, passes // group) if capped else wanted_epochs
    return Budget(per_epoch * group, epochs, reason, step_seconds, limit_s, wanted_epochs, group)


def _passes_per_epoch(pass_seconds: float, passes: int, rule: BudgetRule) -> int:
    """Passes over the data an epoch holds: enough for ``rule.min_epoch_seconds``, while the plan keeps
    MIN_PLANNED_EPOCHS epochs."""
    if pass_seconds <= 0 or rule.min_epoch_seconds <= 0:
        return 1
    return max(1, min(math.ceil(rule.min_epoch_seconds / pass_seconds), passes // MIN_PLANNED_EPOCHS))


@keras.saving.register_keras_serializable(package="vision_toolkit")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 10 % of ``peak_lr`` over WARMUP_SHARE of the steps, then cosine decay to
    FINAL_LR_SHARE of it at ``total_steps``.

    The total is a variable, so ``BudgetClock`` can re-plan a run in progress and the decay still
    reaches its floor at the new last step.
    """

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int | None = None):
        super().__init__()
        total = max(int(total_steps), 2)
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps) if warmup_steps is not None else max(1, int(round(WARMUP_SHARE * total)))
        self.total_steps = tf.Variable(float(total), trainable=False, dtype=tf.float32, name="total_steps")

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(self.warmup_steps)
        start = 0.1 * self.peak_lr
        warm = start + (self.peak_lr - start) * step / warmup
        progress = tf.clip_by_value((step - warmup) / tf.maximum(self.total_steps - warmup, 1.0), 0.0, 1.0)
        cosine = 0.5 * (1.0 + tf.cos(np.pi * progress))
        decayed = self.peak_lr * (FINAL_LR_SHARE + (1.0 - FINAL_LR_SHARE) * cosine)
        return tf.where(step < warmup, warm, decayed)

    def set_total(self, total_steps: int) -> None:
        self.total_steps.assign(float(max(int(total_steps), self.warmup_steps + 1)))

    def get_config(self) -> dict:
        return {"peak_lr": self.peak_lr, "total_steps": int(self.total_steps.numpy()),
                "warmup_steps": self.warmup_steps}


def warmup_cosine(peak_lr: float, total_steps: int) -> WarmupCosine:
    """The schedule every training run uses (see WarmupCosine)."""
    return WarmupCosine(peak_lr, total_steps)


class BudgetClock(keras.callbacks.Callback):
    """Holds a budget to its clock. From the end of the third epoch (the first one traces the model and
    is not measured) it projects the run's end from the measured seconds per epoch:

    * at every check, a plan that would overrun ``limit_s`` is shortened (the limit is a ceiling: a
      run of the 30-min default ends inside 30 min);
    * a plan that would end well inside it (by SLACK, so that the two never alternate) is extended
      to what the clock affords (never past what the rule wanted, ``wanted_epochs``): at the first
      check, and later while the run is in the first half of its plan and the extension adds at
      least LATE_EXTENSION of it (or restores all the rule wanted). A pace measured
      on a busy moment (another job at the first check) then no longer cuts the whole run short, while
      the decay, re-fitted only while the learning rate is still near its peak and by a real amount,
      does not move back and forth.

    The schedule is re-fitted to the new end each time. ``on_replan(budget)`` is told the new plan (the
    run keeps it in RUN/.resume for a resume). ``model.fit`` must be given ``budget.fit_epochs``."""

    SLACK = 1.05
    MEASURE_EPOCHS = 2  # epochs measured (after the first) before the plan is checked
    LATE_EXTENSION = 0.25  # after the first check, an extension must add this share of the plan

    def __init__(self, budget: Budget, schedule: WarmupCosine, limit_s: float, on_replan=None,
                 first_epoch: int = 0):
        super().__init__()
        self.budget, self.schedule, self.limit_s = budget, schedule, limit_s
        self.on_replan = on_replan
        self.first_epoch = first_epoch
        self.epochs = budget.epochs
        self.first_reason = budget.reason
        self.checked = False
        self._start = self._measure_from = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1 - self.first_epoch
        if done == 1:
            self._measure_from = time.perf_counter()
        elif done >= 1 + self.MEASURE_EPOCHS:
            self._check(epoch, done)
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True

    def _check(self, epoch: int, done: int) -> None:
        per_epoch = (time.perf_counter() - self._measure_from) / (done - 1)
        elapsed = time.perf_counter() - self._start
        projected = elapsed + per_epoch * (self.epochs - epoch - 1)
        affordable = min(epoch + 1 + max(0, int((self.limit_s - elapsed) / per_epoch)), self.budget.fit_epochs)
        overruns = projected > self.limit_s
        # later: a real amount, or all that is left of what the rule wanted
        worth = self.epochs + 1 if not self.checked else min(self.epochs * (1 + self.LATE_EXTENSION),
                                                             self.budget.fit_epochs)
        early = not self.checked or epoch + 1 <= self.epochs / 2
        extends = (early and projected < self.limit_s / self.SLACK and affordable >= worth
                   and affordable > self.epochs)  # a plan already whole is not re-planned
        self.checked = True
        if not (overruns or extends):
            return
        self.epochs = max(epoch + 2, affordable) if extends else max(epoch + 1, affordable)
        seconds = per_epoch / self.budget.steps_per_epoch
        self.budget = replace(self.budget, epochs=self.epochs, est_step_seconds=seconds,
                              reason=f"{self.first_reason}; re-planned after {done} epochs at "
                                     f"{seconds * 1000:.0f} ms/step")
        self.schedule.set_total(self.budget.steps)
        print(self.budget.describe(), flush=True)
        if self.on_replan is not None:
            self.on_replan(self.budget)


def estimate_step_seconds(model, batch_size: int, image_size: int, rule: BudgetRule) -> float:
    """Seconds per optimizer step, estimated as ``rule.train_to_forward`` x the median time of the
    model's forward pass on one batch (after a warm-up call), plus STEP_OVERHEAD_S. Cheap next to
    tracing a training step, and it measures the machine the run is on."""
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch_size, image_size, image_size, 3)),
                         tf.float32)
    forward(images)  # trace and warm up
    times = []
    for _ in range(TIMED_FORWARD_RUNS):
        start = time.perf_counter()
        forward(images)
        times.append(time.perf_counter() - start)
    return rule.train_to_forward * float(np.median(times)) + STEP_OVERHEAD_S


def budget_clock(budget: Budget, schedule: WarmupCosine, *, resuming: bool, on_replan=None,
                 first_epoch: int = 0) -> list:
    """[BudgetClock] for a run whose plan came from the rule and an estimate, in its first session;
    [] otherwise (EPOCHS= / STEPS=; a multi-worker run, whose workers must agree without talking; a
    resumed run, whose elapsed time before the kill is unknown)."""
    if resuming or budget.limit_s is None or budget.est_step_seconds is None:
        return []
    return [BudgetClock(budget, schedule, budget.limit_s, on_replan=on_replan, first_epoch=first_epoch)]

