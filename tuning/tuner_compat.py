"""Workarounds for Keras Tuner's private internals, in one place (STYLE: one ``*_compat.py`` per library).

Tested with keras-tuner 1.4.8 (``TESTED_VERSION``). ``check_keras_tuner()`` runs before a search
and fails at once, naming the version, when the library changed under us; the fast test
``tests/tuning/test_tuner_compat.py`` fails on a version bump instead of a search failing deep
inside a subprocess. What each works around, and when it can go:

* atomic oracle.json / trial.json / <tuner>.json writes: a kill mid-write left a truncated file
  that no rerun could parse. Delete when Keras Tuner writes them atomically.
* requeue trials left RUNNING on reload, including one whose start reached trial.json but not
  oracle.json (they stayed RUNNING forever). Delete when ``Oracle.reload`` requeues them.
* the grid position saved with the oracle (keras-team/keras-tuner#1055: KeyError in
  ``LinkedList.next`` after a reload). Delete when #1055 is fixed.
* Bayesian optimisation over a discrete space proposing a configuration already trained: an
  untried random one is taken instead. Delete when the oracle skips duplicates.
* Hyperband's ``__init__`` building a second oracle when one is passed; a search started with
  WORKERS=N (chief.json) and rerun without (tuner0.json) starting over, because Keras Tuner reloads
  only when this process's own <tuner_id>.json exists.

And two things Keras Tuner has no option for:

* the first trial of a search is a given configuration (the product default), at full fidelity
  (``DefaultFirstOracle``);
* a process stops asking for trials after a quota, so trials run in fresh processes
  (``TrialQuotaReached``), and the trials a dead process left RUNNING are marked failed
  (``fail_interrupted_trials``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras_tuner as kt
from keras_tuner.src.tuners.gridsearch import LinkedList

from common.run_folder import write_text

TESTED_VERSION = "1.4.8"
# The private names the workarounds below rely on: (object, attribute).
RELIES_ON = (
    (kt.Oracle, "_get_oracle_fname"), (kt.Oracle, "_get_trial_dir"), (kt.Oracle, "_save_trial"),
    (kt.Oracle, "_duplicate"), (kt.oracles.BayesianOptimizationOracle, "_random_populate_space"),
    (kt.Tuner, "_get_tuner_fname"),
    (kt.Tuner, "_is_worker"), (LinkedList, "next"),
)


def check_keras_tuner() -> None:
    """RuntimeError when the installed Keras Tuner is not the one these workarounds were written for."""
    version = kt.__version__
    missing = [f"{owner.__name__}.{name}" for owner, name in RELIES_ON if not hasattr(owner, name)]
    if version != TESTED_VERSION or missing:
        raise RuntimeError(
            f"keras-tuner {version} is installed; tuning/tuner_compat.py works around private internals of "
            f"{TESTED_VERSION}" + (f"; gone: {', '.join(missing)}" if missing else "")
            + ". Check each workaround in its docstring against the new version (keras-team/keras-tuner#1055 "
              "for the grid), then update TESTED_VERSION; requirements.txt pins the tested version.")


def save_state_atomically(path: str, state: dict) -> None:
    """Keras Tuner's state files, written to a temporary name and renamed."""
    write_text(Path(path), json.dumps(state))


