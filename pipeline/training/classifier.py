"""Training a classifier into a run folder, resumable after a kill.

The order of work is what makes failures safe:

1. open and validate the data (bad input fails here, before anything is written);
2. decide what the run folder holds: nothing (new run), an unfinished run with
   the same config (resume), a finished one (nothing to do), or something else (error);
3. train with BackupAndRestore into RUN/.resume, so SIGKILL loses at most one epoch;
4. write the artifacts, each atomically, and ``metrics.json`` last as the completion mark.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder, atomic_path
from models.cnn import CNNConfig, build_cnn
from models.mobilenet import MobileNetConfig, build_mobilenet_classifier, set_trainable_top_blocks
from pipeline.training import distribute, keras_compat
from pipeline.training.history import read_history
from pipeline.augment import AugmentConfig
from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.evaluation.classification import classification_metrics, predict_dataset
from pipeline.evaluation.report import plot_confusion_matrix, plot_training_curves, write_training_report
from pipeline.sources.schema import Source
from pipeline.training.budget import (CLASSIFIER_RULE, Budget, budget_clock, check_budget_settings,
                                      estimate_step_seconds, plan_budget, warmup_cosine)
from pipeline.training.lifecycle import (default_verbosity, finish_run, fit_once, run_lifecycle, run_metrics,
                                         settle_budget, start_run, training_callbacks, without_legacy_keys,
                                         write_budget)
from pipeline.training.recipe import (CLASS_WEIGHT_MODES, DataProfile, class_weights, classifier_image_size,
                                      describe_choices, profile_source)
from pipeline.training.stopping import DEFAULT_PATIENCE_STEPS, BudgetEarlyStopping
from pipeline.training.warm_start import load_matching_weights

SAMPLES_PER_RUN = 6
ACCURACY_RESOLUTION = 100  # validation images from which early stopping judges (smoothed) accuracy, not loss


MODELS = ("cnn", "mobilenetv2")
HEAD_SHARE = 0.3  # MobileNetV2: the share of the budget that trains the head alone (phase 1)
FINE_TUNE_LR_SHARE = 0.1  # phase 2 (the top blocks unfrozen) peaks at this share of the learning rate


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a classification run; saved as RUN/config.json.

    None (or "auto") means "chosen from the data" (pipeline.training.recipe, budget); config.json
    holds the resolved values (``resolve_config``), so a resumed run compares like with like.

    model:          "cnn" (models.cnn) or "mobilenetv2" (models.mobilenet, transfer learning:
                    the head first, then the top blocks at a lower learning rate).
    epochs / steps: an explicit budget (at most one); None: the step budget (pipeline.training.budget).
    time_budget_min: the time cap of the step budget (None: the rule's).
    patience_steps: early stopping's patience, in optimizer steps (pipeline.training.stopping).
    class_weights:  "auto" (weights when the classes are imbalanced) or "none".
    init:           an earlier run folder to start from: its layers that match by name and shape.

    ``precision`` (a Keras dtype policy: float32, mixed_float16, mixed_bfloat16) belongs here: it
    changes the numbers and the optimizer state a resumed run restores. The distribution
    strategy does not: it changes where the steps run, not what they compute (the batch is the
    global batch), so a multi-worker run can be resumed by one worker and the other way round.
    """

    data: str = "shapes"
    task: str = "classify"
    model: str = "cnn"
    image_size: int | None = None
    batch_size: int = 64
    epochs: int | None = None
    steps: int | None = None
    time_budget_min: float | None = None
    learning_rate: float = 2e-3
    patience_steps: int = DEFAULT_PATIENCE_STEPS
    seed: int = 0
    cnn: CNNConfig = field(default_factory=CNNConfig)
    mobilenet: MobileNetConfig = field(default_factory=MobileNetConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(flip=False))
    class_weights: str = "auto"
    init: str | None = None
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in distribute.PRECISIONS:
            raise ConfigError(f"PRECISION={self.precision}: expected one of {', '.join(distribute.PRECISIONS)} "
                              f"(resolve auto with pipeline.training.distribute.resolve_precision first)")
        if self.model not in MODELS:
            raise ConfigError(f"MODEL={self.model}: expected one of {', '.join(MODELS)}")
        check_budget_settings(self.epochs, self.steps, self.time_budget_min)
        if self.batch_size < 1:
            raise ConfigError(f"BATCH={self.batch_size}: must be at least 1")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"IMAGE_SIZE={self.image_size}: must be at least 8")
        if not self.learning_rate > 0:
            raise ConfigError(f"LR={self.learning_rate}: must be positive")
        if self.class_weights not in CLASS_WEIGHT_MODES:
            raise ConfigError(f"CLASS_WEIGHTS={self.class_weights}: expected one of {', '.join(CLASS_WEIGHT_MODES)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cnn"] = self.cnn.to_dict()
        d["mobilenet"] = self.mobilenet.to_dict()
        d["augment"] = self.augment.to_dict()
        if d["precision"] == "float32":
            # Written only when not the default, so the config.json of a float32 run (every run
            # made before mixed precision existed) is unchanged and such runs still resume.
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = without_legacy_keys(d)
        d["cnn"] = CNNConfig.from_dict(d.get("cnn", {}))
        d["mobilenet"] = MobileNetConfig.from_dict(d.get("mobilenet", {}))
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**d)

    def pipeline(self) -> PipelineConfig:
        if self.image_size is None:
            raise ValueError("image_size is chosen from the data: resolve_config first")
        return PipelineConfig(image_size=self.image_size, batch_size=self.batch_size, augment=self.augment)


