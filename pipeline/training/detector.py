"""Training an SSD detector into a run folder, resumable after a kill.

The same order of work, and the same run-folder artifacts, as the classifier
(``pipeline.training.classifier``): validate the data, decide new / resume / done, train with
BackupAndRestore in RUN/.resume, then write model.keras, labels.txt,
config.json, report.md (+ plots/, samples/) atomically and metrics.json last.
metrics.json holds COCO box metrics of the test split instead of accuracy.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.run_folder import RunFolder, atomic_path, write_json, write_text
from models.anchors import AnchorConfig, generate_anchors
from models.losses import LossConfig
from models.ssd import SSDConfig
from pipeline.detection_dataset import (DetectionAugmentConfig, DetectionPipelineConfig, detection_dataset,
                                        detection_eval_dataset)
from pipeline.sources.schema import Source
from pipeline.training.classifier import prepare_run_folder, read_history, run_metrics

EXAMPLE_IMAGES = 6  # test images drawn with predicted and true boxes in the report
OPTIMIZERS = ("adam", "sgd")  # sgd: momentum 0.9


def default_ssd() -> SSDConfig:
    """The detector for the built-in 128 px shapes: objects are 16..44 % of the image side."""
    return SSDConfig(
        anchors=AnchorConfig(input_size=128, strides=(8, 16, 32), min_scale=0.15, max_scale=0.45,
                             aspect_ratios=(1.0, 2.0, 0.5)),
        alpha=0.35, head="ssdlite", head_depth=1, head_filters=64, extra_filters=128,
    )


@dataclass(frozen=True)
class DetectTrainConfig:
    """Everything that determines a detection run; saved as RUN/config.json.

    ssd:             the model, anchors (and so the input size) included.
    loss:            the SSD loss settings.
    augment:         box-aware training augmentation.
    iou_threshold:   anchor matching IoU for the targets.
    score_threshold, nms_iou, max_detections: post-processing for evaluation and predict
                     (a low score threshold: mAP needs the whole precision/recall curve).
    """

    data: str = "shapes"
    task: str = "detect"
    ssd: SSDConfig = field(default_factory=default_ssd)
    loss: LossConfig = field(default_factory=lambda: LossConfig(min_negatives=8))
    augment: DetectionAugmentConfig = field(default_factory=DetectionAugmentConfig)
    epochs: int = 10  # ~20 min on 2 CPU cores for the built-in data; real datasets want EPOCHS= more
    batch_size: int = 32
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    patience: int = 10
    seed: int = 0
    iou_threshold: float = 0.5
    score_threshold: float = 0.01
    nms_iou: float = 0.5
    max_detections: int = 100

    def __post_init__(self):
        if self.task != "detect":
            raise ConfigError(f"TASK={self.task}: DetectTrainConfig is for TASK=detect")
        if self.epochs < 1:
            raise ConfigError(f"EPOCHS={self.epochs}: must be at least 1")
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
        d = dict(d)
        d["ssd"] = SSDConfig.from_dict(d.get("ssd", default_ssd().to_dict()))
        d["loss"] = LossConfig(**d.get("loss", {}))
        d["augment"] = DetectionAugmentConfig(**d.get("augment", {}))
        return cls(**d)

    def pipeline(self) -> DetectionPipelineConfig:
        return DetectionPipelineConfig(batch_size=self.batch_size, iou_threshold=self.iou_threshold,
                                       augment=self.augment)


def keras_detect_fn(model, cfg: DetectTrainConfig, score_threshold: float | None = None):
    """A ``coco_eval.Detect`` callable for a Keras SSD: float32 [B, S, S, 3] -> B prediction dicts."""
    import tensorflow as tf

    from models.postprocess import decode_detections
    from models.ssd import split_predictions

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


def _lr_schedule(keras, cfg: DetectTrainConfig, steps_per_epoch: int):
    """One warm-up epoch, then cosine decay to 1 % over the run."""
    total = max(cfg.epochs * steps_per_epoch, 2)
    warmup = min(steps_per_epoch, total // 2)
    return keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate * 0.1, decay_steps=total - warmup, alpha=0.01,
        warmup_target=cfg.learning_rate, warmup_steps=warmup)


def build_detector(cfg: DetectTrainConfig, num_classes: int, steps_per_epoch: int):
    """The compiled SSD model of ``cfg`` (seeded)."""
    import keras

    from models.losses import SSDLoss
    from models.ssd import build_ssd

    keras.utils.set_random_seed(cfg.seed)
    model = build_ssd(cfg.ssd, num_classes)
    lr = _lr_schedule(keras, cfg, steps_per_epoch)
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
    import keras

    return keras.models.load_model(path, compile=False)


def train_detector(cfg: DetectTrainConfig, source: Source, run_dir: Path, *, force: bool = False,
                   verbose: int | None = None) -> dict:
    """Train (or resume, or recognise as done) the detection run in ``run_dir``. Returns metrics.json's content."""
    if source.task != "detect":
        raise ConfigError(f"DATA={cfg.data} is a {source.task} source; train_detector needs a detection source")
    if source.split_sizes.get("train", 0) == 0:
        raise ConfigError(f"DATA={cfg.data}: the train split is empty")
    run = RunFolder(Path(run_dir))
    state = prepare_run_folder(run, cfg, force)
    if state == "done":
        metrics = json.loads(run.metrics.read_text())
        print(f"{run.root} is already trained (test mAP@.5 {metrics['test']['map50']:.3f}); FORCE=1 retrains it.")
        return metrics
    created = state == "new"
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    try:
        return _train(cfg, source, run, resuming=state == "resume", verbose=verbose)
    except KeyboardInterrupt:
        print(f"\nInterrupted. Run the same command again to resume from the last finished epoch ({run.root}).")
        raise
    except BaseException:
        if created and not run.resume_dir.exists():
            shutil.rmtree(run.root, ignore_errors=True)
        raise


