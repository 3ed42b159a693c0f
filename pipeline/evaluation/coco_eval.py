"""COCO detection metrics (pycocotools ``COCOeval``) from our normalized boxes.

Ground truth per image: {"boxes": float32 [N, 4], "labels": int32 [N], optional
"difficult": bool [N], optional "size": (height, width)}; predictions per image:
{"boxes": float32 [K, 4], "classes": int32 [K], "scores": float32 [K]}. Boxes are
normalized [ymin, xmin, ymax, xmax]. Images are matched by position in the two lists.

A "difficult" object is ignored, as in Pascal VOC: it counts neither as a miss
nor, when detected, as a false positive (COCO's own ignore mechanism, ``iscrowd``,
would also change the IoU formula; we set the ignore flag instead).

With the model's input side, the metrics also break down by object size *as the model sees
it*: the object's side in input pixels (the square root of its area), below 16 px (two cells of
the stride-8 map, the input-size rule's target), 16-48 px, and above -- instead of COCO's
fixed pixel areas of the original image.

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
# Object sides, in input pixels, that bound the small / medium / large bins (module docstring)
SIZE_BINS_PX = (16, 48)
SIZE_NAMES = ("small", "medium", "large")


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
    """(COCO ground-truth dataset dict, COCO results list); image ids 1..n, category ids label + 1.
    Each annotation and result also has "share": its area as a share of the image's."""
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
                                "share": float(box[2] * box[3]) / (size[0] * size[1]),
                                "iscrowd": 0, "difficult": int(hard)})
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)
        classes = np.asarray(pred["classes"], np.int64).reshape(-1)
        for box, label, score in zip(_xywh(pred["boxes"], size), classes, scores):
            results.append({"image_id": i, "category_id": int(label) + 1, "bbox": [float(v) for v in box],
                            "score": float(score), "share": float(box[2] * box[3]) / (size[0] * size[1])})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(label_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _size_ranges() -> list[list[float]]:
    """COCOeval areaRng for all, small, medium, large: areas in input pixels (SIZE_BINS_PX). COCOeval's
    ranges include both ends, so each bin starts just above the last one's end: an object on a
    boundary (a 16 x 16 box) counts in one bin only, and the bins' objects add up to the total."""
    small, large = (float(px * px) for px in SIZE_BINS_PX)
    return [[0.0, 1e10], [0.0, small], [np.nextafter(small, np.inf), large], [np.nextafter(large, np.inf), 1e10]]


def _in_input_pixels(annotations, input_side: int) -> None:
    """Set each annotation's "area" (what COCOeval bins by) to its area in input pixels, rounded to
    1/1000 px² so that float32 box corners do not push a box on a bin boundary into the next bin."""
    for a in annotations:
        a["area"] = round(a["share"] * input_side * input_side, 3)


def coco_metrics(ground_truth: Sequence[dict], predictions: Sequence[dict], label_names,
                 input_side: int | None = None) -> dict:
    """COCO box metrics, as plain JSON-able values.

    Args:
        input_side: the model's input side in pixels; with it, "by_size" is added (module docstring).

    Returns:
        {"map": mAP@[.5:.95], "map50": mAP@.5, "map75": mAP@.75,
         "per_class": {name: {"ap": AP@[.5:.95], "ap50": AP@.5, "objects": n}},
         "images": n, "objects": n (difficult excluded), "detections": n}; with ``input_side``
        also "by_size": {"small" | "medium" | "large": {"ap", "ap50", "recall50" (the share of the
        bin's objects found at IoU .5, any score), "objects", "max_px" (the bin's upper bound, None
        for large)}}, means over the classes with objects in the bin.
        AP is over all areas with up to 100 detections per image. A class with no
        (non-difficult) ground truth has AP None and is left out of the means.
    """
    gt_dict, results = to_coco(ground_truth, predictions, label_names)
    counts = np.zeros(len(label_names), np.int64)
    for a in gt_dict["annotations"]:
        if not a["difficult"]:
            counts[a["category_id"] - 1] += 1
    summary = {"images": len(ground_truth), "objects": int(counts.sum()), "detections": len(results)}
    ranges = _size_ranges() if input_side else [[0.0, 1e10]]
    if input_side:
        _in_input_pixels(gt_dict["annotations"], input_side)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
            if input_side:  # loadRes sets a result's area from its box, in image pixels
                _in_input_pixels(coco_dt.anns.values(), input_side)
            ev = _coco_eval_class()(coco_gt, coco_dt, iouType="bbox")
            ev.params.imgIds = [im["id"] for im in gt_dict["images"]]
            ev.params.areaRng, ev.params.areaRngLbl = ranges, ["all", *SIZE_NAMES][:len(ranges)]
            ev.evaluate()
            ev.accumulate()
            # precision: [T IoU thresholds, R recall points, K classes, A areas, M max-dets]
            precisions = ev.eval["precision"][..., -1]
            recalls = ev.eval["recall"][..., -1]  # [T, K, A]
        else:  # nothing detected: AP and recall are 0 where there is ground truth
            precisions = np.where(counts[None, None, :, None] > 0, 0.0, -1.0) * np.ones((10, 101, 1, len(ranges)))
            recalls = np.where(counts[None, :, None] > 0, 0.0, -1.0) * np.ones((10, 1, len(ranges)))
    precision = precisions[:, :, :, 0]
    per_class = {}
    for k, name in enumerate(label_names):
        has_gt = counts[k] > 0
        per_class[name] = {"ap": _mean_valid(precision[:, :, k]) if has_gt else None,
                           "ap50": _mean_valid(precision[0, :, k]) if has_gt else None,
                           "objects": int(counts[k])}
    present = counts > 0
    p = precision[:, :, present]
    metrics = {"map": _mean_valid(p) or 0.0, "map50": _mean_valid(p[0]) or 0.0, "map75": _mean_valid(p[5]) or 0.0,
               "per_class": per_class, **summary}
    if input_side:
        metrics["by_size"] = _by_size(gt_dict["annotations"], ranges, precisions, recalls)
    return metrics


def _by_size(annotations, ranges, precisions, recalls) -> dict:
    """The "by_size" entry of ``coco_metrics`` from COCOeval's per-area arrays."""
    out = {}
    for a, name in enumerate(SIZE_NAMES, start=1):
        lo, hi = ranges[a]
        objects = sum(1 for g in annotations if not g["difficult"] and lo <= g["area"] <= hi)
        out[name] = {"objects": objects,
                     "max_px": SIZE_BINS_PX[a - 1] if a <= len(SIZE_BINS_PX) else None,
                     "ap": _mean_valid(precisions[:, :, :, a]) if objects else None,
                     "ap50": _mean_valid(precisions[0, :, :, a]) if objects else None,
                     "recall50": _mean_valid(recalls[0, :, a]) if objects else None}
    return out


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
        (coco_metrics(...) with "by_size" at the batches' image side, ground truth list,
        predictions list).
    """
    if progress is not None:
        batches = progress_bar(batches, total=_length(batches), desc=progress, unit="batch")
    gts, preds, side = [], [], None
    for batch in batches:
        images = np.asarray(batch["image"], np.float32)
        gts += ground_truth(batch)
        preds += detect_batch(images)
        side = images.shape[1]  # the model's input side: the batches are resized to it
    if not gts:
        raise ValueError("no images to evaluate")
    return coco_metrics(gts, preds, label_names, input_side=side), gts, preds
