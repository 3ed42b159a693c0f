"""The detector task: SSD on MobileNetV2 trained on boxes, scored by COCO mAP."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder
from export.app_score import detector_map
from export.detector_export import DetectorExport
from export.exporter import ExportConfig
from export.runtime import TFLiteDetector
from pipeline.detection_dataset import detection_eval_dataset
from pipeline.evaluation.coco_eval import evaluate_detector
from pipeline.evaluation.predict import Detector, format_detection_table, predict_detections
from pipeline.sources.specs import open_source
from pipeline.training.detector import DetectTrainConfig, keras_detect_fn, load_detector_model, train_detector
from tasks.base import Task
from tuning.tunables import DETECTOR_SEARCH

# cli.py train flags that shape the classifier's CNN: refused for a detector, never silently dropped
CNN_FLAGS = ("filters", "kernel_size", "pool_size", "pool_stride", "hidden_units", "dropout", "model", "alpha",
             "weights", "class_weights")


class KerasDetector:
    """A detection run's model.keras, post-processed as configured in its config.json."""

    def __init__(self, run_dir: Path, score_threshold: float | None = None):
        run = RunFolder(Path(run_dir))
        model_path = run.require_model()
        cfg = DetectTrainConfig.from_dict(run.read_config())
        self.label_names = run.read_labels()
        self.image_size = cfg.image_size
        self.model = load_detector_model(model_path)
        self.detect_batch = keras_detect_fn(self.model, cfg, score_threshold)


def load_detector(run_dir: Path | None, model_path: Path | None = None, *,
                  score_threshold: float | None = None) -> Detector:
    """MODEL=...tflite runs the exported detector; MODEL=...keras or RUN= the run's model.keras."""
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.exists():
            raise UserError(f"{model_path}: model file not found")
        if model_path.suffix == ".tflite":
            return TFLiteDetector(model_path, score_threshold=score_threshold or 0.0)
        if model_path.suffix == ".keras":
            return KerasDetector(model_path.parent, score_threshold)
        raise UserError(f"{model_path}: unknown model type (expected .keras or .tflite)")
    if run_dir is None:
        raise UserError("predict needs RUN= (a trained run folder) or MODEL= (a .keras or .tflite file)")
    return KerasDetector(Path(run_dir), score_threshold)


def evaluate_detection_run(run_dir: Path, *, model_path: Path | None = None, data: str | None = None,
                           data_dir: Path | None = None, split: str = "test", batch_size: int = 32) -> dict:
    """COCO metrics of RUN's model.keras, or of ``model_path`` (.tflite or .keras), on a split.

    ``data`` defaults to the DATA= the run was trained on; its classes must be the run's.
    Returns {"model", "data", "split", **coco_metrics} (plain JSON values).
    """
    run = RunFolder(Path(run_dir))
    run.require_model()
    cfg = DetectTrainConfig.from_dict(run.read_config())
    data = data or cfg.data
    source = open_source(data, "detect", data_dir=data_dir, seed=cfg.seed)
    labels = run.read_labels()
    if list(source.label_names) != labels:
        raise UserError(f"DATA={data}: its classes {list(source.label_names)} differ from the run's {labels}")
    if source.split_sizes.get(split, 0) == 0:
        raise UserError(f"DATA={data}: the {split} split is empty")
    detector = load_detector(run.root, model_path, score_threshold=cfg.score_threshold)
    if detector.image_size != cfg.image_size:
        raise UserError(f"{model_path}: input {detector.image_size} px, but the run's model takes {cfg.image_size} px")
    batches = detection_eval_dataset(source, split, cfg.image_size, batch_size)
    metrics, _, _ = evaluate_detector(detector.detect_batch, batches, labels)
    result = {"model": str(model_path or run.model), "data": data, "split": split, **metrics}
    if model_path is not None and Path(model_path).suffix == ".tflite":
        result["mediapipe"] = detector_map(Path(model_path).read_bytes(), source, split, labels, progress="MediaPipe Tasks")
    return result


class DetectorTask(Task):
    name = "detect"
    title = "detector"
    search = DETECTOR_SEARCH

    def config_from_args(self, args: argparse.Namespace) -> DetectTrainConfig:
        refused = [f"--{k.replace('_', '-')}" for k in CNN_FLAGS if getattr(args, k, None) is not None]
        if refused:
            raise ConfigError(f"{', '.join(refused)}: the classifier's settings (FILTERS, KERNEL, POOL, POOL_STRIDE, "
                              f"HIDDEN, DROPOUT, MODEL, ALPHA, WEIGHTS, CLASS_WEIGHTS) do not apply to TASK=detect")
        if args.workers > 1 or args.strategy not in ("auto", "default") or args.precision != "float32":
            raise ConfigError("TASK=detect trains on one worker in float32 for now (no STRATEGY=, PRECISION=, WORKERS=)")
        cfg = DetectTrainConfig(data=args.data, seed=args.seed)
        changes = {k: v for k, v in {"epochs": args.epochs, "steps": args.steps, "time_budget_min": args.time_budget,
                                     "batch_size": args.batch_size, "learning_rate": args.lr,
                                     "init": str(args.init) if args.init else None}.items() if v is not None}
        try:
            if args.image_size:
                changes["ssd"] = cfg.ssd.replace(anchors=cfg.ssd.anchors.replace(input_size=args.image_size))
                changes["auto_input"] = False
            if args.flip is not None:
                changes["augment"] = replace(cfg.augment, flip=bool(args.flip))
            return replace(cfg, **changes)
        except ValueError as e:
            raise ConfigError(f"IMAGE_SIZE={args.image_size}: {e}") from None

    def train(self, cfg: DetectTrainConfig, args: argparse.Namespace) -> dict:
        source = open_source(args.data, self.name, data_dir=args.data_dir, seed=args.seed, skip_bad=args.skip_bad)
        return train_detector(cfg, source, args.run, force=args.force)

    def evaluate(self, run_dir: Path, *, model_path: Path | None, data: str | None, data_dir: Path | None,
                 split: str) -> tuple[dict, str]:
        result = evaluate_detection_run(run_dir, model_path=model_path, data=data, data_dir=data_dir, split=split)
        line = (f"{result['model']} on {result['data']} [{split}]: mAP@[.5:.95] {result['map']:.3f}, "
                f"mAP@.5 {result['map50']:.3f} over {result['images']} images")
        app = result.get("mediapipe")
        if app is not None:  # the headline is what an app sees: MediaPipe Tasks on the images at their own size
            line = (f"{result['model']} on {result['data']} [{split}]: "
                    + (f"mAP@.5 {app['map50']:.3f}, mAP@[.5:.95] {app['map']:.3f} as an app sees it (MediaPipe Tasks); "
                       if "score" in app else f"{app['error']}; ")
                    + f"LiteRT with our preprocessing mAP@.5 {result['map50']:.3f}, mAP@[.5:.95] {result['map']:.3f} "
                      f"over {result['images']} images")
        return result, line

    def predict(self, run_dir: Path | None, *, model_path: Path | None, image: Path, top_k: int) -> str:
        detector = load_detector(run_dir, model_path)
        out_png = (Path(run_dir) if run_dir is not None else Path("runs")) / "predictions" / f"{Path(image).stem}.png"
        rows = predict_detections(detector, image, out_png)
        return f"{image}\n{format_detection_table(rows)}\nWrote {out_png}"

    def export_target(self, run_dir: Path, cfg: ExportConfig, *, data_dir: Path | None, log) -> DetectorExport:
        return DetectorExport(run_dir, cfg, data_dir=data_dir, log=log)
