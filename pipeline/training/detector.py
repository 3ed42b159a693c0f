"""Training an SSD detector into a run folder, resumable after a kill.

The same order of work, and the same run-folder artifacts, as the classifier
(``pipeline.training.classifier``): validate the data, decide new / resume / done, train with
BackupAndRestore in RUN/.resume, then write model.keras, labels.txt,
config.json, report.md (+ plots/, samples/) atomically and metrics.json last.
metrics.json holds COCO box metrics of the test split instead of accuracy.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from common.errors import ConfigError
from common.run_folder import RunFolder, atomic_path
from models.anchor_fit import anchor_recall, fit_anchors
from models.anchors import generate_anchors
from models.losses import LossConfig, SSDLoss
from models.matching import DEFAULT_IOU_THRESHOLD
from models.postprocess import MAX_DETECTIONS, NMS_IOU, SCORE_THRESHOLD, decode_detections
from models.presets import default_ssd
from models.ssd import SSDConfig, build_ssd, split_predictions
from pipeline.detection_dataset import (DetectionAugmentConfig, DetectionPipelineConfig, detection_dataset,
                                        detection_eval_dataset)
from pipeline.evaluation.coco_eval import evaluate_detector
from pipeline.evaluation.report import plot_detection_examples, plot_loss_curves, write_detection_report
from pipeline.sources.schema import Source
from pipeline.training.history import read_history
from pipeline.training.budget import (DETECTOR_RULE, STEP_OVERHEAD_S, WarmupCosine, budget_clock,
                                      check_budget_settings, estimate_step_seconds, plan_budget, warmup_cosine)
from pipeline.training.lifecycle import (default_verbosity, finish_run, fit_once, run_lifecycle, run_metrics,
                                         settle_budget, start_run, training_callbacks, without_legacy_keys,
                                         write_budget)
from pipeline.training.recipe import DataProfile, describe_choices, detector_input_size, profile_source
from pipeline.training.stopping import DEFAULT_PATIENCE_STEPS, BudgetEarlyStopping
from pipeline.training.warm_start import load_matching_weights

LOW_ANCHOR_RECALL = 0.9  # below this share of boxes with an anchor at the matching IoU, the run warns
EXAMPLE_IMAGES = 6  # test images drawn with predicted and true boxes in the report
SIDE_STEPS = 3000  # a time-budgeted run lowers its input side while the budget affords fewer steps (of 16
                   # images) at it: calibrated on the photo benchmark (README), where the native 256 px at
                   # 3,330 steps beat 224 and 192 px at 4,080, and 256 px at 1,020 steps (of 32) lost
OPTIMIZERS = ("adam", "sgd")  # sgd: momentum 0.9


@dataclass(frozen=True)
class DetectTrainConfig:
    """Everything that determines a detection run; saved as RUN/config.json.

    ssd:             the model, anchors (and so the input size) included.
    loss:            the SSD loss settings.
    augment:         box-aware training augmentation.
    iou_threshold:   anchor matching IoU for the targets.
    score_threshold, nms_iou, max_detections: post-processing for evaluation and predict
                     (a low score threshold: mAP needs the whole precision/recall curve).
    epochs / steps:  an explicit budget (at most one); None: the step budget (pipeline.training.budget).
    time_budget_min: the time cap of the step budget (None: the rule's, 30 min).
    patience_steps:  early stopping's patience, in optimizer steps.
    auto_input:      choose the input size from the object sizes (pipeline.training.recipe);
                     False when IMAGE_SIZE= is given (or a search chose it).
    auto_anchors:    fit the anchor scales and aspect ratios to the training boxes (models.anchor_fit),
                     kept only when they cover more boxes than ``ssd.anchors``.
    init:            an earlier run folder to start from (pipeline.training.warm_start).

    config.json holds the resolved config (``resolve_config``), so a resumed run compares like with like.
    """

    data: str = "shapes"
    task: str = "detect"
    ssd: SSDConfig = field(default_factory=default_ssd)
    loss: LossConfig = field(default_factory=lambda: LossConfig(min_negatives=8))
    augment: DetectionAugmentConfig = field(default_factory=DetectionAugmentConfig)
    epochs: int | None = None
    steps: int | None = None
    time_budget_min: float | None = None
    batch_size: int = 16  # 32 measured 0.801 mAP@.5 on the benchmark photos in the same 30 min, 16 0.832
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    patience_steps: int = DEFAULT_PATIENCE_STEPS
    seed: int = 0
    auto_input: bool = True
    auto_anchors: bool = True
    init: str | None = None
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    score_threshold: float = SCORE_THRESHOLD
    nms_iou: float = NMS_IOU
    max_detections: int = MAX_DETECTIONS

    def __post_init__(self):
        if self.task != "detect":
            raise ConfigError(f"TASK={self.task}: DetectTrainConfig is for TASK=detect")
        check_budget_settings(self.epochs, self.steps, self.time_budget_min)
        if self.batch_size < 1:
            raise ConfigError(f"BATCH={self.batch_size}: must be at least 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"LR={self.learning_rate}: must be positive")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if not (0 < self.iou_threshold <= 1 and 0 <= self.score_threshold < 1 and 0 < self.nms_iou <= 1):
            raise ConfigError("iou_threshold, nms_iou must be in (0, 1] and score_threshold in [0, 1)")

    @property
    def image_size(self) -> int:
        return self.ssd.input_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ssd"] = self.ssd.to_dict()
        d["loss"] = asdict(self.loss)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DetectTrainConfig":
        d = without_legacy_keys(d)
        d["ssd"] = SSDConfig.from_dict(d.get("ssd", default_ssd().to_dict()))
        d["loss"] = LossConfig(**d.get("loss", {}))
        d["augment"] = DetectionAugmentConfig(**d.get("augment", {}))
        return cls(**d)

    def pipeline(self) -> DetectionPipelineConfig:
        return DetectionPipelineConfig(batch_size=self.batch_size, iou_threshold=self.iou_threshold,
                                       augment=self.augment)


def keras_detect_fn(model, cfg: DetectTrainConfig, score_threshold: float | None = None):
    """A ``coco_eval.Detect`` callable for a Keras SSD: float32 [B, S, S, 3] -> B prediction dicts."""
    anchors = generate_anchors(cfg.ssd.anchors)
    threshold = cfg.score_threshold if score_threshold is None else score_threshold

    @tf.function(reduce_retracing=True)
    def run(images):
        deltas, logits = split_predictions(model(images, training=False))
        return decode_detections(deltas, logits, anchors, threshold, cfg.nms_iou, cfg.max_detections)

    def detect(images: np.ndarray) -> list[dict]:
        d = run(tf.convert_to_tensor(images, tf.float32))
        boxes, scores, classes, num = (np.asarray(t) for t in d)
        return [{"boxes": boxes[i, :num[i]], "classes": classes[i, :num[i]], "scores": scores[i, :num[i]]}
                for i in range(len(num))]

    return detect


def afforded_steps(cfg: DetectTrainConfig, side: int, num_classes: int):
    """side -> the optimizer steps ``cfg``'s time budget affords at that input side: the step time of
    ``cfg``'s model built at ``side`` (``estimate_step_seconds``, timed at the first call only), its
    compute scaled by the pixels for other sides."""
    @functools.cache
    def compute_seconds() -> float:
        model = build_ssd(cfg.ssd.replace(anchors=cfg.ssd.anchors.replace(input_size=side)), num_classes)
        return estimate_step_seconds(model, cfg.batch_size, side, DETECTOR_RULE) - STEP_OVERHEAD_S

    limit_s = DETECTOR_RULE.limit_seconds(cfg.time_budget_min)
    return lambda s: int(limit_s / (compute_seconds() * (s / side) ** 2 + STEP_OVERHEAD_S))


def resolve_config(cfg: DetectTrainConfig, profile: DataProfile, num_classes: int = 1
                   ) -> tuple[DetectTrainConfig, list[dict]]:
    """``cfg`` with the input size and anchors chosen from the boxes (where ``auto_*`` asks for it);
    and the choices, each {"setting", "value", "why"}, the anchor recall included. A run held to its
    time budget (no EPOCHS= / STEPS=) may get a smaller side, so that the budget affords the steps
    (``recipe.detector_input_size``; the model is timed at the side the objects want, with
    ``num_classes``)."""
    choices = []
    anchors = cfg.ssd.anchors
    larger = "a larger IMAGE_SIZE="
    if cfg.auto_input:
        side, why = detector_input_size(profile)
        wanted = side
        if cfg.epochs is None and cfg.steps is None and len(profile.boxes):
            side, why = detector_input_size(profile, afforded_steps(cfg, wanted, num_classes),
                                            SIDE_STEPS)
            if side < wanted:
                larger += " with a longer TIME_BUDGET="
        anchors = anchors.replace(input_size=side)
        choices.append({"setting": "IMAGE_SIZE", "value": side, "why": why})
    if cfg.auto_anchors and len(profile.boxes):
        fit = fit_anchors(profile.boxes, anchors, cfg.iou_threshold, seed=cfg.seed)
        anchors = fit.config
        choices.append({"setting": "anchors", "value": f"scales {anchors.min_scale:g}..{anchors.max_scale:g}, "
                                                       f"aspect ratios {list(anchors.aspect_ratios)}",
                        "why": f"{fit.chosen}: anchor recall {fit.recall:.1%} at IoU {cfg.iou_threshold:g} "
                               f"(the preset's {fit.base_recall:.1%})"})
    if len(profile.boxes):
        recall = anchor_recall(profile.boxes, anchors, cfg.iou_threshold)
        choices.append({"setting": "anchor recall", "value": round(recall, 4),
                        "why": f"share of the sampled boxes with an anchor at IoU >= {cfg.iou_threshold:g}"
                               + (f" - LOW: small or oddly shaped objects will be missed; try {larger}"
                                  if recall < LOW_ANCHOR_RECALL else "")})
    return replace(cfg, ssd=cfg.ssd.replace(anchors=anchors)), choices


def build_detector(cfg: DetectTrainConfig, num_classes: int):
    """The SSD model of ``cfg`` (seeded), uncompiled."""
    keras.utils.set_random_seed(cfg.seed)
    return build_ssd(cfg.ssd, num_classes)


def compile_detector(model, cfg: DetectTrainConfig, total_steps: int, schedule: WarmupCosine | None = None):
    """Compile with the warm-up + cosine schedule over ``total_steps`` (or ``schedule``, made by the caller)."""
    lr = schedule or warmup_cosine(cfg.learning_rate, total_steps)
    if cfg.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.9, global_clipnorm=10.0)
    else:
        optimizer = keras.optimizers.Adam(lr, global_clipnorm=10.0)
    model.compile(optimizer=optimizer, loss=SSDLoss(cfg.loss))
    # The optimizer's slots, made now rather than on the first step: a tf.function that creates
    # variables is traced twice, and tracing the SSD's train step is most of a short run's time on a
    # CPU (measured at 64 px with Adam: 139 s -> 38 s for the first step on a loaded 2-core machine).
    optimizer.build(model.trainable_variables)
    return model


def load_detector_model(path: Path):
    """model.keras of a detection run, for inference (the training loss is not needed)."""
    return keras.models.load_model(path, compile=False)


def train_detector(cfg: DetectTrainConfig, source: Source, run_dir: Path, *, force: bool = False,
                   verbose: int | None = None) -> dict:
    """Train (or resume, or recognise as done) the detection run in ``run_dir``. Returns metrics.json's content.

    What ``cfg`` leaves to the data (input size, anchors) is chosen first; config.json holds the result."""
    if source.task != "detect":
        raise ConfigError(f"DATA={cfg.data} is a {source.task} source; train_detector needs a detection source")
    if source.split_sizes.get("train", 0) == 0:
        raise ConfigError(f"DATA={cfg.data}: the train split is empty")
    if cfg.init is not None:
        RunFolder(Path(cfg.init)).require_model()  # a wrong INIT= fails before anything is written
    verbose = default_verbosity() if verbose is None else verbose
    profile = profile_source(source)
    cfg, choices = resolve_config(cfg, profile, source.num_classes)
    print("Chosen from the data (explicit variables win):\n" + describe_choices(choices))
    return run_lifecycle(Path(run_dir), cfg.to_dict(), force=force,
                         train=lambda run, resuming: _train(cfg, source, profile, choices, run, resuming=resuming,
                                                            verbose=verbose),
                         describe_done=lambda m: f"test mAP@.5 {m['test']['map50']:.3f}")


def _train(cfg: DetectTrainConfig, source: Source, profile: DataProfile, choices: list[dict], run: RunFolder, *,
           resuming: bool, verbose: int) -> dict:
    label_names = list(source.label_names)
    start_run(run, cfg.to_dict(), label_names)
    anchors = cfg.ssd.anchors
    cache_dir = run.resume_dir / "cache"
    pipe = cfg.pipeline()
    train_ds = detection_dataset(source, "train", anchors, pipe, training=True, seed=cfg.seed, cache_dir=cache_dir)
    has_val = source.split_sizes.get("validation", 0) > 0
    val_ds = detection_dataset(source, "validation", anchors, pipe, training=False, cache_dir=cache_dir) \
        if has_val else None

    model = build_detector(cfg, len(label_names))
    init = load_matching_weights(model, Path(cfg.init)) if cfg.init else None
    budget = settle_budget(run, resuming=resuming, plan=lambda: plan_budget(
        source.split_sizes["train"], cfg.batch_size, DETECTOR_RULE, epochs=cfg.epochs, steps=cfg.steps,
        time_budget_min=cfg.time_budget_min,
        step_seconds=estimate_step_seconds(model, cfg.batch_size, cfg.image_size, DETECTOR_RULE)))
    schedule = warmup_cosine(cfg.learning_rate, budget.steps)
    compile_detector(model, cfg, budget.steps, schedule)
    history_csv = run.resume_dir / "history.csv"
    monitor = "val_loss" if has_val else "loss"
    stopper = BudgetEarlyStopping(monitor, "min", budget_epochs=budget.epochs, steps_per_epoch=budget.steps_per_epoch,
                                  patience_steps=cfg.patience_steps)
    callbacks = training_callbacks(run, stopping=stopper, history_csv=history_csv, log_dir=run.logs)
    clock = budget_clock(budget, schedule, resuming=resuming, on_replan=lambda b: write_budget(run, b))
    feed, steps_per_epoch = budget.epoch_feed(train_ds)

    def fit():
        model.fit(feed, steps_per_epoch=steps_per_epoch, validation_data=val_ds,
                  epochs=budget.fit_epochs if clock else budget.epochs, callbacks=callbacks + clock, verbose=verbose,
                  shuffle=False)  # the dataset reshuffles itself, seeded
        return model

    model, train_seconds = fit_once(run, model, fit, resuming=resuming)
    budget = clock[0].budget if clock else budget
    history = read_history(history_csv)

    test_split = "test" if source.split_sizes.get("test", 0) > 0 else "validation"
    test_batches = detection_eval_dataset(source, test_split, cfg.image_size, cfg.batch_size, cache_dir=cache_dir)
    detect = keras_detect_fn(model, cfg)
    test, gts, preds = evaluate_detector(detect, test_batches, label_names)
    with atomic_path(run.model) as tmp:
        model.save(tmp)
    _save_samples(run, source, label_names)
    run.plots.mkdir(exist_ok=True)
    plot_loss_curves(history, run.plots / "training_curves.png")
    examples = plot_detection_examples(run.root, source.examples(test_split), preds, label_names, EXAMPLE_IMAGES)
    metrics = run_metrics(test, history, train_seconds=train_seconds, model=model, source=source, budget=budget,
                          test_split=test_split, recipe=choices, profile=profile.to_dict(),
                          init=init.to_dict() if init else None,
                          validation_loss=min(history.get("val_loss", [float("nan")])) if has_val else None)
    write_detection_report(run.report, config=cfg.to_dict(), metrics=metrics, examples=examples,
                           skipped=source.skipped)
    finish_run(run, None, metrics)
    print(f"Test mAP@.5 {test['map50']:.3f}, mAP@[.5:.95] {test['map']:.3f} ({test['images']} images, "
          f"{test['objects']} objects). Run folder: {run.root}")
    return metrics


def _save_samples(run: RunFolder, source: Source, label_names, count: int = EXAMPLE_IMAGES) -> None:
    """A few test images (raw pixels) for `predict` without IMAGE=."""
    run.samples.mkdir(parents=True, exist_ok=True)
    split = "test" if source.split_sizes.get("test", 0) > 0 else "validation"
    for i, ex in enumerate(source.examples(split).take(count)):
        with atomic_path(run.samples / f"test_{i:02d}.png") as tmp:
            Image.fromarray(ex["image"].numpy()).save(tmp, format="PNG")
