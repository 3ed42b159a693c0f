"""Predict with a detector: a Label / Score / box table and a PNG with the boxes drawn.

Works with a detection run's model.keras (decoded with ``models.postprocess``)
and with an exported detector .tflite (its TFLite_Detection_PostProcess op does
the decoding and NMS; outputs boxes, classes, scores, count). Both take raw
RGB pixels through the shared ``preprocess_image``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import UserError
from common.run_folder import RunFolder
from pipeline.sources.images import load_rgb
from pipeline.preprocess import preprocess_for_model

DISPLAY_THRESHOLD = 0.4  # score below which a detection is not shown or listed


class Detector(Protocol):
    label_names: list[str]
    image_size: int

    def detect_batch(self, images: np.ndarray) -> list[dict]:
        """float32 [B, S, S, 3] 0..255 -> B dicts {"boxes" float32 [K, 4], "classes" int32 [K], "scores" float32 [K]}."""


class KerasDetector:
    """A detection run's model.keras, post-processed as configured in its config.json."""

    def __init__(self, run_dir: Path, score_threshold: float | None = None):
        from pipeline.training.detector import DetectTrainConfig, keras_detect_fn, load_detector_model

        run = RunFolder(Path(run_dir))
        model_path = run.require_model()
        cfg = DetectTrainConfig.from_dict(run.read_config())
        self.label_names = run.read_labels()
        self.image_size = cfg.image_size
        self.model = load_detector_model(model_path)
        self.detect_batch = keras_detect_fn(self.model, cfg, score_threshold)


class TFLiteDetector:
    """An exported detector .tflite, run as a phone runs it (ai_edge_litert, XNNPACK).

    Labels come from the model's embedded labels.txt, else labels.txt beside the file.
    Detections below the op's baked-in score threshold never appear; ``score_threshold``
    filters further.
    """

    def __init__(self, path: str | Path, threads: int = 1, score_threshold: float = 0.0):
        from export.metadata import read_metadata
        from export.runtime import TFLiteModel, model_labels

        self.path = Path(path)
        self.model = TFLiteModel(self.path, threads=threads)
        self.image_size = self.model.image_size
        self.score_threshold = score_threshold
        shapes = [tuple(d["shape"]) for d in self.model.outputs]
        if len(shapes) != 4 or len(shapes[0]) != 3 or shapes[0][-1] != 4 or len(shapes[3]) != 1:
            raise UserError(f"{self.path}: not a detector with outputs boxes, classes, scores, count "
                            f"(output shapes {shapes})")
        self.label_names = model_labels(self.path, read_metadata(self.model.model_bytes))

    def detect_batch(self, images: np.ndarray) -> list[dict]:
        out = []
        for image in np.asarray(images, np.float32):
            boxes, classes, scores, count = self.model.run(image[None])
            n = int(round(float(count[0])))
            keep = scores[0, :n] >= self.score_threshold
            out.append({"boxes": np.clip(boxes[0, :n][keep], 0.0, 1.0).astype(np.float32),
                        "classes": np.round(classes[0, :n][keep]).astype(np.int32),
                        "scores": scores[0, :n][keep].astype(np.float32)})
        return out


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


def detect_image(detector: Detector, image: np.ndarray, score_threshold: float = DISPLAY_THRESHOLD) -> dict:
    """Raw uint8 [H, W, 3] -> {"boxes", "classes", "scores"} with score >= threshold, best first."""
    d = detector.detect_batch(preprocess_for_model(image, detector.image_size))[0]
    keep = np.asarray(d["scores"]) >= score_threshold
    order = np.argsort(-np.asarray(d["scores"])[keep], kind="stable")
    return {k: np.asarray(v)[keep][order] for k, v in d.items()}


def detection_rows(detections: dict, label_names) -> list[tuple[str, float, tuple[float, ...]]]:
    """(label, score, (ymin, xmin, ymax, xmax)) per detection."""
    return [(label_names[int(c)] if 0 <= int(c) < len(label_names) else f"class {int(c)}", float(s),
             tuple(float(v) for v in b))
            for b, c, s in zip(detections["boxes"], detections["classes"], detections["scores"])]


def format_detection_table(rows) -> str:
    """A Label / Score / ymin xmin ymax xmax table (box normalized to the image)."""
    width = max(len("Label"), *(len(name) for name, _, _ in rows)) if rows else len("Label")
    lines = [f"{'Label':<{width}}  Score   ymin   xmin   ymax   xmax",
             f"{'-' * width}  -----  -----  -----  -----  -----"]
    lines += [f"{name:<{width}}  {score:5.3f}  " + "  ".join(f"{v:5.3f}" for v in box) for name, score, box in rows]
    if not rows:
        lines.append("(no detections)")
    return "\n".join(lines)


def draw_detections(image: np.ndarray, detections: dict, label_names, path: Path, *, truth: dict | None = None) -> None:
    """Write a PNG of ``image`` with predicted boxes (solid, labelled with score) and true boxes (dashed).

    detections: {"boxes" [K, 4], "classes" [K], "scores" [K]}; truth: {"boxes" [N, 4], "labels" [N]}.
    """
    from matplotlib import patches

    from pipeline.evaluation.report import plt, save_figure

    h, w = image.shape[:2]
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(4, 4 * h / w))
    ax.imshow(image)
    ax.set_axis_off()

    def rect(box, colour, style):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        ax.add_patch(patches.Rectangle((xmin * w - 0.5, ymin * h - 0.5), (xmax - xmin) * w, (ymax - ymin) * h,
                                       fill=False, edgecolor=colour, linewidth=1.6, linestyle=style))

    if truth is not None:
        for box, label in zip(truth["boxes"], truth["labels"]):
            rect(box, "white", "--")
    for box, cls, score in zip(detections["boxes"], detections["classes"], detections["scores"]):
        colour = colours(int(cls) % 10)
        rect(box, colour, "-")
        name = label_names[int(cls)] if 0 <= int(cls) < len(label_names) else str(int(cls))
        ax.text(float(box[1]) * w, float(box[0]) * h - 1, f"{name} {float(score):.2f}", color="white", fontsize=7,
                va="bottom", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
    save_figure(fig, path)


def predict_detections(detector: Detector, image_path: Path, out_png: Path,
                       score_threshold: float = DISPLAY_THRESHOLD) -> list[tuple[str, float, tuple[float, ...]]]:
    """Detect objects in one image file and draw them to ``out_png`` (e.g. RUN/predictions/<name>.png;
    not beside the image, where it would become the next sample). Returns the table rows
    (see ``detection_rows``), best first."""
    image = load_rgb(Path(image_path))
    detections = detect_image(detector, image, score_threshold)
    draw_detections(image, detections, detector.label_names, Path(out_png))
    return detection_rows(detections, detector.label_names)


def evaluate_detection_run(run_dir: Path, *, model_path: Path | None = None, data: str | None = None,
                           data_dir: Path | None = None, split: str = "test", batch_size: int = 32) -> dict:
    """COCO metrics of RUN's model.keras, or of ``model_path`` (.tflite or .keras), on a split.

    ``data`` defaults to the DATA= the run was trained on; its classes must be the run's.
    Returns {"model", "data", "split", **coco_metrics} (plain JSON values).
    """
    from pipeline.evaluation.coco_eval import evaluate_detector
    from pipeline.detection_dataset import detection_eval_dataset
    from pipeline.sources.specs import open_source
    from pipeline.training.detector import DetectTrainConfig

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
    return {"model": str(model_path or run.model), "data": data, "split": split, **metrics}
