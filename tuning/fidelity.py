"""How long a trial trains, in optimizer steps: the rungs of a multi-fidelity search.

A trial that ends near chance ranks configurations by noise, so the unit is the one `make train`
uses, the optimizer step, and the top rung is what `make train` runs on the trials' data (its step
budget, ``pipeline.training.budget.plan_budget``; STEPS= or EPOCHS= replace it).

The top rung is split into ``UNITS`` equal units of ``unit_steps`` steps; Keras Tuner counts
them as its "epochs" (``steps_per_epoch=unit_steps``):

    hyperband (the default)  Hyperband with factor 3 over 1, 3 and 9 units: many configurations
                             train 1/9 of the budget, the best third of them go on to 1/3, the best
                             of those to the whole budget (Li et al., 2018)
    bayesian, random, grid   every trial trains the whole top rung

Every trial's learning rate warms up and decays to its last step (a cosine over the steps it
trains), as `make train`'s does, so a short trial is scored as a finished, annealed model and not
in the middle of a schedule. Only trials trained at the top rung compete to be shipped
(``tuning.objective.contenders``); the lower rungs decide which configurations get there, and
stand in only when no top-rung trial meets MAX_SIZE_KB / MAX_LATENCY_MS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.training.budget import BudgetRule, plan_budget

UNITS = 9        # the top rung, in units (Hyperband's max_epochs)
FACTOR = 3       # Hyperband's reduction factor: rungs of 1, 3 and 9 units


@dataclass(frozen=True)
class Fidelity:
    """top_steps: the top rung, in optimizer steps; units: how many units it is cut into."""

    top_steps: int
    units: int = UNITS

    @property
    def unit_steps(self) -> int:
        return max(1, math.ceil(self.top_steps / self.units))

    @property
    def full_steps(self) -> int:
        """What a top-rung trial trains: ``top_steps`` rounded up to whole units."""
        return self.steps(self.units)

    def steps(self, units: int) -> int:
        """Optimizer steps of ``units`` units."""
        return units * self.unit_steps

    def trial_steps(self, values: dict) -> int:
        """Steps one run of a trial trains, from its hyperparameter values: Hyperband's units beyond
        those it continues from (``tuner/epochs`` - ``tuner/initial_epoch``), else the top rung."""
        return self.steps(int(values.get("tuner/epochs", self.units)) - int(values.get("tuner/initial_epoch", 0)))

    def rungs(self, tuner: str) -> list[int]:
        """The budgets a trial may be trained to, in steps, lowest first."""
        if tuner != "hyperband":
            return [self.steps(self.units)]
        out, units = [], self.units
        while units >= 1:
            out.append(self.steps(units))
            units = units // FACTOR
        return sorted(out)

    def describe(self, tuner: str) -> str:
        rungs = self.rungs(tuner)
        if len(rungs) == 1:
            return f"{rungs[0]:,} steps per trial"
        return "rungs of " + ", ".join(f"{s:,}" for s in rungs) + " steps (Hyperband, factor 3)"


def plan_fidelity(rule: BudgetRule, train_examples: int, batch_size: int, *, steps: int | None = None,
                  epochs: int | None = None) -> Fidelity:
    """The top rung: `make train`'s budget for ``train_examples`` images (no time cap: a trial's time is
    the search's to plan), or STEPS= / EPOCHS= as given."""
    budget = plan_budget(train_examples, batch_size, rule, steps=steps, epochs=epochs)
    return Fidelity(top_steps=steps if steps is not None else budget.steps)
