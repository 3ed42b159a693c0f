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
from pipeline.training import distribute
from pipeline.augment import AugmentConfig
from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.evaluation.classification import classification_metrics, predict_dataset
from pipeline.evaluation.report import plot_confusion_matrix, plot_training_curves, write_training_report
from pipeline.sources.schema import Source

SAMPLES_PER_RUN = 6


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a classification run; saved as RUN/config.json.

    ``precision`` (a Keras dtype policy: float32, mixed_float16, mixed_bfloat16) belongs here: it
    changes the numbers and the optimizer state a resumed run restores. The distribution
    strategy does not: it changes where the steps run, not what they compute (the batch is the
    global batch), so a multi-worker run can be resumed by one worker and the other way round.
    """

    data: str = "shapes"
    task: str = "classify"
    image_size: int = 64
    batch_size: int = 64
    epochs: int = 10  # enough for the built-in data; see epochs_for()
    learning_rate: float = 1e-3
    patience: int = 4
    seed: int = 0
    cnn: CNNConfig = field(default_factory=CNNConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in distribute.PRECISIONS:
            raise ConfigError(f"PRECISION={self.precision}: expected one of {', '.join(distribute.PRECISIONS)} "
                              f"(resolve auto with pipeline.training.distribute.resolve_precision first)")
        if self.epochs < 1:
            raise ConfigError(f"EPOCHS={self.epochs}: must be at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"BATCH={self.batch_size}: must be at least 1")
        if self.image_size < 8:
            raise ConfigError(f"IMAGE_SIZE={self.image_size}: must be at least 8")
        if not self.learning_rate > 0:
            raise ConfigError(f"LR={self.learning_rate}: must be positive")

    @staticmethod
    def epochs_for(data: str) -> int:
        """Default epoch budget: the built-in data converges in 10; other data gets 30, and early
        stopping (patience epochs without a better validation accuracy) ends it when it stops improving."""
        return 10 if data.split(":")[0] == "shapes" else 30

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cnn"] = self.cnn.to_dict()
        d["augment"] = self.augment.to_dict()
        if d["precision"] == "float32":
            # Written only when not the default, so the config.json of a float32 run (every run
            # made before mixed precision existed) is unchanged and such runs still resume.
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["cnn"] = CNNConfig.from_dict(d.get("cnn", {}))
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**d)

    def pipeline(self) -> PipelineConfig:
        return PipelineConfig(image_size=self.image_size, batch_size=self.batch_size, augment=self.augment)


def prepare_run_folder(run: RunFolder, cfg: TrainConfig, force: bool, may_write: bool = True) -> str:
    """Returns "new", "resume" or "done"; raises when the folder holds something else.

    ``may_write=False`` (a non-chief worker) reaches the same verdict without removing anything.
    """
    root = run.root
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: RUN must be a folder, but a file is there")
    if not root.exists() or not any(root.iterdir()):
        return "new"
    if not run.config.exists():
        if {p.name for p in root.iterdir()} <= {"tuning"}:
            return "new"  # `make tune` keeps its search here and trains the best configuration beside it
        raise UserError(f"{root}: folder exists and is not a run folder (no config.json); choose another RUN=")
    saved = run.read_config()
    if saved != cfg.to_dict():
        if force:
            if may_write:
                shutil.rmtree(root)
            return "new"
        changed = sorted(k for k in set(saved) | set(cfg.to_dict()) if saved.get(k) != cfg.to_dict().get(k))
        raise UserError(
            f"{root}: holds a run with different settings ({', '.join(changed)}); "
            f"use another RUN=, or FORCE=1 to replace it"
        )
    if run.is_complete():
        if force:
            if may_write:
                shutil.rmtree(root)
            return "new"
        return "done"
    return "resume"


def read_history(csv_path: Path) -> dict[str, list[float]]:
    """Per-epoch metrics from the CSV log; a resumed epoch's row replaces the earlier one."""
    if not csv_path.exists():
        return {}
    rows: dict[int, dict] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    # CSVLogger writes "NA" for val_* columns when there is no validation data; such columns are left out.
    keys = [k for k in (next(iter(rows.values()), {}) or {})
            if k != "epoch" and any(rows[e][k] not in ("", "NA") for e in rows)]
    return {k: [float(rows[e][k]) if rows[e][k] not in ("", "NA") else float("nan") for e in sorted(rows)]
            for k in keys}


