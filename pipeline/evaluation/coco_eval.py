"""COCO detection metrics (pycocotools ``COCOeval``) from our normalized boxes.

Ground truth per image: {"boxes": float32 [N, 4], "labels": int32 [N], optional
"difficult": bool [N], optional "size": (height, width)}; predictions per image:
{"boxes": float32 [K, 4], "classes": int32 [K], "scores": float32 [K]}. Boxes are
normalized [ymin, xmin, ymax, xmax]. Images are matched by position in the two lists.

A "difficult" object is ignored, as in Pascal VOC: it counts neither as a miss
nor, when detected, as a false positive (COCO's own ignore mechanism, ``iscrowd``,
would also change the IoU formula; we set the ignore flag instead).

The detector is any callable from a float32 image batch to per-image predictions,
so a Keras model and a .tflite runner are scored by the same code.
"""
from __future__ import annotations

import contextlib
import io
from typing import Callable, Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from common.progress import progress as progress_bar
from pipeline.detection_dataset import ground_truth

# Without an image size, normalized boxes are scaled to this many pixels. Only COCO's
# small/medium/large split depends on it, not mAP over all areas.
NOMINAL_SIZE = (640, 640)


def _coco_eval_class():
    class _IgnoringCOCOeval(COCOeval):
        """COCOeval that honours a per-annotation "difficult" flag as ignore (IoU stays standard)."""

        def _prepare(self):
            super()._prepare()
            for gts in self._gts.values():
                for g in gts:
                    g["ignore"] = int(bool(g.get("difficult", 0)) or bool(g.get("iscrowd", 0)))

    return _IgnoringCOCOeval


def _xywh(boxes: np.ndarray, size) -> np.ndarray:
    """normalized [ymin, xmin, ymax, xmax] -> COCO pixels [x, y, width, height]."""
    h, w = size
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 1] * w, b[:, 0] * h, (b[:, 3] - b[:, 1]) * w, (b[:, 2] - b[:, 0]) * h], axis=1)


def to_coco(ground_truth: Sequence[dict], predictions: Sequence[dict], label_names) -> tuple[dict, list[dict]]:
    """(COCO ground-truth dataset dict, COCO results list); image ids 1..n, category ids label + 1."""
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions")
    images, annotations, results = [], [], []
    for i, (gt, pred) in enumerate(zip(ground_truth, predictions), start=1):
        size = tuple(gt.get("size", NOMINAL_SIZE))
        images.append({"id": i, "height": int(size[0]), "width": int(size[1])})
        labels = np.asarray(gt["labels"], np.int64).reshape(-1)
        difficult = np.asarray(gt.get("difficult", np.zeros(len(labels), bool)), bool).reshape(-1)
        for box, label, hard in zip(_xywh(gt["boxes"], size), labels, difficult):
            # ids from 1: COCOeval treats a matched gt id of 0 as "unmatched"
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]),
                                "iscrowd": 0, "difficult": int(hard)})
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)
        classes = np.asarray(pred["classes"], np.int64).reshape(-1)
        for box, label, score in zip(_xywh(pred["boxes"], size), classes, scores):
            results.append({"image_id": i, "category_id": int(label) + 1, "bbox": [float(v) for v in box],
                            "score": float(score)})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(label_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def coco_metrics(ground_truth: Sequence[dict], predictions: Sequence[dict], label_names) -> dict:
    """COCO box metrics, as plain JSON-able values.

    Returns:
        {"map": mAP@[.5:.95], "map50": mAP@.5, "map75": mAP@.75,
         "per_class": {name: {"ap": AP@[.5:.95], "ap50": AP@.5, "objects": n}},
         "images": n, "objects": n (difficult excluded), "detections": n}.
        AP is over all areas with up to 100 detections per image. A class with no
        (non-difficult) ground truth has AP None and is left out of the means.
    """
    gt_dict, results = to_coco(ground_truth, predictions, label_names)
    counts = np.zeros(len(label_names), np.int64)
    for a in gt_dict["annotations"]:
        if not a["difficult"]:
            counts[a["category_id"] - 1] += 1
    summary = {"images": len(ground_truth), "objects": int(counts.sum()), "detections": len(results)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
            ev = _coco_eval_class()(coco_gt, coco_dt, iouType="bbox")
            ev.params.imgIds = [im["id"] for im in gt_dict["images"]]
            ev.evaluate()
            ev.accumulate()
            # precision: [T IoU thresholds, R recall points, K classes, A areas, M max-dets]
            precision = ev.eval["precision"][:, :, :, 0, -1]
        else:  # nothing detected: AP is 0 where there is ground truth
            precision = np.where(counts[None, None, :] > 0, 0.0, -1.0) * np.ones((10, 101, 1))
    per_class = {}
    for k, name in enumerate(label_names):
        has_gt = counts[k] > 0
        per_class[name] = {"ap": _mean_valid(precision[:, :, k]) if has_gt else None,
                           "ap50": _mean_valid(precision[0, :, k]) if has_gt else None,
                           "objects": int(counts[k])}
    present = counts > 0
    p = precision[:, :, present]
    return {"map": _mean_valid(p) or 0.0, "map50": _mean_valid(p[0]) or 0.0, "map75": _mean_valid(p[5]) or 0.0,
            "per_class": per_class, **summary}


Detect = Callable[[np.ndarray], list[dict]]


def _length(items) -> int | None:
    """len(items), or None for an iterable without one (a generator, a tf.data.Dataset of unknown size)."""
    try:
        return len(items)
    except TypeError:
        return None


def evaluate_detector(detect_batch: Detect, batches: Iterable[dict], label_names, *,
                      progress: str | None = None) -> tuple[dict, list, list]:
    """Score a detector on ``detection_eval_dataset`` batches.

    Args:
        detect_batch: float32 [B, S, S, 3] 0..255 -> B dicts {"boxes", "classes", "scores"}.
        batches: dicts {"image", "boxes", "labels", "difficult"} (pipeline.detection_dataset).
        progress: a description to show a progress bar (stderr, per batch) under; None shows none.

    Returns:
        (coco_metrics(...), ground truth list, predictions list).
    """
    if progress is not None:
        batches = progress_bar(batches, total=_length(batches), desc=progress, unit="batch")
    gts, preds = [], []
    for batch in batches:
        gts += ground_truth(batch)
        preds += detect_batch(np.asarray(batch["image"], np.float32))
    if not gts:
        raise ValueError("no images to evaluate")
    return coco_metrics(gts, preds, label_names), gts, preds
