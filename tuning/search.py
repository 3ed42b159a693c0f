"""`make tune`: a Keras Tuner search into RUN/tuning, a report, then the best config retrained into RUN.

TASK=classify searches the CNN (tuning.space.SearchSpace) and ranks trials by
validation accuracy; TASK=detect searches the SSD detector (SSDSearchSpace) and
ranks them by validation COCO mAP@[.5:.95]. Both measure each trial's int8
.tflite (size, latency) and take the same constraints.

Trials train in optimizer steps, the top rung being `make train`'s budget for the data
(tuning.fidelity); Hyperband is the default tuner. Trial 0 is the model `make train` builds, at
the top rung, so every search answers "is the best better than the default?"; only top-rung trials
compete to be shipped, and when none beats the default, the default is what is retrained and shipped.

Order of work, chosen so that a kill at any point is safe to rerun:

1. open the data (prepared once, before any trial process starts), choose what the recipe
   chooses from it (the classifier's input size, the top rung), and check the space builds;
2. decide what RUN/tuning holds: nothing (new), the same search (resume), or another one (error);
3. search: Keras Tuner's oracle and trial store, saved atomically after every change. Trials run
   in fresh processes (tuning.trial_processes), a few each, so memory stays flat and a trial that
   kills its process is recorded as failed while the search goes on. A trial killed with the
   whole search is rerun from its start; finished trials are never rerun;
4. write the report from the trial store;
5. retrain the best configuration on the full train split with `make train`'s recipe into RUN
   (model.keras, labels.txt, config.json, metrics.json, ...), resumable like `make train`;
6. score the default on the test split (trial 0's weights, unless the default is what was retrained)
   and write the report again, opening with default vs best.

Layout of RUN/tuning::

    settings.json              what is searched, and how (written first)
    project/                   Keras Tuner's own store: oracle.json, trial_*/trial.json, checkpoints,
                               and trial_*/runs.log (who ran the trial, one line per run)
    report.md  trials.csv  best_hyperparameters.json  plots/  tensorboard/  default_test.json
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
import keras
import keras_tuner as kt
from keras_tuner.src.engine.trial import Trial

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder, write_json
from common.run_lock import LOCK_FILE
from export.runtime import LATENCY_RUNS
from pipeline.sources.schema import Source
from pipeline.sources.specs import open_source
from tuning import distributed, trial_processes
from tuning.fidelity import FACTOR, UNITS, Fidelity, plan_fidelity
from tuning.objective import (ObjectiveConfig, TrialRecord, choose_best, contenders, default_record,
                              explain_best)
from tuning.report import Comparison, write_report
from tuning.space import SearchSpace, SSDSearchSpace
from tuning.tunables import TASK_NAMES, TaskSearch, describe_seeds, search_named
from tuning.tuner_compat import (TrialQuotaReached, check_keras_tuner, ensure_reload, oracle_classes,
                                 tuner_class)

TUNERS = ("hyperband", "bayesian", "random", "grid")
DEFAULT_TRIALS = {"hyperband": 1 + 13, "bayesian": 6, "random": 6, "grid": 6}  # hyperband: trial 0 + one bracket
TASKS = TASK_NAMES
PROJECT = "project"
RUNS_LOG = "runs.log"
NOT_IDENTITY = ("trials", "trials_per_process")  # settings a rerun may change and still continue the search
FINAL_MODEL_FILES = ("config.json", "labels.txt", "model.keras", "metrics.json", "report.md")
FINAL_MODEL_DIRS = ("plots", "samples", "logs", ".resume")


@dataclass(frozen=True)
class TuneConfig:
    """Everything that determines a search; saved as RUN/tuning/settings.json.

    task: the task searched, as recorded ("classify": the CNN; "detect": the SSD detector); its
          ``search`` (tuning.tunables) gives the space, the quality and the per-task defaults.
    tuner: hyperband (multi-fidelity, the default), bayesian, random or grid.
    trials: the trial budget; None: trial 0 and one Hyperband bracket (14), or 6 for the others.
    steps: the top rung in optimizer steps (tuning.fidelity); None: `make train`'s budget for the
           trials' data. ``epochs`` sets it in passes over that data instead (at most one of the two).
           Settled by ``resolve`` before the search, so settings.json holds the number.
    image_size: the classifier's input side (None: as `make train` chooses it from the data); the
                detector's input size is in its space.
    model: the classifier searched: None or "cnn" (the CNN), "mobilenetv2" (MobileNetV2, from ``weights``:
           imagenet, none or a file, as `make train WEIGHTS=`).
    batch_size: None: 64 (classify) or 16 (detect), as `make train` uses.
    trial_train_examples: the train split is cut to this many images for trials (0: all of it;
        None: the task's, 10000 classify, 3000 detect, so a few thousand photos are all used); the
        final retrain always uses all of it.
    final_epochs: for the retrain of the best configuration; None: what `make train` uses
                  for this data and task, so the tuned model is trained as long as a default
                  one and the two compare fairly.
    trials_per_process: trials a fresh process runs before the next takes over (None: the task's).
    space: a SearchSpace (classify) or SSDSearchSpace (detect); None: the task's default.
    """

    data: str = "shapes"
    task: str = "classify"
    tuner: str = "hyperband"
    trials: int | None = None
    epochs: int | None = None
    steps: int | None = None
    seed: int = 0
    image_size: int | None = None
    model: str | None = None
    weights: str = "imagenet"
    batch_size: int | None = None
    trial_train_examples: int | None = None
    final_epochs: int | None = None
    trials_per_process: int | None = None
    latency_runs: int = LATENCY_RUNS
    space: SearchSpace | SSDSearchSpace | None = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self):
        search = search_named(self.task, self.model)
        if self.tuner not in TUNERS:
            raise ConfigError(f"TUNER={self.tuner}: expected one of {', '.join(TUNERS)}")
        for name in ("batch_size", "trial_train_examples", "trials_per_process"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(search, name))
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("EPOCHS= and STEPS= both set the trials' top rung; choose one")
        if self.space is None:
            object.__setattr__(self, "space", search.space_type())
        if not isinstance(self.space, search.space_type):
            raise ConfigError(f"TASK={self.task} searches a {search.space_type.__name__}, "
                              f"not a {type(self.space).__name__}")
        if self.objective.quality != search.quality:
            object.__setattr__(self, "objective", replace(self.objective, quality=search.quality))
        if self.trials is None:  # the tuner's default, and the seed trials beyond trial 0 on top of it
            seeds = len(search.seed_values(self))
            object.__setattr__(self, "trials", DEFAULT_TRIALS[self.tuner] + max(0, seeds - 1))
        for name in ("trials", "epochs", "steps", "final_epochs", "batch_size", "latency_runs", "trials_per_process"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.trial_train_examples < 0:
            raise ConfigError(f"trial_train_examples={self.trial_train_examples}: must be >= 0")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["space"] = self.space.to_dict()
        d["objective"] = self.objective.to_dict()
        if d["model"] is None:
            # Written only for a MobileNetV2 search, so the settings.json of a CNN or SSD search (every
            # search made before MODEL= existed) is unchanged and such searches still resume.
            del d["model"], d["weights"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TuneConfig":
        d = dict(d)
        d["space"] = search_named(d.setdefault("task", "classify"), d.get("model")).space_type.from_dict(d["space"])
        d["objective"] = ObjectiveConfig.from_dict(d["objective"])
        return cls(**d)

    def search_identity(self) -> dict:
        """The settings a resumed search must share with the first run (the trial budget may grow,
        and how many trials a process runs does not change what they compute)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY}

    @property
    def fidelity(self) -> Fidelity:
        if self.steps is None:
            raise ValueError("the top rung is chosen from the data: resolve the config first")
        return Fidelity(self.steps, UNITS)

    def resolve(self, source: Source) -> "TuneConfig":
        """The config with what `make train` would choose from this data settled: the classifier's
        input size and the top rung in steps (``epochs`` becomes steps)."""
        chosen = self.search.resolve(self, source)
        if self.steps is None:
            trial_images = trial_source(source, self.trial_train_examples).split_sizes["train"]
            chosen["steps"] = plan_fidelity(self.search.rule, trial_images, self.batch_size,
                                            epochs=self.epochs).top_steps
            chosen["epochs"] = None
        return replace(self, **chosen)

    @property
    def search(self) -> TaskSearch:
        """The searched task's side of the search (tuning.tunables)."""
        return search_named(self.task, self.model)

    def train_config(self, hyperparameters: dict, *, epochs: int | None = None):
        """The `make train` config of a trial's hyperparameters (epochs None: the final retrain)."""
        return self.search.train_config(self, hyperparameters, epochs=epochs)


@dataclass(frozen=True)
class TuningFolder:
    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"

    @property
    def project(self) -> Path:
        return self.root / PROJECT

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def best(self) -> Path:
        return self.root / "best_hyperparameters.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"


# --- the tuner ---------------------------------------------------------------------------------------

def make_tuner(cfg: TuneConfig, hypermodel, folder: TuningFolder, *, max_trials_here: int | None = None):
    """A Keras Tuner Tuner over ``folder.project``; reloads it when it exists. Its first trial is the
    default model at the top rung; ``max_trials_here``: this process's share (tuner_compat)."""
    check_keras_tuner()
    objective = kt.Objective("objective", direction="max")
    common = dict(objective=objective, seed=cfg.seed, max_retries_per_trial=0, max_consecutive_failed_trials=3)
    oracle_cls = oracle_classes()[cfg.tuner]
    if cfg.tuner == "hyperband":
        oracle = oracle_cls(max_epochs=cfg.fidelity.units, factor=FACTOR, hyperband_iterations=None, **common)
        oracle.max_trials = cfg.trials  # Hyperband has no trial budget of its own: iterate until the base Oracle stops it
        oracle.first_epochs = cfg.fidelity.units
    elif cfg.tuner == "bayesian":
        oracle = oracle_cls(max_trials=cfg.trials, num_initial_points=max(2, min(cfg.trials, cfg.trials // 2)),
                            **common)
    else:
        oracle = oracle_cls(max_trials=cfg.trials, **common)
    oracle.seed_values = tuple(cfg.search.seed_values(cfg))

    class Tuner(tuner_class(cfg.tuner == "hyperband", max_trials_here)):
        def run_trial(self, trial, *args, **kwargs):
            # One line per run of a trial, by whom: shows that no trial ran twice (or, after a
            # kill, that only the interrupted one did), and which worker ran what.
            with open(os.path.join(self.get_trial_dir(trial.trial_id), RUNS_LOG), "a") as f:
                f.write(f"{self.tuner_id} {socket.gethostname()} {os.getpid()}\n")
            print(trial_progress(trial.trial_id, cfg.trials, load_records(folder)), flush=True)
            return super().run_trial(trial, *args, **kwargs)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            keras.backend.clear_session()  # free the trial's graph and weights: memory stays flat
            gc.collect()

    ensure_reload(folder.project)
    return Tuner(oracle=oracle, hypermodel=hypermodel, directory=str(folder.root), project_name=PROJECT,
                 overwrite=False)


def trial_progress(trial_id: str, budget: int, records: list[TrialRecord]) -> str:
    """"Trial 0003 (3 of 6 done); about 4 min left" from the wall times of the finished trials."""
    done = [r for r in records if r.status == "COMPLETED" and r.wall_seconds is not None]
    line = f"Trial {trial_id} ({len(done)} of {budget} done)"
    if done:
        left = max(budget - len(done), 1) * sum(r.wall_seconds for r in done) / len(done)
        line += f"; about {left / 60:.0f} min left" if left >= 90 else f"; about {left:.0f} s left"
    return line


# --- the search ------------------------------------------------------------------------------------

def trial_source(source: Source, examples: int) -> Source:
    """The source with its train split cut to ``examples`` (0: unchanged); for the trials only."""
    if not examples or examples >= source.split_sizes.get("train", 0):
        return source

    def load(split: str):
        ds = source.examples(split)
        return ds.take(examples) if split == "train" else ds

    return replace(source, load_split=load, split_sizes={**source.split_sizes, "train": examples})


def run_trials(cfg: TuneConfig, source: Source, folder: TuningFolder, *, verbose: int = 1,
               max_trials_here: int | None = None) -> bool:
    """Run this process's share of the search: all of it, or ``max_trials_here`` trials. Returns
    True when the search has no trial left to start, False when the quota ended it first."""
    keras.utils.set_random_seed(cfg.seed)
    try:
        cfg.search.search(cfg, lambda hypermodel: make_tuner(cfg, hypermodel, folder, max_trials_here=max_trials_here),
                          trial_source(source, cfg.trial_train_examples), source, 2 if verbose else 0)
    except TrialQuotaReached:
        return False
    return True


def load_records(folder: TuningFolder, quality_metric: str = "val_accuracy") -> list[TrialRecord]:
    """Every trial in the store, in trial-id order, read from its trial.json.

    quality_metric: the trial metric that ranks trials (ObjectiveConfig.quality.metric).
    """
    records = []
    for path in sorted(folder.project.glob("trial_*/trial.json")):
        trial = Trial.load(str(path))

        def metric(name):
            return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None

        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        as_int = lambda v: None if v is None else int(v)  # noqa: E731
        records.append(TrialRecord(
            trial_id=trial.trial_id, status=trial.status, hyperparameters=values, steps=as_int(metric("steps")),
            message=(trial.message or "").strip().splitlines()[-1] if trial.message else None,
            quality=metric(quality_metric), params=as_int(metric("params")),
            int8_bytes=as_int(metric("int8_bytes")), latency_ms=metric("latency_ms"),
            latency_p90_ms=metric("latency_p90_ms"), wall_seconds=metric("wall_seconds"),
            objective=metric("objective"),
        ))
    return records


def prepare_tuning_folder(run: RunFolder, folder: TuningFolder, cfg: TuneConfig, force: bool) -> str:
    """Returns "new" or "resume"; raises when RUN holds something else."""
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"{run.root}: RUN must be a folder, but a file is there")
    if folder.settings.exists():
        saved = json.loads(folder.settings.read_text(encoding="utf-8"))
        saved_identity = {k: v for k, v in saved.items() if k not in NOT_IDENTITY}
        if saved_identity == cfg.search_identity():
            return "resume"
        if not force:
            changed = sorted(k for k in set(saved_identity) | set(cfg.search_identity())
                             if saved_identity.get(k) != cfg.search_identity().get(k))
            raise UserError(f"{folder.root}: holds a search with different settings ({', '.join(changed)}); "
                            f"use another RUN=, or FORCE=1 to replace it")
        _clear_run_folder(run)
    elif run.root.exists() and any(p.name != LOCK_FILE for p in run.root.iterdir()):
        if not force:
            raise UserError(f"{run.root}: already holds a run that was not made by `make tune`; "
                            f"use another RUN=, or FORCE=1 to replace it")
        _clear_run_folder(run)
    return "new"


def _clear_run_folder(run: RunFolder) -> None:
    """Everything in RUN but the lock this command holds (removing it would let a second command in)."""
    for path in run.root.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _clear_final_model(run: RunFolder) -> None:
    for name in FINAL_MODEL_FILES:
        (run.root / name).unlink(missing_ok=True)
    for name in FINAL_MODEL_DIRS:
        shutil.rmtree(run.root / name, ignore_errors=True)


def retrain_best(cfg: TuneConfig, best: TrialRecord, source: Source, run: RunFolder, *, verbose: int = 1) -> dict:
    """Train the best trial's configuration into RUN as `make train` would; returns its metrics.json.

    config.json is written first, as the run folder's contract says: it names what RUN is being
    trained into, so training resumes it (or finds it done) instead of refusing a folder that
    already holds tuning/. A different best (a search given more trials) replaces the model.
    """
    train_cfg = cfg.train_config(best.hyperparameters)
    if run.config.exists() and run.read_config() != train_cfg.to_dict():
        print(f"The best configuration changed; replacing the model in {run.root}")
        _clear_final_model(run)
    if not run.config.exists():
        write_json(run.config, train_cfg.to_dict())
    return cfg.search.retrain(train_cfg, source, run.root, verbose=2 if verbose else 0)


def default_test_quality(cfg: TuneConfig, default: TrialRecord, source: Source, folder: TuningFolder) -> float | None:
    """The default's figure on the test split, from trial 0's weights (trained on the trials' data, for
    the top rung: what `make train` trains when the trials see all the data). Cached in
    RUN/tuning/default_test.json; None when its checkpoint is gone."""
    cache = folder.root / "default_test.json"
    if cache.exists():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("trial_id") == default.trial_id:
            return saved["test"]
    checkpoint = folder.project / f"trial_{default.trial_id}" / "checkpoint.weights.h5"
    if not checkpoint.exists():
        return None
    model = cfg.search.trial_model(cfg, default.hyperparameters, source.num_classes)
    model.load_weights(str(checkpoint))
    test = cfg.search.test_quality(cfg, model, default.hyperparameters, source)
    write_json(cache, {"trial_id": default.trial_id, "test": test})
    keras.backend.clear_session()
    return test


def tune(cfg: TuneConfig, run_dir: Path, *, data_dir: Path | None = None, workers: int = 0, force: bool = False,
         oracle_ip: str = "127.0.0.1", verbose: int = 1) -> dict:
    """Search, report, retrain the best, report again. Returns the best trial's summary.

    Roles: with KERASTUNER_TUNER_ID set this process is one member of a cluster started by
    hand (see README); with ``workers`` > 0 it starts a chief and that many workers here;
    otherwise the trials run in fresh processes, ``cfg.trials_per_process`` each.
    """
    run = RunFolder(Path(run_dir))
    folder = TuningFolder(run.tuning)
    role = distributed.current_role()
    if role is not None and workers:
        raise ConfigError("WORKERS= starts its own chief and workers; do not also set KERASTUNER_TUNER_ID")
    source = open_source(cfg.data, cfg.task, data_dir=data_dir, seed=cfg.seed)
    top_rung_given = cfg.steps is not None or cfg.epochs is not None
    cfg = cfg.resolve(source)
    cfg.search.check(cfg, source)
    state = prepare_tuning_folder(run, folder, cfg, force=force and role != "worker")
    write_json(folder.settings, cfg.to_dict())
    if state == "resume":
        print(f"Continuing the search in {folder.root}")
    print(f"Trials: {cfg.fidelity.describe(cfg.tuner)} ("
          + ("STEPS= / EPOCHS= as given" if top_rung_given else "the top rung is `make train`'s budget")
          + "); " + describe_seeds(cfg), flush=True)

    if role == "worker":
        run_trials(cfg, source, folder, verbose=verbose)
        return {}
    if workers:
        distributed.run_local_cluster(folder, workers, data_dir=data_dir, oracle_ip=oracle_ip, verbose=verbose)
    elif role is None:
        trial_processes.run_in_processes(folder.root, cfg.trials_per_process, data_dir=data_dir, verbose=verbose)
    else:
        run_trials(cfg, source, folder, verbose=verbose)

    quality = cfg.objective.quality
    records = load_records(folder, quality.metric)
    competing = contenders(records, cfg.objective, cfg.fidelity.full_steps)
    best = choose_best(competing, cfg.objective)
    default = default_record(records, cfg.search.default_values(cfg), cfg.fidelity.full_steps)
    write_report(folder, cfg, records, source=source, final=None)
    if best is None:
        raise UserError(f"{explain_best(competing, cfg.objective)} Report: {folder.report}")
    final = retrain_best(cfg, best, source, run, verbose=verbose)
    comparison = None
    if default is not None:
        default_test = final["test"][quality.test_key] if best is default else \
            default_test_quality(cfg, default, source, folder)
        comparison = Comparison(default=default, best=best, default_test=default_test,
                                best_test=final["test"][quality.test_key])
    write_report(folder, cfg, records, source=source, final=final, comparison=comparison)
    test = final["test"][quality.test_key]
    winner = "the default wins" if best is default else f"trial {best.trial_id}"
    print(f"Best: {winner}, {quality.label} {quality.format(best.quality)}, "
          f"{best.int8_bytes / 1024:.1f} KB int8, {best.latency_ms:.3f} ms. "
          f"Retrained into {run.root} ({quality.test_label} {quality.format(test)}). Report: {folder.report}")
    return {"trial_id": best.trial_id, "hyperparameters": best.hyperparameters, "test": test,
            "default_wins": best is default}