def run_metrics(test: dict, history: dict[str, list[float]], *, train_seconds: float, model, source: Source,
                **task_metrics) -> dict:
    """metrics.json of a finished run, classifier or detector: the test split's scores, then
    ``task_metrics`` (validation_accuracy, validation_loss, ...), then what every run records."""
    return {
        "test": test,
        **task_metrics,
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": train_seconds,
        "parameters": int(model.count_params()),
        "split_sizes": dict(source.split_sizes),
        "skipped_samples": [asdict(s) for s in source.skipped],
        "history": history,
    }


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
                     verbose: int | None = None, strategy=None) -> dict:
    """Train (or resume, or recognise as done) the run in ``run_dir``. Returns metrics.json's content.

    ``strategy``: from ``pipeline.training.distribute.select_strategy`` (None: the default strategy). Under
    MultiWorkerMirroredStrategy every worker calls this with the same arguments and ``run_dir``
    on a filesystem they all see; only the chief writes it. The other workers read the chief's
    config and backup to resume in step with it, write to a temporary folder, and return {}.
    """
    import keras

    if source.task != "classify":
        raise ConfigError(f"DATA={cfg.data} is a {source.task} source; train_classifier needs a classification source")
    if strategy is None:
        strategy = distribute.select_strategy("default")
    chief = distribute.writes_run_folder(strategy)
    run = RunFolder(Path(run_dir))
    state = prepare_run_folder(run, cfg, force, may_write=chief)
    if state == "done":
        if not chief:
            return {}
        print(f"{run.root} is already trained (test accuracy "
              f"{json.loads(run.metrics.read_text())['test']['accuracy']:.2%}); FORCE=1 retrains it.")
        return json.loads(run.metrics.read_text())
    created = state == "new"
    if verbose is None:  # a live progress bar on a terminal, one line per epoch in logs and CI
        verbose = 1 if sys.stdout.isatty() else 2
    try:
        with distribute.worker_dir(run.root, chief) as own:  # RUN on the chief; a temporary folder elsewhere
            return _train(cfg, source, run, RunFolder(own), resuming=state == "resume", verbose=verbose,
                          keras=keras, strategy=strategy, chief=chief)
    except KeyboardInterrupt:
        if chief:
            print(f"\nInterrupted. Run the same command again to resume from the last finished epoch ({run.root}).")
        raise
    except BaseException:
        if chief and created and not run.resume_dir.exists():
            _remove_training_outputs(run)  # nothing worth resuming: leave no half-written run
        raise


def _remove_training_outputs(run: RunFolder) -> None:
    """Remove what training writes, and RUN itself if nothing else (tuning/, export/) is in it."""
    for path in (run.config, run.labels, run.model, run.metrics, run.report):
        path.unlink(missing_ok=True)
    for folder in (run.plots, run.samples, run.logs, run.resume_dir, run.root / "eval"):
        shutil.rmtree(folder, ignore_errors=True)
    if run.root.exists() and not any(run.root.iterdir()):
        run.root.rmdir()


def _build_model(cfg: TrainConfig, num_classes: int, strategy, keras):
    """The compiled CNN: variables under ``strategy``, layers under ``cfg.precision``.

    Under a mixed policy the softmax layer stays float32, so the loss is computed in float32;
    Keras wraps the optimizer in a LossScaleOptimizer for mixed_float16 by itself.
    """
    with strategy.scope(), distribute.apply_precision(cfg.precision):
        model = build_cnn(cfg.cnn, num_classes, cfg.image_size,
                          output_dtype="float32" if distribute.is_mixed(cfg.precision) else None)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return distribute.adapt_model(model, strategy)


