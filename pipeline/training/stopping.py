"""Early stopping that cannot fire on noise.

Keras' EarlyStopping compares raw epoch values: on a validation split of a hundred images one
lucky epoch, then a few unlucky ones, end a run whose training accuracy is still rising. This
one differs in three ways:

* it judges an exponential moving average of the monitored value (``SMOOTHING``), not the raw one;
* it cannot stop before ``MIN_BUDGET_SHARE`` of the planned steps have run;
* its patience is counted in optimizer steps (``patience_steps``), converted to whole epochs.

It restores the weights of the best smoothed epoch when training ends, stopped early or not; an
epoch as good as the best, later in the schedule (at a lower learning rate), takes its place.
Patience counts only strict improvements.
"""
from __future__ import annotations

import math

import keras
import numpy as np

MIN_BUDGET_SHARE = 0.5  # no early stop before half the planned steps
SMOOTHING = 0.5  # weight of the previous average in the moving average
DEFAULT_PATIENCE_STEPS = 1000


def smooth(values: list[float], smoothing: float = SMOOTHING) -> list[float]:
    """Exponential moving average of ``values`` (the first value starts it)."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else smoothing * out[-1] + (1.0 - smoothing) * v)
    return out


class BudgetEarlyStopping(keras.callbacks.Callback):
    """monitor/mode as Keras' EarlyStopping; budget_epochs: the planned epochs; steps_per_epoch: to turn
    ``patience_steps`` into epochs. ``stopped_epoch`` is the 1-based epoch it stopped at (0: never)."""

    def __init__(self, monitor: str, mode: str, *, budget_epochs: int, steps_per_epoch: int,
                 patience_steps: int = DEFAULT_PATIENCE_STEPS, min_share: float = MIN_BUDGET_SHARE,
                 smoothing: float = SMOOTHING):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {mode!r}")
        self.monitor, self.mode, self.smoothing = monitor, mode, smoothing
        self.patience = max(1, math.ceil(patience_steps / max(steps_per_epoch, 1)))
        self.first_stop_epoch = max(1, math.ceil(min_share * budget_epochs))  # 1-based
        self.average: float | None = None
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch = 0

    def _better(self, value: float, *, or_equal: bool = False) -> bool:
        if self.best is None:
            return True
        if or_equal and value == self.best:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        value = float(value)
        self.average = value if self.average is None else self.smoothing * self.average + (1 - self.smoothing) * value
        improved = self._better(self.average)
        if self._better(self.average, or_equal=True):
            self.best, self.best_epoch = self.average, epoch + 1
            self.best_weights = self.model.get_weights()
        if improved:
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience and epoch + 1 >= self.first_stop_epoch:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