def _train(cfg: DetectTrainConfig, source: Source, run: RunFolder, *, resuming: bool, verbose: int) -> dict:
    import keras

    from pipeline.evaluation.coco_eval import evaluate_detector

    label_names = list(source.label_names)
    run.root.mkdir(parents=True, exist_ok=True)
    write_json(run.config, cfg.to_dict())
    run.write_labels(label_names)
    anchors = cfg.ssd.anchors
    cache_dir = run.resume_dir / "cache"
    pipe = cfg.pipeline()
    train_ds = detection_dataset(source, "train", anchors, pipe, training=True, seed=cfg.seed, cache_dir=cache_dir)
    has_val = source.split_sizes.get("validation", 0) > 0
    val_ds = detection_dataset(source, "validation", anchors, pipe, training=False, cache_dir=cache_dir) \
        if has_val else None

    steps = max(1, math.ceil(source.split_sizes["train"] / cfg.batch_size))
    model = build_detector(cfg, len(label_names), steps)
    backup = run.resume_dir / "backup"
    if resuming and backup.exists():  # no backup: killed in its first epoch, so it starts over
        print(f"Resuming the unfinished run in {run.root}")
    run.resume_dir.mkdir(parents=True, exist_ok=True)
    history_csv = run.resume_dir / "history.csv"
    monitor = "val_loss" if has_val else "loss"
    callbacks = [
        # The epoch's CSV row before its backup: a kill between the two re-runs that epoch, whose new
        # row replaces the old one (read_history); the other order would lose the row for good.
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        # double_checkpoint: a kill in the middle of saving leaves the previous epoch's backup to resume
        # from; with one copy, every rerun would fail on the half-written file.
        keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(run.logs), histogram_freq=0, write_graph=False),
    ]
    start = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose,
              shuffle=False)  # the dataset reshuffles itself, seeded
    train_seconds = time.time() - start
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
    examples = _plot_examples(run, source, test_split, preds, label_names)
    metrics = run_metrics(test, history, train_seconds=train_seconds, model=model, source=source,
                          test_split=test_split,
                          validation_loss=min(history.get("val_loss", [float("nan")])) if has_val else None)
    write_detection_report(run.report, config=cfg.to_dict(), metrics=metrics, examples=examples,
                           skipped=source.skipped)
    write_json(run.metrics, metrics)  # last: its presence marks the run complete
    shutil.rmtree(run.resume_dir, ignore_errors=True)
    print(f"Test mAP@.5 {test['map50']:.3f}, mAP@[.5:.95] {test['map']:.3f} ({test['images']} images, "
          f"{test['objects']} objects). Run folder: {run.root}")
    return metrics