class ResumeSafeOracle:
    """Mixin for Keras Tuner oracles.

    * every oracle.json and trial.json is written to a temporary name and renamed, so a kill
      never leaves a truncated file that the next run cannot parse;
    * on reload, a trial left RUNNING is queued to run again, including one whose start was
      saved in its trial.json but not yet in oracle.json (Keras Tuner only requeues the
      trials that oracle.json lists as ongoing; the others would stay RUNNING forever).
    """

    def save(self):
        save_state_atomically(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        save_state_atomically(path, trial.get_state())

    def reload(self):
        super().reload()
        for trial_id in sorted(self.trials):
            if self.trials[trial_id].status == "RUNNING" and trial_id not in self._retry_queue:
                self._retry_queue.append(trial_id)


class DefaultFirstOracle:
    """Mixin for Keras Tuner oracles: the first trials of a new search are ``seed_values`` (set after
    construction, in order; trial 0 is the default model), each trained for ``first_epochs``
    (Hyperband's max_epochs: the top rung). Later trials are the oracle's; Keras Tuner remembers the
    seeds' values, so none repeats them."""

    seed_values: tuple[dict, ...] = ()
    first_epochs: int | None = None

    def populate_space(self, trial_id):
        if len(self.trials) < len(self.seed_values):
            values = dict(self.seed_values[len(self.trials)])
            if self.first_epochs is not None:
                # Outside every Hyperband bracket: trained once, at the top rung, never promoted.
                values.update({"tuner/epochs": self.first_epochs, "tuner/initial_epoch": 0,
                               "tuner/bracket": -1, "tuner/round": 0})
            return {"status": "RUNNING", "values": values}
        return super().populate_space(trial_id)


class TrialQuotaReached(Exception):
    """This process has run its share of trials; a fresh one takes the next."""


def fail_interrupted_trials(project: Path, message: str) -> list[str]:
    """Mark FAILED, with ``message``, every trial that the oracle lists as running: what a trial
    process that died (killed, out of memory, a crash in native code) left behind. Without this,
    the next process would rerun the trial that killed it. Returns their ids."""
    oracle_file = Path(project) / "oracle.json"
    if not oracle_file.exists():
        return []
    state = json.loads(oracle_file.read_text(encoding="utf-8"))
    trials = {}
    for trial_file in Path(project).glob("trial_*/trial.json"):
        trial = json.loads(trial_file.read_text(encoding="utf-8"))
        trials[trial["trial_id"]] = (trial_file, trial)
    listed = set(state.get("ongoing_trials", {}).values()) | set(state.get("retry_queue", []))
    # Also a trial whose start reached trial.json but not oracle.json.
    failed = sorted(t for t, (_, trial) in trials.items() if t in listed or trial["status"] == "RUNNING")
    for trial_id in failed:
        trial_file, trial = trials[trial_id]
        trial.update(status="FAILED", message=message)
        save_state_atomically(str(trial_file), trial)
    state["ongoing_trials"] = {k: v for k, v in state.get("ongoing_trials", {}).items() if v not in failed}
    state["retry_queue"] = [t for t in state.get("retry_queue", []) if t not in failed]
    state["end_order"] = state.get("end_order", []) + [t for t in failed if t not in state.get("end_order", [])]
    save_state_atomically(str(oracle_file), state)
    return failed


def oracle_classes() -> dict[str, type]:
    """tuner name -> the resume-safe oracle class, whose first trial may be given (DefaultFirstOracle)."""
    class RandomOracle(DefaultFirstOracle, ResumeSafeOracle, kt.oracles.RandomSearchOracle):
        pass

    class BayesianOracle(DefaultFirstOracle, ResumeSafeOracle, kt.oracles.BayesianOptimizationOracle):
        def populate_space(self, trial_id):
            # Over a discrete space the Gaussian process's optimum is often a configuration
            # already trained; Keras Tuner would train it again. Take an untried random one instead.
            response = super().populate_space(trial_id)
            if response.get("values") is not None:
                hps = self.hyperparameters.copy()
                hps.values = dict(response["values"])
                hps.ensure_active_values()
                if self._duplicate(hps.values):
                    return self._random_populate_space()
            return response

    class HyperbandOracle(DefaultFirstOracle, ResumeSafeOracle, kt.oracles.HyperbandOracle):
        pass

    class GridOracle(DefaultFirstOracle, ResumeSafeOracle, kt.oracles.GridSearchOracle):
        """Also saves the grid's position, which Keras Tuner 1.4.8 keeps only in memory
        (keras-team/keras-tuner#1055: KeyError in LinkedList.next after a reload)."""

        def get_state(self):
            state = super().get_state()
            ids = self._ordered_ids
            state["grid"] = {
                "memory": list(ids._memory),
                "next_index": [[k, v] for k, v in ids._next_index.items()],
                "last_index": ids._last_index,
                "populate_next": list(self._populate_next),
            }
            return state

        def set_state(self, state):
            super().set_state(state)
            grid = state.get("grid")
            if grid is None:
                return
            ids = LinkedList()
            ids._memory = list(grid["memory"])
            ids._data_to_index = {data: i for i, data in enumerate(ids._memory)}
            for k, v in grid["next_index"]:
                ids._next_index[k] = v
            ids._last_index = grid["last_index"]
            self._ordered_ids = ids
            self._populate_next = list(grid["populate_next"])

    return {"random": RandomOracle, "bayesian": BayesianOracle, "hyperband": HyperbandOracle, "grid": GridOracle}


def tuner_class(hyperband: bool, max_trials_here: int | None = None) -> type:
    """The base Tuner class of a search (Hyperband's for hyperband), saving atomically and
    never building a second oracle. ``max_trials_here``: after that many trials, ``search`` raises
    TrialQuotaReached before asking for another (None: no quota)."""
    base = kt.Hyperband if hyperband else kt.Tuner

    class Tuner(base):
        def __init__(self, **kwargs):
            kt.Tuner.__init__(self, **kwargs)  # Hyperband's own __init__ would build a second oracle
            self.trials_here = 0

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            self.trials_here += 1

        def pre_create_trial(self):
            # Between trials: the last one is saved, the next not yet created, so a fresh process
            # reloading the store continues exactly here.
            if max_trials_here is not None and self.trials_here >= max_trials_here:
                raise TrialQuotaReached()
            super().pre_create_trial()

        def save(self):
            if not self._is_worker():
                self.oracle.save()
            save_state_atomically(self._get_tuner_fname(), self.get_state())

    return Tuner


def ensure_reload(project: Path) -> None:
    """Make Keras Tuner reload an existing store whoever runs it (chief.json vs tuner0.json); the
    tuner's own state is empty: the oracle's is what counts."""
    tuner_file = Path(project) / f"{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')}.json"
    if (Path(project) / "oracle.json").exists() and not tuner_file.exists():
        write_text(tuner_file, "{}")