def _chosen_side(cfg: TrainConfig, profile: DataProfile) -> tuple[int, str]:
    return classifier_image_size(profile, model=cfg.model, num_pools=cfg.cnn.num_blocks, pool_stride=cfg.cnn.pool_stride)


def input_side(cfg: TrainConfig) -> int | Callable[[np.ndarray], int]:
    """The input side ``resolve_config`` gives ``cfg``, for opening the source before it is profiled:
    IMAGE_SIZE= when given, else the same rule as a function of the images' int [n, 2] (height, width)
    sides (``open_source(image_size=)``: a folder's files are then decoded once, straight to it)."""
    if cfg.image_size is not None:
        return cfg.image_size
    return lambda sides: _chosen_side(cfg, DataProfile(train_images=len(sides), sampled=len(sides), sides=sides))[0]


def resolve_config(cfg: TrainConfig, profile: DataProfile) -> tuple[TrainConfig, list[dict]]:
    """``cfg`` with what is left to the data chosen; and the choices, each {"setting", "value", "why"}."""
    choices = []
    if cfg.image_size is None:
        side, why = _chosen_side(cfg, profile)
        cfg = replace(cfg, image_size=side)
        choices.append({"setting": "IMAGE_SIZE", "value": side, "why": why})
    if not cfg.augment.flip:
        choices.append({"setting": "FLIP", "value": 0, "why": "off by default for classifiers: flipped digits, "
                                                              "letters and arrows are other classes (FLIP=1 turns it on)"})
    weights, why = class_weights(profile, cfg.class_weights)
    choices.append({"setting": "CLASS_WEIGHTS", "value": "on" if weights else "off", "why": why})
    return cfg, choices


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

    What ``cfg`` leaves to the data is chosen first (``resolve_config``); config.json holds the result.
    ``strategy``: from ``pipeline.training.distribute.select_strategy`` (None: the default strategy). Under
    MultiWorkerMirroredStrategy only the chief writes RUN; the other workers train in step
    with it, write their own files to a temporary folder, and return {}.
    """
    if source.task != "classify":
        raise ConfigError(f"DATA={cfg.data} is a {source.task} source; train_classifier needs a classification source")
    if cfg.init is not None:
        RunFolder(Path(cfg.init)).require_model()  # a wrong INIT= fails before anything is written
    if strategy is None:
        strategy = distribute.select_strategy("default")
    chief = distribute.writes_run_folder(strategy)
    verbose = default_verbosity() if verbose is None else verbose
    profile = profile_source(source)
    cfg, choices = resolve_config(cfg, profile)
    print("Chosen from the data (explicit variables win):\n" + describe_choices(choices))

    def train(run: RunFolder, resuming: bool) -> dict:
        with distribute.worker_dir(run.root, chief) as own:  # RUN on the chief; a temporary folder elsewhere
            return _train(cfg, source, profile, choices, run, RunFolder(own), resuming=resuming, verbose=verbose,
                          strategy=strategy, chief=chief)

    return run_lifecycle(Path(run_dir), cfg.to_dict(), force=force, train=train, chief=chief,
                         describe_done=lambda m: f"test accuracy {m['test']['accuracy']:.2%}")


def build_network(cfg: TrainConfig, num_classes: int, keras_module=None, *, pretrained: bool = True,
                  output_dtype: str | None = None):
    """The uncompiled classifier of ``cfg`` (resolved) in ``keras_module`` (None: Keras 3; tf_keras for
    the export seam). ``pretrained=False`` builds a MobileNetV2 without loading its WEIGHTS= (a
    model about to receive trained weights: export, the float32 copy)."""
    if cfg.model == "mobilenetv2":
        mobilenet = cfg.mobilenet if pretrained else cfg.mobilenet.replace(weights="none")
        try:
            return build_mobilenet_classifier(mobilenet, num_classes, cfg.image_size, keras_module,
                                              output_dtype=output_dtype)
        except (ValueError, FileNotFoundError) as e:  # a size or a weights file that does not fit
            raise ConfigError(f"MODEL=mobilenetv2: {e}") from None
        except Exception as e:  # keras.utils.get_file: the ImageNet weights could not be fetched
            if mobilenet.weights != "imagenet":
                raise
            raise UserError(f"WEIGHTS=imagenet: the ImageNet weights could not be downloaded ({e}); "
                            f"use WEIGHTS=none, or WEIGHTS=PATH to a MobileNetV2 weights file") from None
    return build_cnn(cfg.cnn, num_classes, cfg.image_size, keras_module, output_dtype=output_dtype)


def build_model(cfg: TrainConfig, num_classes: int, strategy):
    """The uncompiled network: variables under ``strategy``, layers under ``cfg.precision``, adapted
    to the strategy once (keras_compat).

    Under a mixed policy the softmax layer stays float32, so the loss is computed in float32.
    """
    with strategy.scope(), distribute.apply_precision(cfg.precision):
        model = build_network(cfg, num_classes, output_dtype="float32" if distribute.is_mixed(cfg.precision) else None)
    return keras_compat.adapt_model(model, strategy)


def compile_model(model, cfg: TrainConfig, strategy, learning_rate):
    """Compile for training (``learning_rate``: a float or a schedule); a model trained in phases is
    compiled once per phase. Keras wraps the optimizer in a LossScaleOptimizer for mixed_float16 by itself."""
    with strategy.scope(), distribute.apply_precision(cfg.precision):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return model


def _float32_copy(model, cfg: TrainConfig, num_classes: int):
    """The trained weights in a plain float32 model built outside any strategy: what model.keras
    holds, so eval, predict and the TFLite export never see a mixed policy or a distributed variable."""
    with distribute.apply_precision("float32"):
        final = build_network(cfg, num_classes, pretrained=False)
    final.set_weights(model.get_weights())  # variables are float32 under every policy
    return final


def _plan(cfg: TrainConfig, source: Source, model, *, estimate: bool) -> Budget:
    """A new run's budget. ``estimate``: time the model to cap the plan by the time budget (never on
    multi-worker runs, whose workers must agree on the plan without talking)."""
    seconds = estimate_step_seconds(model, cfg.batch_size, cfg.image_size, CLASSIFIER_RULE) if estimate else None
    return plan_budget(source.split_sizes["train"], cfg.batch_size, CLASSIFIER_RULE, epochs=cfg.epochs,
                       steps=cfg.steps, time_budget_min=cfg.time_budget_min, step_seconds=seconds)


def _train(cfg: TrainConfig, source: Source, profile: DataProfile, choices: list[dict], run: RunFolder,
           mine: RunFolder, *, resuming: bool, verbose: int, strategy, chief: bool) -> dict:
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
    init = load_matching_weights(model, Path(cfg.init)) if cfg.init else None
    budget = settle_budget(run, resuming=resuming, writes=chief,
                           plan=lambda: _plan(cfg, source, model, estimate=distribute.num_workers(strategy) == 1))
    weights, _ = class_weights(profile, cfg.class_weights)
    mine.resume_dir.mkdir(parents=True, exist_ok=True)
    history_csv = mine.resume_dir / "history.csv"
    monitor = stopping_monitor(source.split_sizes.get("validation", 0))

    clock: list = []

    def fit(learning_rate, *, first_epoch: int, last_epoch: int, stops: bool, backup: str, timed: bool = False):
        compiled = compile_model(model, cfg, strategy, learning_rate)
        # A non-chief worker restores what the chief saved, so every worker starts from the same
        # epoch and weights, and never writes a backup of its own.
        restore = [] if chief or not resuming else [keras_compat.restore_only(run.resume_dir / backup)]
        stopper = BudgetEarlyStopping(monitor, "min" if monitor.endswith("loss") else "max",
                                      budget_epochs=last_epoch - first_epoch, steps_per_epoch=budget.steps_per_epoch,
                                      patience_steps=cfg.patience_steps) if stops else None
        callbacks = training_callbacks(run, stopping=stopper, history_csv=history_csv, log_dir=mine.logs,
                                       writes_backup=chief, restore=restore, backup=backup)
        if timed:
            clock.extend(budget_clock(budget, learning_rate, resuming=resuming,
                                      on_replan=lambda b: write_budget(run, b) if chief else None))
        feed, steps_per_epoch = budget.epoch_feed(train_ds)
        compiled.fit(feed, steps_per_epoch=steps_per_epoch, validation_data=val_ds, initial_epoch=first_epoch,
                     epochs=budget.fit_epochs if clock else last_epoch, callbacks=callbacks + clock, verbose=verbose, class_weight=weights,
                     shuffle=False)  # the dataset reshuffles itself, seeded
        return compiled

    def fit_all():
        if cfg.model == "mobilenetv2" and (cfg.mobilenet.weights != "none" or cfg.init):
            return _fine_tune(model, cfg, budget, mine, fit)  # a pretrained backbone: head first
        return fit(warmup_cosine(cfg.learning_rate, budget.steps), first_epoch=0, last_epoch=budget.epochs,
                   stops=True, backup="backup", timed=True)

    model, train_seconds = fit_once(run, model, fit_all, resuming=resuming, writes=chief)
    budget = clock[0].budget if clock else budget
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
                          budget=budget, recipe=choices, profile=profile.to_dict(),
                          init=init.to_dict() if init else None,
                          validation_accuracy=max(history.get("val_accuracy", [float("nan")])))
    write_training_report(run.report, config=cfg.to_dict(), metrics=metrics, label_names=label_names,
                          skipped=source.skipped)
    finish_run(run, None, metrics)
    print(f"Test accuracy {test['accuracy']:.2%} ({test['examples']} images). Run folder: {run.root}")
    return metrics


def stopping_monitor(validation_images: int) -> str:
    """What early stopping judges: validation accuracy (smoothed) when the split is big enough for it to
    move in steps of 1 % at most (ACCURACY_RESOLUTION images), else validation loss, which is not
    quantised. Loss is not the default: it rises as a model grows confident while its accuracy still
    improves, and would send the run back to an early epoch."""
    return "val_accuracy" if validation_images >= ACCURACY_RESOLUTION else "val_loss"


def _fine_tune(model, cfg: TrainConfig, budget: Budget, mine: RunFolder, fit):
    """MobileNetV2's two phases: the head alone (HEAD_SHARE of the epochs), then the top
    ``fine_tune_blocks`` blocks too, at FINE_TUNE_LR_SHARE of the learning rate. The head's weights
    are kept in RUN/.resume after phase 1, so a run killed in phase 2 does not redo it."""
    head_epochs = min(max(1, round(HEAD_SHARE * budget.epochs)), budget.epochs - 1) if budget.epochs > 1 else 1
    head_weights = mine.resume_dir / "head.weights.h5"
    set_trainable_top_blocks(model, 0)
    if head_weights.exists():
        model.load_weights(head_weights)
    else:
        model = fit(warmup_cosine(cfg.learning_rate, head_epochs * budget.steps_per_epoch), first_epoch=0,
                    last_epoch=head_epochs, stops=False, backup="backup-head")
        with atomic_path(head_weights) as tmp:
            model.save_weights(tmp)
    if head_epochs >= budget.epochs:
        return model
    set_trainable_top_blocks(model, cfg.mobilenet.fine_tune_blocks)
    tail = (budget.epochs - head_epochs) * budget.steps_per_epoch
    return fit(warmup_cosine(cfg.learning_rate * FINE_TUNE_LR_SHARE, tail), first_epoch=head_epochs,
               last_epoch=budget.epochs, stops=True, backup="backup")
