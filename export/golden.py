"""Golden vectors: a handful of test images as the exact uint8 pixels an exported model sees, and
what LiteRT (Python) answers for each, so an app's own test can assert the same outputs.

`make export` writes RUN/export/golden/::

    golden.json          the contract (below)
    000_circle.png       each image, lossless, exactly model-input size (no resize left to do)
    000_circle.rgb       the same pixels raw: uint8, H x W x 3, RGB, row-major (sha256 in golden.json)

golden.json::

    {"task": "classify" | "detect", "input": {"height", "width", "channels": 3, "dtype": "uint8",
     "color_order": "RGB", "layout": "HWC row-major"}, "runtime": "...", "top_k": 5,
     "show_threshold": 0.4,
     "images": [{"name", "png", "rgb", "sha256", "truth": [label, ...]}, ...],
     "models": {"model_int8.tflite": [output of image 0, output of image 1, ...], ...}}

An output is, for a classifier, ``{"top_k": [{"index", "label", "score"}, ...]}`` (score
descending, ties by index); for a detector ``{"detections": [{"index", "label", "score",
"box": [ymin, xmin, ymax, xmax], "pixel_box": [origin_x, origin_y, width, height]}, ...]}``, every
detection the model's post-processing op returns, score descending. ``box`` is normalized and
clipped to the image (our canonical format); ``pixel_box`` is the integer box MediaPipe Tasks
report (``BoundingBox``, every platform): each of xmin * W, ymin * H, (xmax - xmin) * W and
(ymax - ymin) * H in float32, truncated toward zero, from the op's unclipped box. On a 64 px input
that truncation alone moves a 10 px box's IoU with ``box`` down to about 0.8, so a MediaPipe
result is compared with ``pixel_box``, not with ``box``.

How another runtime is judged against them (``agree``; the web page's self-test and the README's
Android/iOS examples): a classifier must give the same top-1 label; a detector must find every
golden detection with score >= ``show_threshold`` again (same class, IoU >= ``BOX_IOU``), and
every detection it shows (score >= ``show_threshold``) must be such a golden detection.

Images are chosen so that the answer is not a coin toss: a classifier image whose top two
scores tie in some model (an int8 output has 256 levels), or a detector image with a score
within ``SCORE_MARGIN`` of the threshold or a shown box edge within ``PIXEL_MARGIN`` of a
whole pixel (where truncation could go either way), is passed over for the next test image.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from ai_edge_litert import __version__ as LITERT_VERSION
from PIL import Image

from common.errors import UserError
from common.run_folder import write_bytes, write_json
from export.runtime import TFLiteDetector, TFLiteModel
from pipeline.evaluation.report import DISPLAY_THRESHOLD

GOLDEN_DIR = "golden"
GOLDEN_FILE = "golden.json"
GOLDEN_IMAGES = 8       # images written
CANDIDATES = 64         # test images looked at to find them
TOP_K = 5
BOX_IOU = 0.9           # a detection found again: same class and at least this overlap
SCORE_MARGIN = 0.02     # detector scores this close to the threshold make an image ambiguous
PIXEL_MARGIN = 1e-3     # ... and so do box edges this close to a whole pixel (pixel_box truncates)
RUNTIME = f"ai_edge_litert {LITERT_VERSION} Interpreter (Python, XNNPACK), 1 thread"


@dataclass(frozen=True)
class GoldenImages:
    """Test-split images as the model sees them.

    pixels: uint8 [N, S, S, 3] RGB (pipeline.preprocess output, no further resize).
    truth:  per image, the true label names (a classifier's one; a detector's objects).
    """

    pixels: np.ndarray
    truth: list[list[str]]


def classifier_outputs(model_bytes: bytes, pixels: np.ndarray, labels: list[str], top_k: int = TOP_K) -> list[dict]:
    """uint8 [N, S, S, 3] -> per image {"top_k": [{"index", "label", "score"}, ...], "ambiguous": bool}."""
    probs = TFLiteModel(model_bytes).predict_batch(np.asarray(pixels, np.float32))
    out = []
    for p in probs:
        order = np.lexsort((np.arange(len(p)), -p))  # score descending, then index
        out.append({"top_k": [{"index": int(i), "label": labels[i], "score": float(p[i])} for i in order[:top_k]],
                    "ambiguous": bool(len(p) > 1 and p[order[0]] <= p[order[1]])})
    return out


def pixel_box(box, width: int, height: int) -> tuple[list[int], bool]:
    """(MediaPipe's integer [origin_x, origin_y, width, height] of an unclipped normalized
    [ymin, xmin, ymax, xmax] box, whether an edge lies within PIXEL_MARGIN of a whole pixel)."""
    ymin, xmin, ymax, xmax = (np.float32(v) for v in box)
    w, h = np.float32(width), np.float32(height)
    values = [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h]  # float32, as MediaPipe computes
    near = any(abs(float(v) - round(float(v))) < PIXEL_MARGIN for v in values)
    return [int(v) for v in values], near  # int() truncates toward zero, as C++'s float -> int


def detector_outputs(model_bytes: bytes, pixels: np.ndarray, labels: list[str]) -> list[dict]:
    """uint8 [N, S, S, 3] -> per image {"detections": [{"index", "label", "score", "box", "pixel_box"}, ...],
    "ambiguous"}: every detection of the model's post-processing op (TFLiteDetector's, unclipped for pixel_box)."""
    detector = TFLiteDetector(model_bytes)
    out = []
    for image in np.asarray(pixels, np.float32):
        raw_boxes, classes, scores, count = detector.model.run(image[None])
        n = int(round(float(count[0])))
        raw_boxes, classes, scores = raw_boxes[0, :n], np.round(classes[0, :n]).astype(int), scores[0, :n]
        detections, ambiguous = [], bool(np.any(np.abs(scores - DISPLAY_THRESHOLD) < SCORE_MARGIN))
        for i in np.argsort(-scores, kind="stable"):
            pixels_i, near = pixel_box(raw_boxes[i], image.shape[1], image.shape[0])
            ambiguous |= near and scores[i] >= DISPLAY_THRESHOLD - SCORE_MARGIN
            detections.append({"index": int(classes[i]), "label": labels[int(classes[i])], "score": float(scores[i]),
                               "box": [float(v) for v in np.clip(raw_boxes[i], 0.0, 1.0)], "pixel_box": pixels_i})
        out.append({"detections": detections, "ambiguous": ambiguous})
    return out


def box_iou(a, b) -> float:
    """IoU of two boxes, normalized [ymin, xmin, ymax, xmax]."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def classification_agrees(expected: dict, got: dict) -> bool:
    """Same top-1 label (both: {"top_k": [{"label", ...}, ...]}, best first)."""
    return bool(expected["top_k"]) and bool(got["top_k"]) and expected["top_k"][0]["label"] == got["top_k"][0]["label"]


