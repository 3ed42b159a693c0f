"""One run lifecycle, whatever the task: the order of work that makes a killed or failed run safe.

1. ``prepare_run_folder``: decide what RUN holds: nothing (new), an unfinished run with the
   same config (resume), a finished one (done), or something else (an error naming it);
2. ``start_run``: config.json and labels.txt, written first;
3. ``write_budget``: the step budget (pipeline.training.budget), kept for a resumed run;
   ``training_callbacks``: the epoch's CSV row, then its backup (BackupAndRestore in RUN/.resume),
   then early stopping and TensorBoard: a kill loses at most the epoch in progress;
   ``fit_once``: the fitted weights, kept in RUN/.resume once training ends, so a run killed (or
   failed) while it evaluates and writes its report resumes there instead of training again;
4. ``finish_run``: model.keras, then metrics.json last (its presence marks the run complete),
   then RUN/.resume is removed.

``run_lifecycle`` ties them together for a task's training function; a new run that fails
before its first backup (or fitted weights) removes what it wrote (``remove_training_outputs``), and only that:
``tuning/`` (a search that trains its best model into the same folder) and the lock stay.
"""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import keras

from common.errors import UserError
from common.run_folder import RunFolder, atomic_path, read_json, write_json
from common.run_lock import LOCK_FILE
from pipeline.sources.schema import Source
from pipeline.training.budget import Budget
from pipeline.training.history import repair_history

# What a training run writes into RUN; everything else there (tuning/, export/, the lock) is not
# training's to remove when a new run fails.
TRAINING_FILES = ("config.json", "labels.txt", "model.keras", "metrics.json", "report.md")
TRAINING_DIRS = ("plots", "samples", "logs", ".resume", "eval", "predictions")
# What may already be in RUN when a new run starts there.
NOT_A_RUN = {"tuning", LOCK_FILE}
BUDGET_FILE = "budget.json"  # in RUN/.resume: the plan of the run in progress
FITTED_WEIGHTS = "fitted.weights.h5"  # in RUN/.resume: the weights of a run whose training ended
FITTED_FILE = "fitted.json"  # beside them: how long training took
LEGACY_CONFIG_KEYS = ("patience",)  # config.json keys of earlier releases that no longer mean anything


def prepare_run_folder(run: RunFolder, config: dict, force: bool, may_write: bool = True) -> str:
    """Returns "new", "resume" or "done"; raises UserError when the folder holds something else.

    ``config``: the run's config.json content. ``force`` replaces a finished or different run
    (its training outputs and stale exports; tuning/ stays). ``may_write=False`` (a non-chief
    worker) reaches the same verdict without removing anything.
    """
    root = run.root
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: RUN must be a folder, but a file is there")
    present = {p.name for p in root.iterdir()} if root.exists() else set()
    if present <= NOT_A_RUN:
        return "new"  # `make tune` keeps its search here and trains the best configuration beside it
    if not run.config.exists():
        raise UserError(f"{root}: folder exists and is not a run folder (no config.json); choose another RUN=")
    saved = run.read_config()
    if saved != config:
        if force:
            if may_write:
                remove_training_outputs(run, exports=True)
            return "new"
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise UserError(f"{root}: holds a run with different settings ({', '.join(changed)}); "
                        f"use another RUN=, or FORCE=1 to replace it")
    if run.is_complete():
        if force:
            if may_write:
                remove_training_outputs(run, exports=True)
            return "new"
        return "done"
    return "resume"


def remove_training_outputs(run: RunFolder, *, exports: bool = False) -> None:
    """Remove what training writes (and export/ too when ``exports``: a replaced model's exports
    are stale). tuning/ and the lock are never removed; RUN goes when nothing else is left."""
    for name in TRAINING_FILES:
        (run.root / name).unlink(missing_ok=True)
    for name in TRAINING_DIRS + (("export",) if exports else ()):
        shutil.rmtree(run.root / name, ignore_errors=True)
    if run.root.exists() and not any(run.root.iterdir()):
        run.root.rmdir()


def start_run(run: RunFolder, config: dict, label_names) -> None:
    """config.json and labels.txt, first: they name what RUN is being trained into."""
    run.root.mkdir(parents=True, exist_ok=True)
    write_json(run.config, config)
    run.write_labels(label_names)
    run.resume_dir.mkdir(parents=True, exist_ok=True)


def training_callbacks(run: RunFolder, *, stopping: keras.callbacks.Callback | None, history_csv: Path,
                       log_dir: Path, writes_backup: bool = True, restore: list | None = None,
                       backup: str = "backup") -> list:
    """The callbacks of every training run, in the order that keeps a kill safe.

    The epoch's CSV row comes before its backup: a kill between the two reruns that epoch,
    whose new row replaces the old one (``read_history``); the other order would lose the row
    for good. ``double_checkpoint`` keeps the previous backup while a new one is written, so a
    kill in the middle of saving leaves something to resume from.

    stopping:      the early stopping callback (pipeline.training.stopping), or None.
    writes_backup: False for a worker that must not write RUN (a non-chief multi-worker task);
                   ``restore`` then holds the callback that restores the chief's backup.
    backup:        the backup's folder in RUN/.resume (a run trained in phases has one per phase).
    """
    repair_history(history_csv)  # a row torn by a kill would otherwise glue onto the next one
    callbacks = list(restore or [])
    callbacks.append(keras.callbacks.CSVLogger(str(history_csv), append=True))
    if writes_backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(run.resume_dir / backup), double_checkpoint=True))
    if stopping is not None:
        callbacks.append(stopping)
    callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=0, write_graph=False))
    return callbacks


