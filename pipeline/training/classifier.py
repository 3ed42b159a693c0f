"""Training a classifier into a run folder, resumable after a kill.

The order of work is what makes failures safe:

1. open and validate the data (bad input fails here, before anything is written);
2. decide what the run folder holds: nothing (new run), an unfinished run with
   the same config (resume), a finished one (nothing to do), or something else (error);
3. train with BackupAndRestore into RUN/.resume, so SIGKILL loses at most one epoch;
4. write the artifacts, each atomically, and ``metrics.json`` last as the completion mark.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
from PIL import Image

from common.errors import ConfigError
from common.run_folder import RunFolder, atomic_path
from models.cnn import CNNConfig, build_cnn
from pipeline.training import distribute, keras_compat
from pipeline.training.history import read_history
from pipeline.augment import AugmentConfig
from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.evaluation.classification import classification_metrics, predict_dataset
from pipeline.evaluation.report import plot_confusion_matrix, plot_training_curves, write_training_report
from pipeline.sources.schema import Source
from pipeline.training.lifecycle import (default_verbosity, finish_run, run_lifecycle, run_metrics, start_run,
                                         training_callbacks)

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


def _save_samples(run: RunFolder, source: Source, label_names) -> None:
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
    MultiWorkerMirroredStrategy only the chief writes RUN; the other workers train in step
    with it, write their own files to a temporary folder, and return {}.
    """
    if source.task != "classify":
        raise ConfigError(f"DATA={cfg.data} is a {source.task} source; train_classifier needs a classification source")
    if strategy is None:
        strategy = distribute.select_strategy("default")
    chief = distribute.writes_run_folder(strategy)
    verbose = default_verbosity() if verbose is None else verbose

    def train(run: RunFolder, resuming: bool) -> dict:
        with distribute.worker_dir(run.root, chief) as own:  # RUN on the chief; a temporary folder elsewhere
            return _train(cfg, source, run, RunFolder(own), resuming=resuming, verbose=verbose,
                          strategy=strategy, chief=chief)

    return run_lifecycle(Path(run_dir), cfg.to_dict(), force=force, train=train, chief=chief,
                         describe_done=lambda m: f"test accuracy {m['test']['accuracy']:.2%}")


def build_model(cfg: TrainConfig, num_classes: int, strategy):
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
    return keras_compat.adapt_model(model, strategy)


def _float32_copy(model, cfg: TrainConfig, num_classes: int):
    """The trained weights in a plain float32 model built outside any strategy: what model.keras
    holds, so eval, predict and the TFLite export never see a mixed policy or a distributed variable."""
    with distribute.apply_precision("float32"):
        final = build_cnn(cfg.cnn, num_classes, cfg.image_size)
    final.set_weights(model.get_weights())  # variables are float32 under every policy
    return final


def _train(cfg: TrainConfig, source: Source, run: RunFolder, mine: RunFolder, *, resuming: bool, verbose: int,
           strategy, chief: bool) -> dict:
    """``mine``: where this worker writes its own training files (``run`` itself on the chief)."""
    label_names = list(source.label_names)
    if chief:
        start_run(run, cfg.to_dict(), label_names)
    pipe = cfg.pipeline()
    cache_dir = mine.resume_dir / "cache"
    # Sources do not report their files yet, so every source gets DATA sharding (see auto_shard_policy).
    shard = distribute.auto_shard_policy(None, distribute.num_workers(strategy))
    train_ds = distribute.with_auto_shard(
        classification_dataset(source, "train", pipe, training=True, seed=cfg.seed, cache_dir=cache_dir), shard)
    val_ds = distribute.with_auto_shard(
        classification_dataset(source, "validation", pipe, training=False, cache_dir=cache_dir), shard)

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, len(label_names), strategy)
    mine.resume_dir.mkdir(parents=True, exist_ok=True)
    history_csv = mine.resume_dir / "history.csv"
    # A non-chief worker restores what the chief saved, so every worker starts from the same
    # epoch and weights, and never writes a backup of its own.
    restore = [] if chief or not resuming else [keras_compat.restore_only(run.resume_dir / "backup")]
    callbacks = training_callbacks(run, monitor="val_accuracy", mode="max", patience=cfg.patience,
                                   history_csv=history_csv, log_dir=mine.logs, writes_backup=chief,
                                   restore=restore)
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
    finish_run(run, None, metrics)
    print(f"Test accuracy {test['accuracy']:.2%} ({test['examples']} images). Run folder: {run.root}")
    return metrics