def _save_samples(run: RunFolder, source: Source, label_names, count: int = EXAMPLE_IMAGES) -> None:
    """A few test images (raw pixels) for `predict` without IMAGE=."""
    from PIL import Image

    run.samples.mkdir(parents=True, exist_ok=True)
    split = "test" if source.split_sizes.get("test", 0) > 0 else "validation"
    for i, ex in enumerate(source.examples(split).take(count)):
        with atomic_path(run.samples / f"test_{i:02d}.png") as tmp:
            Image.fromarray(ex["image"].numpy()).save(tmp, format="PNG")


def plot_loss_curves(history: dict[str, list[float]], path: Path) -> None:
    """Training and validation SSD loss per epoch."""
    from pipeline.evaluation.report import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, label, style in (("loss", "train", "-o"), ("val_loss", "validation", "-s")):
        if history.get(key):
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], style, ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("SSD loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def _plot_examples(run: RunFolder, source: Source, split: str, preds: list[dict], label_names) -> list[str]:
    """PNGs of the first test images with predicted (solid, score >= DISPLAY_THRESHOLD) and true
    (dashed) boxes; ``preds`` are the evaluation's predictions, in the split's order."""
    from pipeline.evaluation.detect_predict import DISPLAY_THRESHOLD, draw_detections

    names = []
    for i, ex in enumerate(source.examples(split).take(min(EXAMPLE_IMAGES, len(preds)))):
        keep = preds[i]["scores"] >= DISPLAY_THRESHOLD
        shown = {k: v[keep] for k, v in preds[i].items()}
        truth = {"boxes": ex["boxes"].numpy(), "labels": ex["labels"].numpy()}
        name = f"plots/example_{i:02d}.png"
        draw_detections(ex["image"].numpy(), shown, label_names, run.root / name, truth=truth)
        names.append(name)
    return names


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def write_detection_report(path: Path, *, config: dict, metrics: dict, examples: list[str], skipped=()) -> None:
    from pipeline.evaluation.report import _table

    test = metrics["test"]
    ssd = config["ssd"]
    a = ssd["anchors"]
    per_class = [[name, _fmt(m["ap"]), _fmt(m["ap50"]), m["objects"]] for name, m in test["per_class"].items()]
    parts = [
        f"# Detection training report: {config['data']}",
        "",
        f"**Test mAP@.5 {test['map50']:.3f}, mAP@[.5:.95] {test['map']:.3f}** (COCO, pycocotools) on "
        f"{test['images']} images with {test['objects']} objects ({metrics['test_split']} split), after "
        f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.0f} s. mAP@.75 {test['map75']:.3f}.",
        "",
        "## Data",
        _table(["split", "images"], [[k, v] for k, v in metrics["split_sizes"].items()]),
        "",
        "## Model",
        f"SSD ({ssd['head']} heads) on MobileNetV2 alpha {ssd['alpha']}, input {a['input_size']}x{a['input_size']} "
        f"RGB 0..255; feature strides {a['strides']}, anchor scales {a['min_scale']}..{a['max_scale']}, "
        f"aspect ratios {a['aspect_ratios']}; {metrics['parameters']:,} parameters.",
        "",
        "## Training curves",
        "![training curves](plots/training_curves.png)",
        "",
        "## Test results (AP per class)",
        _table(["class", "AP@[.5:.95]", "AP@.5", "objects"], per_class),
        "",
        "## Examples (solid: predicted, dashed: true)",
        "",
        *[f"![example]({name})" for name in examples],
        "",
    ]
    if skipped:
        parts += [f"## Skipped samples ({len(skipped)})", ""]
        parts += [f"- `{s.path}`: {s.problem}" for s in skipped[:200]]
        parts.append("")
    write_text(path, "\n".join(parts))
