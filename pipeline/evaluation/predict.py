"""What `make predict` shows: a Label / Probability table, or a Label / Score / box table and a PNG
with the boxes drawn. Works on any model behind the ``Classifier`` or ``Detector`` protocol (a run's
Keras model or an exported .tflite, see ``tasks``); every one takes raw RGB pixels through the
shared ``preprocess_image``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import UserError
from common.run_folder import RunFolder
from pipeline.evaluation.report import DISPLAY_THRESHOLD, draw_detections
from pipeline.preprocess import preprocess_for_model
from pipeline.sources.images import load_rgb


class Classifier(Protocol):
    label_names: list[str]
    image_size: int

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] raw RGB -> float32 [num_classes] probabilities."""


class Detector(Protocol):
    label_names: list[str]
    image_size: int

    def detect_batch(self, images: np.ndarray) -> list[dict]:
        """float32 [B, S, S, 3] 0..255 -> B dicts {"boxes" float32 [K, 4], "classes" int32 [K], "scores" float32 [K]}."""


def top_k(probs: np.ndarray, label_names, k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-probs)[: max(1, min(k, len(label_names)))]
    return [(label_names[i], float(probs[i])) for i in order]


def format_table(rows: list[tuple[str, float]]) -> str:
    width = max(len("Label"), *(len(name) for name, _ in rows))
    lines = [f"{'Label':<{width}}  Probability", f"{'-' * width}  -----------"]
    lines += [f"{name:<{width}}  {p:11.4f}" for name, p in rows]
    return "\n".join(lines)


def predict_file(classifier: Classifier, image_path: Path, k: int = 5) -> list[tuple[str, float]]:
    image = load_rgb(image_path, min_side=classifier.image_size)  # as training decoded it (images.jpeg_scale)
    return top_k(classifier.predict_image(image), classifier.label_names, k)


def default_image(run_dir: Path) -> Path:
    """A sample test image saved by training, for `make predict` without IMAGE=."""
    samples = sorted(RunFolder(Path(run_dir)).samples.glob("*.png"))
    if not samples:
        raise UserError(f"no IMAGE= given and {run_dir}/samples/ has no sample images; pass IMAGE=path/to/image")
    return samples[0]


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


def predict_detections(detector: Detector, image_path: Path, out_png: Path,
                       score_threshold: float = DISPLAY_THRESHOLD) -> list[tuple[str, float, tuple[float, ...]]]:
    """Detect objects in one image file and draw them to ``out_png`` (e.g. RUN/predictions/<name>.png;
    not beside the image, where it would become the next sample). Returns the table rows
    (see ``detection_rows``), best first."""
    image = load_rgb(Path(image_path))
    detections = detect_image(detector, image, score_threshold)
    draw_detections(image, detections, detector.label_names, Path(out_png))
    return detection_rows(detections, detector.label_names)
