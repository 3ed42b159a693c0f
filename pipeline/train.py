"""Training a classifier into a run folder, resumable after a kill.

The order of work is what makes failures safe:

1. open and validate the data (bad input fails here, before anything is written);
2. decide what the run folder holds: nothing (new run), an unfinished run with
   the same config (resume), a finished one (nothing to do), or something else (error);
3. train with BackupAndRestore into RUN/.resume, so SIGKILL loses at most one epoch;
4. write the artifacts, each atomically, and ``metrics.json`` last as the completion mark.
"""
from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


from common.errors import ConfigError, UserError
from common.run_folder import RunFolder, atomic_path, write_json
from models.cnn import CNNConfig, build_cnn
from pipeline.augment import AugmentConfig
from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.evaluate import classification_metrics, predict_dataset
from pipeline.report import plot_confusion_matrix, plot_training_curves, write_training_report
from pipeline.schema import Source

SAMPLES_PER_RUN = 6


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a classification run; saved as RUN/config.json."""

    data: str = "shapes"
    task: str = "classify"
    image_size: int = 64
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 1e-3
    patience: int = 4
    seed: int = 0
    cnn: CNNConfig = field(default_factory=CNNConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"EPOCHS={self.epochs}: must be at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"BATCH={self.batch_size}: must be at least 1")
        if self.image_size < 8:
            raise ConfigError(f"IMAGE_SIZE={self.image_size}: must be at least 8")
        if not self.learning_rate > 0:
            raise ConfigError(f"LR={self.learning_rate}: must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cnn"] = self.cnn.to_dict()
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["cnn"] = CNNConfig.from_dict(d.get("cnn", {}))
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**d)

    def pipeline(self) -> PipelineConfig:
        return PipelineConfig(image_size=self.image_size, batch_size=self.batch_size, augment=self.augment)


def _prepare_folder(run: RunFolder, cfg: TrainConfig, force: bool) -> str:
    """Returns "new", "resume" or "done"; raises when the folder holds something else."""
    root = run.root
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: RUN must be a folder, but a file is there")
    if not root.exists() or not any(root.iterdir()):
        return "new"
    if not run.config.exists():
        raise UserError(f"{root}: folder exists and is not a run folder (no config.json); choose another RUN=")
    saved = run.read_config()
    if saved != cfg.to_dict():
        if force:
            shutil.rmtree(root)
            return "new"
        changed = sorted(k for k in set(saved) | set(cfg.to_dict()) if saved.get(k) != cfg.to_dict().get(k))
        raise UserError(
            f"{root}: holds a run with different settings ({', '.join(changed)}); "
            f"use another RUN=, or FORCE=1 to replace it"
        )
    if run.is_complete():
        if force:
            shutil.rmtree(root)
            return "new"
        return "done"
    return "resume"


def _history(csv_path: Path) -> dict[str, list[float]]:
    """Per-epoch metrics from the CSV log; a resumed epoch's row replaces the earlier one."""
    if not csv_path.exists():
        return {}
    rows: dict[int, dict] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    keys = [k for k in (next(iter(rows.values()), {}) or {}) if k != "epoch"]
    return {k: [float(rows[e][k]) for e in sorted(rows)] for k in keys}


def _save_samples(run: RunFolder, source: Source, label_names) -> None:
    from PIL import Image

    run.samples.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    for ex in source.examples("test").take(200):
        label = int(ex["label"])
        if label in seen:
            continue
        seen.add(label)
        with atomic_path(run.samples / f"{label_names[label]}.png") as tmp:
            Image.fromarray(ex["image"].numpy()).save(tmp, format="PNG")
        if len(seen) >= SAMPLES_PER_RUN:
            break


def train_classifier(cfg: TrainConfig, source: Source, run_dir: Path, *, force: bool = False,
                     verbose: int | None = None) -> dict:
    """Train (or resume, or recognise as done) the run in ``run_dir``. Returns metrics.json's content."""
    import keras

    if source.task != "classify":
        raise ConfigError(f"DATA={cfg.data} is a {source.task} source; train_classifier needs a classification source")
    run = RunFolder(Path(run_dir))
    state = _prepare_folder(run, cfg, force)
    if state == "done":
        print(f"{run.root} is already trained (test accuracy "
              f"{json.loads(run.metrics.read_text())['test']['accuracy']:.2%}); FORCE=1 retrains it.")
        return json.loads(run.metrics.read_text())
    created = state == "new"
    if verbose is None:  # a live progress bar on a terminal, one line per epoch in logs and CI
        verbose = 1 if sys.stdout.isatty() else 2
    try:
        return _train(cfg, source, run, resuming=state == "resume", verbose=verbose, keras=keras)
    except KeyboardInterrupt:
        print(f"\nInterrupted. Run the same command again to resume from the last finished epoch ({run.root}).")
        raise
    except BaseException:
        if created and not run.resume_dir.exists():
            shutil.rmtree(run.root, ignore_errors=True)  # nothing worth resuming: leave no half-written run
        raise


def _train(cfg: TrainConfig, source: Source, run: RunFolder, *, resuming: bool, verbose: int, keras) -> dict:
    label_names = list(source.label_names)
    run.root.mkdir(parents=True, exist_ok=True)
    write_json(run.config, cfg.to_dict())
    run.write_labels(label_names)
    pipe = cfg.pipeline()
    cache_dir = run.resume_dir / "cache"
    train_ds = classification_dataset(source, "train", pipe, training=True, seed=cfg.seed, cache_dir=cache_dir)
    val_ds = classification_dataset(source, "validation", pipe, training=False, cache_dir=cache_dir)
    test_ds = classification_dataset(source, "test", pipe, training=False, cache_dir=cache_dir)

    keras.utils.set_random_seed(cfg.seed)
    model = build_cnn(cfg.cnn, len(label_names), cfg.image_size)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if resuming:
        print(f"Resuming the unfinished run in {run.root}")
    run.resume_dir.mkdir(parents=True, exist_ok=True)
    history_csv = run.resume_dir / "history.csv"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run.resume_dir / "backup")),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(run.logs), histogram_freq=0, write_graph=False),
    ]
    start = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose)
    train_seconds = time.time() - start
    history = _history(history_csv)

    probs, labels = predict_dataset(lambda x: model.predict_on_batch(x), test_ds)
    test = classification_metrics(probs, labels, label_names)
    with atomic_path(run.model) as tmp:
        model.save(tmp)
    _save_samples(run, source, label_names)
    run.plots.mkdir(exist_ok=True)
    plot_training_curves(history, run.plots / "training_curves.png")
    plot_confusion_matrix(test["confusion_matrix"], label_names, run.plots / "confusion_matrix.png")
    metrics = {
        "test": test,
        "validation_accuracy": max(history.get("val_accuracy", [float("nan")])),
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": train_seconds,
        "parameters": int(model.count_params()),
        "split_sizes": dict(source.split_sizes),
        "skipped_samples": [asdict(s) for s in source.skipped],
        "history": history,
    }
    write_training_report(run.report, config=cfg.to_dict(), metrics=metrics, label_names=label_names,
                          skipped=source.skipped)
    write_json(run.metrics, metrics)  # last: its presence marks the run complete
    shutil.rmtree(run.resume_dir, ignore_errors=True)
    print(f"Test accuracy {test['accuracy']:.2%} ({test['examples']} images). Run folder: {run.root}")
    return metrics
