"""Scoring an exported model the way an app sees it: MediaPipe Tasks for Python (ImageClassifier,
ObjectDetector) on the split's images as the source holds them, at their own size.

LiteRT's figure (export.verify, make eval) feeds the model our own preprocessing
(pipeline.preprocess: antialiased bilinear resize, all of the op's detections). An app hands
MediaPipe a camera frame or a photo instead, and MediaPipe resizes it itself (bilinear, no
antialiasing), keeps one class per detected box, and reports boxes in whole pixels of the image
(export.golden). Where the source's images are already the model's input size the two see the
same pixels and only the last two can differ.

One class per box: the post-processing op runs NMS per class, so one box can carry two classes;
MediaPipe returns them as one detection whose ``categories`` lists both. Every category counts
here, as it does for LiteRT: an app that reads only ``categories[0]`` sees ``map50_first_category``.

    classifier: {"runtime", "images", "accuracy", "score"}
    detector:   {"runtime", "images", "map50", "map", "map50_first_category", "score"}
                (pipeline.evaluation.coco_eval, the same ground truth as LiteRT's figure)
    ("score" is the task's headline figure: accuracy, mAP@.5)
    either, when MediaPipe cannot run the model: {"runtime", "error"}
"""
from __future__ import annotations

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from common.progress import progress as progress_bar
from pipeline.evaluation.coco_eval import coco_metrics

RUNTIME = f"MediaPipe Tasks {mp.__version__} (Python, CPU)"


def _images(source, split: str, progress: str | None):
    examples = source.examples(split)
    if progress is not None:
        examples = progress_bar(examples, total=source.split_sizes.get(split), desc=progress, unit="image")
    for ex in examples:
        yield {k: np.asarray(v) for k, v in ex.items()}


def _mp_image(pixels: np.ndarray) -> mp.Image:
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels, np.uint8))


def _refused(e: Exception) -> dict:
    return {"runtime": RUNTIME, "error": f"MediaPipe refused the model: {str(e).splitlines()[0]}"}


def classifier_accuracy(model_bytes: bytes, source, split: str, labels: list[str], *,
                        progress: str | None = None) -> dict:
    """Top-1 accuracy of MediaPipe's ImageClassifier on ``split`` of ``source`` (images at their own size)."""
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=model_bytes), max_results=1)
    try:
        classifier = vision.ImageClassifier.create_from_options(options)
    except (RuntimeError, ValueError) as e:
        return _refused(e)
    index = {name: i for i, name in enumerate(labels)}
    right = total = 0
    with classifier:
        for ex in _images(source, split, progress):
            categories = classifier.classify(_mp_image(ex["image"])).classifications[0].categories
            right += bool(categories) and index.get(categories[0].category_name) == int(ex["label"])
            total += 1
    accuracy = right / total if total else 0.0
    return {"runtime": RUNTIME, "images": total, "accuracy": accuracy, "score": accuracy}


def detector_map(model_bytes: bytes, source, split: str, labels: list[str], *, progress: str | None = None) -> dict:
    """mAP of MediaPipe's ObjectDetector (every detection, no score threshold) on ``split`` of ``source``."""
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_buffer=model_bytes),
                                           score_threshold=0.0, max_results=-1)
    try:
        detector = vision.ObjectDetector.create_from_options(options)
    except (RuntimeError, ValueError) as e:
        return _refused(e)
    index = {name: i for i, name in enumerate(labels)}
    gts, preds, firsts = [], [], []
    with detector:
        for ex in _images(source, split, progress):
            height, width = ex["image"].shape[:2]
            found = detector.detect(_mp_image(ex["image"])).detections
            rows = [([d.bounding_box.origin_y / height, d.bounding_box.origin_x / width,
                      (d.bounding_box.origin_y + d.bounding_box.height) / height,
                      (d.bounding_box.origin_x + d.bounding_box.width) / width], k, c)
                    for d in found for k, c in enumerate(d.categories)]
            preds.append(_predictions(rows, index))
            firsts.append(_predictions([r for r in rows if r[1] == 0], index))
            gts.append({"boxes": ex["boxes"].astype(np.float32).reshape(-1, 4), "labels": ex["labels"].astype(np.int32),
                        "difficult": ex.get("difficult", np.zeros(len(ex["labels"]), bool)).astype(bool)})
    if not gts:
        return {"runtime": RUNTIME, "error": f"the {split} split is empty"}
    metrics = coco_metrics(gts, preds, labels)
    first = coco_metrics(gts, firsts, labels)
    return {"runtime": RUNTIME, "images": metrics["images"], "map50": float(metrics["map50"]), "map": float(metrics["map"]),
            "map50_first_category": float(first["map50"]), "score": float(metrics["map50"])}


def _predictions(rows: list, index: dict) -> dict:
    """(box [ymin, xmin, ymax, xmax] normalized, category rank, mp Category) rows -> coco_eval's prediction dict."""
    return {"boxes": np.clip(np.asarray([r[0] for r in rows], np.float32).reshape(-1, 4), 0.0, 1.0),
            "classes": np.asarray([index[r[2].category_name] for r in rows], np.int32),
            "scores": np.asarray([r[2].score for r in rows], np.float32)}
