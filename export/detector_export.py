"""The detector's part of `make export` (an ``export.exporter.ExportTarget``).

Calibration images come from the validation split (train when there is none), CALIB= of
them; verification runs the whole test split through the Keras model and each .tflite and
compares their detections (``export.verify.verify_detector``). Modes: float32 and int8
(``export.detector_convert``); the others, and pruning, are not built for the SSD yet and
are refused with a clear error rather than ignored.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder
from export.app_score import detector_map
from export.detector_convert import DETECTOR_MODES, PostProcess, convert_detector, with_detector_metadata
from export.exporter import ExportConfig
from export.golden import CANDIDATES, GoldenImages, detector_outputs
from export.runtime import TFLiteDetector
from export.verify import MAX_MAP_DROP, Verification, verify_detector
from pipeline.detection_dataset import detection_eval_dataset, ground_truth
from pipeline.evaluation.coco_eval import evaluate_detector
from pipeline.sources.specs import open_source
from pipeline.training.detector import DetectTrainConfig, keras_detect_fn, load_detector_model


def check_detector_export(cfg: ExportConfig) -> None:
    """ConfigError for settings a detector export cannot honour (never silently dropped)."""
    unsupported = [m for m in cfg.modes if m not in DETECTOR_MODES]
    if unsupported:
        raise ConfigError(f"QUANT={','.join(unsupported)}: a detector exports as {' or '.join(DETECTOR_MODES)} "
                          f"(or all)")
    if cfg.prune is not None:
        raise ConfigError(f"PRUNE={cfg.prune}: pruning is for classifiers; a detector exports unpruned")


class DetectorExport:
    """A detection run, ready to convert: its model, post-processing, calibration and test split."""

    task = "detect"
    quality = "mAP@.5"

    def __init__(self, run_dir: Path, cfg: ExportConfig, *, data_dir: Path | None = None, source=None,
                 log=print):
        check_detector_export(cfg)
        self.run = RunFolder(Path(run_dir))
        model_path = self.run.require_model()
        self.train_cfg = DetectTrainConfig.from_dict(self.run.read_config())
        self.labels = self.run.read_labels()
        self.source = source or open_source(self.train_cfg.data, "detect", data_dir=data_dir, seed=self.train_cfg.seed)
        if list(self.source.label_names) != self.labels:
            raise UserError(f"DATA={self.train_cfg.data}: its classes {list(self.source.label_names)} differ from "
                            f"the run's {self.labels}")
        self.model = load_detector_model(model_path)
        size = self.train_cfg.image_size
        self.calib_split = "validation" if self.source.split_sizes.get("validation", 0) else "train"
        self.calibration = [b["image"].numpy() for b in
                            detection_eval_dataset(self.source, self.calib_split, size, 1).take(cfg.calib)]
        if not self.calibration:
            raise UserError(f"DATA={self.train_cfg.data}: no {self.calib_split} images, so the int8 calibration set "
                            f"would be empty")
        self.test_split = "test" if self.source.split_sizes.get("test", 0) else self.calib_split
        self.batches = list(detection_eval_dataset(self.source, self.test_split, size, 16))
        log(f"Scoring the Keras model on the {self.test_split} split...")
        self.reference_metrics, _, self.reference_preds = evaluate_detector(
            keras_detect_fn(self.model, self.train_cfg), self.batches, self.labels, progress="Keras model")
        self.reference_score = float(self.reference_metrics["map50"])
        self.examples = int(self.reference_metrics["images"])
        self.post = PostProcess(score_threshold=self.train_cfg.score_threshold, iou_threshold=self.train_cfg.nms_iou,
                                max_detections=self.train_cfg.max_detections)

    def convert(self, mode: str, cfg: ExportConfig, log) -> bytes:
        tflite = convert_detector(self.model, self.train_cfg.ssd.anchors, len(self.labels), mode,
                                  calibration=self.calibration, post=self.post, io_dtype=cfg.int8_io)
        return with_detector_metadata(tflite, self.labels, name=f"{self.run.root.name} ({mode})", version=mode,
                                      description=f"SSD MobileNetV2 detector over {len(self.labels)} classes, "
                                                  f"trained on {self.train_cfg.data}; {mode} TFLite export.")

    def verify(self, mode: str, model_bytes: bytes, cfg: ExportConfig) -> Verification:
        detector = TFLiteDetector(model_bytes)
        metrics, _, preds = evaluate_detector(detector.detect_batch, self.batches, self.labels,
                                              progress=f"verifying {mode}")
        v = verify_detector(self.reference_metrics, self.reference_preds, metrics, preds,
                            min_agreement=cfg.min_agreement)
        app = detector_map(model_bytes, self.source, self.test_split, self.labels, progress=f"MediaPipe {mode}")
        return replace(v, detail={**v.detail, "mediapipe": app})

    golden_outputs = staticmethod(detector_outputs)

    def golden_images(self) -> GoldenImages:
        pixels, truth = [], []
        for batch in self.batches:
            pixels += list(np.asarray(batch["image"]))
            truth += [[self.labels[int(c)] for c in gt["labels"]] for gt in ground_truth(batch)]
            if len(pixels) >= CANDIDATES:
                break
        return GoldenImages(pixels=np.clip(np.round(np.stack(pixels[:CANDIDATES])), 0, 255).astype(np.uint8),
                            truth=truth[:CANDIDATES])

    def card(self, cfg: ExportConfig) -> dict:
        size = self.train_cfg.image_size
        return {
            "data": self.train_cfg.data,
            "input": {
                "shape": [1, size, size, 3],
                "color_order": "RGB",
                "pixels": "raw 0..255, resized to the input size by pipeline.preprocess.preprocess_image "
                          "(bilinear, antialiased); no normalisation outside the model",
                "float_input": "float32 pixel values 0..255; the graph scales them itself. "
                               "Metadata normalisation: mean 0, std 1.",
                "quantized_input": "uint8 with scale 1, zero point 0 takes camera bytes unchanged.",
            },
            "output": {"tensors": ["boxes [1, K, 4] normalized ymin, xmin, ymax, xmax", "classes [1, K]",
                                   "scores [1, K]", "count [1]"],
                       "max_detections": self.post.max_detections,
                       "score_threshold": self.post.score_threshold, "nms_iou": self.post.iou_threshold,
                       "semantics": "TFLite_Detection_PostProcess (per-class NMS); class = labels.txt line"},
            "calibration": {"split": self.calib_split, "images": len(self.calibration),
                            "plus_full_range_image": True},
            "keras_map": float(self.reference_metrics["map"]),
            "extra_check": f", and its mAP@.5 may be at most {MAX_MAP_DROP} below the Keras model's",
            "notes": [f"Agreement: the share of the Keras model's detections (score >= 0.4) that the .tflite "
                      f"finds again (same class, IoU >= 0.5)."],
        }
