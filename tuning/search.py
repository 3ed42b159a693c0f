"""`make tune`: a Keras Tuner search into RUN/tuning, a report, then the best config retrained into RUN.

TASK=classify searches the CNN (tuning.space.SearchSpace) and ranks trials by
validation accuracy; TASK=detect searches the SSD detector (SSDSearchSpace) and
ranks them by validation COCO mAP@[.5:.95]. Both measure each trial's int8
.tflite (size, latency) and take the same constraints.

Order of work, chosen so that a kill at any point is safe to rerun:

1. open the data (prepared once, before any worker starts) and check the space builds;
2. decide what RUN/tuning holds: nothing (new), the same search (resume), or another one (error);
3. search: Keras Tuner's oracle and trial store, saved atomically after every change.
   A trial killed half-way is rerun from its start; finished trials are never rerun;
4. write the report from the trial store;
5. retrain the best configuration on the full train split with pipeline.training.classifier into RUN
   (model.keras, labels.txt, config.json, metrics.json, ...), resumable like `make train`;
6. write the report again, now with the retrained model's test accuracy.

Layout of RUN/tuning::

    settings.json              what is searched, and how (written first)
    project/                   Keras Tuner's own store: oracle.json, trial_*/trial.json, checkpoints,
                               and trial_*/runs.log (who ran the trial, one line per run)
    report.md  trials.csv  best_hyperparameters.json  plots/  tensorboard/
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
from common.run_folder import RunFolder, write_json, write_text
from common.run_lock import LOCK_FILE
from export.runtime import LATENCY_RUNS
from tuning.objective import ObjectiveConfig, TrialRecord, choose_best, explain_best
from tuning.tuner_compat import check_keras_tuner, ensure_reload, oracle_classes, tuner_class
from pipeline.sources.schema import Source
from pipeline.sources.specs import open_source
from tuning import distributed
from tuning.report import write_report
from tuning.space import SearchSpace, SSDSearchSpace
from tuning.tunables import TASK_NAMES, TaskSearch, search_named

TUNERS = ("bayesian", "random", "hyperband", "grid")
TASKS = TASK_NAMES
PROJECT = "project"
RUNS_LOG = "runs.log"
FINAL_MODEL_FILES = ("config.json", "labels.txt", "model.keras", "metrics.json", "report.md")
FINAL_MODEL_DIRS = ("plots", "samples", "logs", ".resume")


@dataclass(frozen=True)
class TuneConfig:
    """Everything that determines a search; saved as RUN/tuning/settings.json.

    task: the task searched, as recorded ("classify": the CNN; "detect": the SSD detector); its
          ``search`` (tuning.tunables) gives the space, the quality and the per-task defaults.
    image_size: the classifier's input side; the detector's input size is in its space.
    model: the classifier searched: None or "cnn" (the CNN), "mobilenetv2" (MobileNetV2, from ``weights``:
           imagenet, none or a file, as `make train WEIGHTS=`).
    batch_size: None: 64 (classify) or 32 (detect), as `make train` uses.
    trial_train_examples: the train split is cut to this many images for trials (0: all of it;
        None: 3000 classify, 1000 detect); the final retrain always uses all of it.
    epochs: per trial (Hyperband: the most any trial trains).
    final_epochs: for the retrain of the best configuration; None: what `make train` uses
                  for this data and task, so the tuned model is trained as long as a default
                  one and the two compare fairly.
    space: a SearchSpace (classify) or SSDSearchSpace (detect); None: the task's default.
    """

    data: str = "shapes"
    task: str = "classify"
    tuner: str = "bayesian"
    trials: int = 6
    epochs: int = 3
    seed: int = 0
    image_size: int = 64
    model: str | None = None
    weights: str = "imagenet"
    batch_size: int | None = None
    trial_train_examples: int | None = None
    final_epochs: int | None = None
    latency_runs: int = LATENCY_RUNS
    space: SearchSpace | SSDSearchSpace | None = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self):
        search = search_named(self.task, self.model)
        if self.tuner not in TUNERS:
            raise ConfigError(f"TUNER={self.tuner}: expected one of {', '.join(TUNERS)}")
        for name in ("batch_size", "trial_train_examples"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(search, name))
        if self.space is None:
            object.__setattr__(self, "space", search.space_type())
        if not isinstance(self.space, search.space_type):
            raise ConfigError(f"TASK={self.task} searches a {search.space_type.__name__}, "
                              f"not a {type(self.space).__name__}")
        if self.objective.quality != search.quality:
            object.__setattr__(self, "objective", replace(self.objective, quality=search.quality))
        for name in ("trials", "epochs", "final_epochs", "batch_size", "latency_runs"):
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
        """The settings a resumed search must share with the first run (the trial budget may grow)."""
        d = self.to_dict()
        d.pop("trials")
        return d

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

def make_tuner(cfg: TuneConfig, hypermodel, folder: TuningFolder):
    """A Keras Tuner Tuner over ``folder.project``; reloads it when it exists."""
    check_keras_tuner()
    objective = kt.Objective("objective", direction="max")
    common = dict(objective=objective, seed=cfg.seed, max_retries_per_trial=0, max_consecutive_failed_trials=3)
    oracle_cls = oracle_classes()[cfg.tuner]
    if cfg.tuner == "hyperband":
        oracle = oracle_cls(max_epochs=cfg.epochs, factor=3, hyperband_iterations=None, **common)
        oracle.max_trials = cfg.trials  # Hyperband has no trial budget of its own: iterate until the base Oracle stops it
    elif cfg.tuner == "bayesian":
        oracle = oracle_cls(max_trials=cfg.trials, num_initial_points=max(2, min(cfg.trials, cfg.trials // 2)),
                            **common)
    else:
        oracle = oracle_cls(max_trials=cfg.trials, **common)

    class Tuner(tuner_class(cfg.tuner == "hyperband")):
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


def run_trials(cfg: TuneConfig, source: Source, folder: TuningFolder, *, verbose: int = 1) -> None:
    """Run this process's share of the search (all of it, unless distributed), then return."""
    keras.utils.set_random_seed(cfg.seed)
    cfg.search.search(cfg, lambda hypermodel: make_tuner(cfg, hypermodel, folder),
                      trial_source(source, cfg.trial_train_examples), source, 2 if verbose else 0)


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
        if "tuner/epochs" in trial.hyperparameters.values:
            values["epochs"] = trial.hyperparameters.values["tuner/epochs"]
        as_int = lambda v: None if v is None else int(v)  # noqa: E731
        records.append(TrialRecord(
            trial_id=trial.trial_id, status=trial.status, hyperparameters=values,
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
        saved_identity = {k: v for k, v in saved.items() if k != "trials"}
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


def tune(cfg: TuneConfig, run_dir: Path, *, data_dir: Path | None = None, workers: int = 0, force: bool = False,
         oracle_ip: str = "127.0.0.1", verbose: int = 1) -> dict:
    """Search, report, retrain the best, report again. Returns the best trial's summary.

    Roles: with KERASTUNER_TUNER_ID set this process is one member of a cluster started by
    hand (see README); with ``workers`` > 0 it starts a chief and that many workers here.
    """
    run = RunFolder(Path(run_dir))
    folder = TuningFolder(run.tuning)
    role = distributed.current_role()
    if role is not None and workers:
        raise ConfigError("WORKERS= starts its own chief and workers; do not also set KERASTUNER_TUNER_ID")
    source = open_source(cfg.data, cfg.task, data_dir=data_dir, seed=cfg.seed)
    cfg.search.check(cfg, source)
    state = prepare_tuning_folder(run, folder, cfg, force=force and role != "worker")
    write_json(folder.settings, cfg.to_dict())
    if state == "resume":
        print(f"Continuing the search in {folder.root}")

    if role == "worker":
        run_trials(cfg, source, folder, verbose=verbose)
        return {}
    if workers:
        distributed.run_local_cluster(folder, workers, data_dir=data_dir, oracle_ip=oracle_ip, verbose=verbose)
    else:
        run_trials(cfg, source, folder, verbose=verbose)

    quality = cfg.objective.quality
    records = load_records(folder, quality.metric)
    best = choose_best(records, cfg.objective)
    write_report(folder, cfg, records, source=source, final=None)
    if best is None:
        raise UserError(f"{explain_best(records, cfg.objective)} Report: {folder.report}")
    final = retrain_best(cfg, best, source, run, verbose=verbose)
    write_report(folder, cfg, records, source=source, final=final)
    test = final["test"][quality.test_key]
    print(f"Best: trial {best.trial_id}, {quality.label} {quality.format(best.quality)}, "
          f"{best.int8_bytes / 1024:.1f} KB int8, {best.latency_ms:.3f} ms. "
          f"Retrained into {run.root} ({quality.test_label} {quality.format(test)}). Report: {folder.report}")
    return {"trial_id": best.trial_id, "hyperparameters": best.hyperparameters, "test": test}