def _float32_copy(model, cfg: TrainConfig, num_classes: int):
    """The trained weights in a plain float32 model built outside any strategy: what model.keras
    holds, so eval, predict and the TFLite export never see a mixed policy or a distributed variable."""
    with distribute.apply_precision("float32"):
        final = build_cnn(cfg.cnn, num_classes, cfg.image_size)
    final.set_weights(model.get_weights())  # variables are float32 under every policy
    return final


def _train(cfg: TrainConfig, source: Source, run: RunFolder, mine: RunFolder, *, resuming: bool, verbose: int,
           keras, strategy, chief: bool) -> dict:
    """``mine``: where this worker writes its own training files (``run`` itself on the chief)."""
    label_names = list(source.label_names)
    if chief:
        run.root.mkdir(parents=True, exist_ok=True)
        write_json(run.config, cfg.to_dict())
        run.write_labels(label_names)
    pipe = cfg.pipeline()
    cache_dir = mine.resume_dir / "cache"
    # Sources do not report their files yet, so every source gets DATA sharding (see auto_shard_policy).
    shard = distribute.auto_shard_policy(None, distribute.num_workers(strategy))
    train_ds = distribute.with_auto_shard(
        classification_dataset(source, "train", pipe, training=True, seed=cfg.seed, cache_dir=cache_dir), shard)
    val_ds = distribute.with_auto_shard(
        classification_dataset(source, "validation", pipe, training=False, cache_dir=cache_dir), shard)

    keras.utils.set_random_seed(cfg.seed)
    model = _build_model(cfg, len(label_names), strategy, keras)
    mine.resume_dir.mkdir(parents=True, exist_ok=True)
    history_csv = mine.resume_dir / "history.csv"
    backup = run.resume_dir / "backup"
    if resuming and chief and backup.exists():
        print(f"Resuming the unfinished run in {run.root}")
    if chief:
        # double_checkpoint: a worker stopped mid-save (the launcher stops the chief when a peer dies)
        # leaves the previous epoch's backup to resume from.
        callbacks = [keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)]
    else:  # restore what the chief saved, so every worker starts from the same epoch and weights
        callbacks = [distribute.restore_only(backup)] if resuming else []
    callbacks += [
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(mine.logs), histogram_freq=0, write_graph=False),
    ]
    start = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose,
              shuffle=False)  # the dataset reshuffles itself, seeded
    train_seconds = time.time() - start
    if not chief:
        return {}
    history = read_history(history_csv)

    model = _float32_copy(model, cfg, len(label_names))
    test_ds = classification_dataset(source, "test", pipe, training=False, cache_dir=cache_dir)
    probs, labels = predict_dataset(lambda x: model.predict_on_batch(x), test_ds)
    test = classification_metrics(probs, labels, label_names)
    with atomic_path(run.model) as tmp:
        model.save(tmp)
    _save_samples(run, source, label_names)
    run.plots.mkdir(exist_ok=True)
    plot_training_curves(history, run.plots / "training_curves.png")
    plot_confusion_matrix(test["confusion_matrix"], label_names, run.plots / "confusion_matrix.png")
    metrics = run_metrics(test, history, train_seconds=train_seconds, model=model, source=source,
                          validation_accuracy=max(history.get("val_accuracy", [float("nan")])))
    write_training_report(run.report, config=cfg.to_dict(), metrics=metrics, label_names=label_names,
                          skipped=source.skipped)
    write_json(run.metrics, metrics)  # last: its presence marks the run complete
    shutil.rmtree(run.resume_dir, ignore_errors=True)
    print(f"Test accuracy {test['accuracy']:.2%} ({test['examples']} images). Run folder: {run.root}")
    return metrics