def write_budget(run: RunFolder, budget: Budget) -> None:
    """The plan a new run trains to, kept in RUN/.resume so a resumed run keeps it (its time estimate
    would differ, and with it the schedule)."""
    write_json(run.resume_dir / BUDGET_FILE, budget.to_dict())


def read_budget(run: RunFolder) -> Budget | None:
    path = run.resume_dir / BUDGET_FILE
    return Budget.from_dict(read_json(path)) if path.exists() else None


def settle_budget(run: RunFolder, *, resuming: bool, plan: Callable[[], Budget], writes: bool = True) -> Budget:
    """The budget a run trains to: the one a resumed run started with (RUN/.resume/budget.json), else
    ``plan()``. A run that ``writes`` RUN (not a non-chief worker) keeps it there and prints it."""
    budget = (read_budget(run) if resuming else None) or plan()
    if writes:
        write_budget(run, budget)
        print(budget.describe())
    return budget


def without_legacy_keys(config: dict) -> dict:
    """A config.json's content less the keys of earlier releases (LEGACY_CONFIG_KEYS), so their runs
    still load for export, eval and predict."""
    return {k: v for k, v in config.items() if k not in LEGACY_CONFIG_KEYS}


def run_metrics(test: dict, history: dict[str, list[float]], *, train_seconds: float, model, source: Source,
                budget: Budget, **task_metrics) -> dict:
    """metrics.json of a finished run: the test split's scores, then ``task_metrics``
    (validation_accuracy, test_split, recipe, ...), then what every run records."""
    epochs_run = len(history.get("loss", []))
    return {
        "test": test,
        **task_metrics,
        "epochs_run": epochs_run,
        "steps": epochs_run * budget.steps_per_epoch,
        "budget": budget.to_dict(),
        "train_seconds": train_seconds,
        "parameters": int(model.count_params()),
        "split_sizes": dict(source.split_sizes),
        "skipped_samples": [asdict(s) for s in source.skipped],
        "history": history,
    }


def finish_run(run: RunFolder, model, metrics: dict) -> None:
    """model.keras (if not saved yet), then metrics.json last, then the resume state goes."""
    if model is not None:
        with atomic_path(run.model) as tmp:
            model.save(tmp)
    write_json(run.metrics, metrics)  # last: its presence marks the run complete
    shutil.rmtree(run.resume_dir, ignore_errors=True)


def fit_once(run: RunFolder, model: keras.Model, fit: Callable[[], keras.Model], *, resuming: bool,
             writes: bool = True) -> tuple[keras.Model, float]:
    """``fit()`` (which returns the fitted model), then its weights saved in RUN/.resume; or, when an
    earlier session of this run got that far, those weights loaded into ``model`` and no training.
    Returns the model and the seconds training took. ``writes``: False for a non-chief worker."""
    weights, facts = run.resume_dir / FITTED_WEIGHTS, run.resume_dir / FITTED_FILE
    if resuming and weights.exists() and facts.exists():
        model.load_weights(weights)
        print(f"Training of {run.root} had ended in an earlier session: evaluating its weights")
        return model, float(read_json(facts)["train_seconds"])
    start = time.time()
    model = fit()
    seconds = time.time() - start
    if writes:
        with atomic_path(weights) as tmp:
            model.save_weights(tmp)
        write_json(facts, {"train_seconds": seconds})  # after the weights: together they mark the fit done
    return model, seconds


def default_verbosity() -> int:
    """A live progress bar on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def run_lifecycle(run_dir: Path, config: dict, *, force: bool, train: Callable[[RunFolder, bool], dict],
                  describe_done: Callable[[dict], str], chief: bool = True) -> dict:
    """Train (or resume, or recognise as done) the run in ``run_dir``; returns metrics.json's content.

    train(run, resuming) does the task's work: start_run, fit with training_callbacks, evaluate,
    finish_run. describe_done(metrics) is the line printed for a finished run.
    A non-chief worker (``chief=False``) decides the same way but never removes anything.
    """
    run = RunFolder(Path(run_dir))
    state = prepare_run_folder(run, config, force, may_write=chief)
    if state == "done":
        if not chief:
            return {}
        metrics = read_json(run.metrics)
        print(f"{run.root} is already trained ({describe_done(metrics)}); FORCE=1 retrains it.")
        return metrics
    try:
        if state == "resume" and chief and (run.resume_dir / "backup").exists():
            print(f"Resuming the unfinished run in {run.root}")
        return train(run, state == "resume")
    except KeyboardInterrupt:
        if chief:
            print(f"\nInterrupted. Run the same command again to resume from the last finished epoch ({run.root}).")
        raise
    except BaseException:
        if chief and state == "new" and not any((run.resume_dir / name).exists() for name in ("backup", FITTED_FILE)):
            remove_training_outputs(run)  # nothing worth resuming: leave no half-written run
        raise