def pixel_box_corners(b) -> list[float]:
    """[origin_x, origin_y, width, height] -> [ymin, xmin, ymax, xmax] (same units)."""
    return [b[1], b[0], b[1] + b[3], b[0] + b[2]]


def detections_agree(expected: dict, got: dict, threshold: float = DISPLAY_THRESHOLD, min_iou: float = BOX_IOU,
                     key: str = "box") -> bool:
    """Every shown (score >= threshold) detection of either side has a partner of the same class at
    IoU >= min_iou on the other side (any score). Both: {"detections": [{"label", "score", key}]};
    ``key`` "box" (normalized) or "pixel_box" (MediaPipe's integer box)."""
    corners = pixel_box_corners if key == "pixel_box" else list

    def covered(shown: list[dict], others: list[dict]) -> bool:
        return all(any(o["label"] == d["label"] and box_iou(corners(d[key]), corners(o[key])) >= min_iou
                       for o in others)
                   for d in shown if d["score"] >= threshold)
    return covered(expected["detections"], got["detections"]) and covered(got["detections"], expected["detections"])


def pick_images(outputs: dict[str, list[dict]], n: int = GOLDEN_IMAGES) -> list[int]:
    """Indices of the first ``n`` images no model answers ambiguously (outputs: model -> per image)."""
    count = min(len(v) for v in outputs.values()) if outputs else 0
    return [i for i in range(count) if not any(v[i]["ambiguous"] for v in outputs.values())][:n]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:24] or "image"


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (no gamma or colour profile chunk: browsers show the bytes as sRGB)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_golden(out_dir: Path, task: str, images: GoldenImages, models: dict[str, bytes], labels: list[str],
                 outputs_fn: Callable[[bytes, np.ndarray, list[str]], list[dict]]) -> dict:
    """Run every model (file name -> .tflite bytes) on ``images``, keep the unambiguous ones, and write
    out_dir/golden.json with the PNG and raw pixels of each. Returns golden.json's content."""
    pixels = np.asarray(images.pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise UserError(f"{out_dir}: golden images must be uint8 [N, S, S, 3], got {pixels.dtype} {pixels.shape}")
    if not models:
        raise UserError(f"{out_dir}: no exported model to compute golden outputs with")
    outputs = {name: outputs_fn(data, pixels, labels) for name, data in models.items()}
    chosen = pick_images(outputs)
    if not chosen:
        raise UserError(f"{out_dir}: every candidate test image gets an ambiguous answer (tied scores) "
                        f"from some model; no golden image to write")
    entries = []
    for k, i in enumerate(chosen):
        name = f"{k:03d}_{_slug('_'.join(images.truth[i]) or 'background')}"
        raw = np.ascontiguousarray(pixels[i]).tobytes()
        write_bytes(out_dir / f"{name}.png", png_bytes(pixels[i]))
        write_bytes(out_dir / f"{name}.rgb", raw)
        entries.append({"name": name, "png": f"{name}.png", "rgb": f"{name}.rgb",
                        "sha256": hashlib.sha256(raw).hexdigest(), "truth": list(images.truth[i])})
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    golden = {
        "task": task,
        "input": {"height": height, "width": width, "channels": 3, "dtype": "uint8", "color_order": "RGB",
                  "layout": "HWC row-major"},
        "runtime": RUNTIME,
        "top_k": TOP_K,
        "show_threshold": DISPLAY_THRESHOLD,
        "box_iou": BOX_IOU,
        "images": entries,
        "models": {name: [{k: v for k, v in outputs[name][i].items() if k != "ambiguous"} for i in chosen]
                   for name in models},
    }
    write_json(out_dir / GOLDEN_FILE, golden)
    for stale in out_dir.iterdir():  # images of an earlier export that this one did not write
        if stale.suffix in (".png", ".rgb") and stale.stem not in {e["name"] for e in entries}:
            stale.unlink()
    return golden


def read_pixels(golden_dir: Path, entry: dict, golden: dict) -> np.ndarray:
    """The raw pixels of one golden image: uint8 [H, W, 3]; UserError when the file is missing or altered."""
    path = Path(golden_dir) / entry["rgb"]
    if not path.exists():
        raise UserError(f"{path}: golden image file not found")
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise UserError(f"{path}: its sha256 differs from golden.json's; the file was changed")
    shape = (golden["input"]["height"], golden["input"]["width"], 3)
    return np.frombuffer(raw, np.uint8).reshape(shape)
