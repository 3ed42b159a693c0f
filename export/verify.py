"""Self-verification: an exported model must agree with the Keras model it came from.

The .tflite is loaded in the interpreter (as a phone would) and run on the whole test split;
its answers are compared with the reference model's. Export refuses to ship a model whose
agreement falls below MIN_AGREEMENT (a corrupted, mis-calibrated or badly pruned model).

    classifier: agreement = share of images with the same top-1
    detector:   agreement = share of the Keras model's confident detections (score >=
                DISPLAY_THRESHOLD) found again: same class, IoU >= MATCH_IOU; and its mAP@.5 may
                be at most MAX_MAP_DROP below the Keras model's
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from common.errors import UserError
from export.runtime import TFLiteModel
from models.matching import pairwise_iou
from pipeline.evaluation.report import DISPLAY_THRESHOLD

MATCH_IOU = 0.5  # a detection "found again": same class and at least this overlap
# Largest mAP@.5 drop (Keras -> .tflite) a detector export may show: what a user would accept for
# int8, and far more than float32 ever loses (it computes the same function).
MAX_MAP_DROP = 0.02


@dataclass(frozen=True)
class Verification:
    """How one exported model compares with the Keras model it came from, on the test split.

    examples:        images it was run on.
    agreement:       share of the Keras model's answers it reproduces (classifier: equal top-1;
                     detector: Keras detections it finds again, same class at IoU >= 0.5).
    score, reference_score: its quality and the Keras model's on the same images (accuracy, mAP@.5).
    passed:          agreement >= MIN_AGREEMENT and whatever the task adds (detector: mAP@.5 at
                     most MAX_MAP_DROP below Keras); ``problem`` says why not.
    detail:          task-specific figures (max probability difference; mAP@[.5:.95] of both).
    """

    examples: int
    agreement: float
    score: float
    reference_score: float
    passed: bool
    problem: str = ""
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def verify_classifier(model_bytes: bytes, images: np.ndarray, labels: np.ndarray,
                      reference_probs: np.ndarray, *, min_agreement: float,
                      progress: str | None = None) -> Verification:
    """Score a .tflite classifier against a reference.

    Args:
        model_bytes: the .tflite (with or without metadata).
        images: float32 [N, S, S, 3] 0..255, preprocessed by pipeline.preprocess.
        labels: int32 [N].
        reference_probs: float32 [N, C], the Keras model's probabilities for ``images``.
        progress: a description to show a progress bar (stderr) under while the .tflite runs;
            None (library callers, tests) shows none.
    """
    if len(images) == 0:
        raise UserError("no evaluation images to verify the exported model on")
    probs = TFLiteModel(model_bytes).predict_batch(images, progress=progress)
    if probs.shape != reference_probs.shape:
        raise UserError(f"exported model outputs {probs.shape[1:]} but the Keras model {reference_probs.shape[1:]}")
    top1, ref_top1 = probs.argmax(axis=1), reference_probs.argmax(axis=1)
    agreement = float(np.mean(top1 == ref_top1))
    passed = agreement >= min_agreement
    return Verification(
        examples=int(len(labels)), agreement=agreement,
        score=float(np.mean(top1 == labels)), reference_score=float(np.mean(ref_top1 == labels)),
        passed=passed, problem="" if passed else f"top-1 agreement {agreement:.1%} < MIN_AGREEMENT {min_agreement:.0%}",
        detail={"max_abs_diff": float(np.max(np.abs(probs - reference_probs)))},
    )


def detection_agreement(reference: list[dict], candidate: list[dict], threshold: float = DISPLAY_THRESHOLD) -> float:
    """Share of ``reference``'s detections with score >= threshold that ``candidate`` finds again
    (same class, IoU >= MATCH_IOU, any score >= the op's own threshold; each used once).

    Both: per image, {"boxes" float32 [K, 4] normalized [ymin, xmin, ymax, xmax], "classes" int [K],
    "scores" float32 [K]}. 1.0 when the reference has no confident detection.
    """
    wanted = found = 0
    for ref, cand in zip(reference, candidate):
        keep = np.asarray(ref["scores"]) >= threshold
        ref_boxes, ref_classes = np.asarray(ref["boxes"])[keep], np.asarray(ref["classes"])[keep]
        wanted += len(ref_boxes)
        if not len(ref_boxes) or not len(cand["boxes"]):
            continue
        iou = np.asarray(pairwise_iou(np.asarray(ref_boxes, np.float32), np.asarray(cand["boxes"], np.float32)))
        same = ref_classes[:, None] == np.asarray(cand["classes"])[None, :]
        iou = np.where(same, iou, 0.0)
        used = set()
        for i in np.argsort(-np.asarray(ref["scores"])[keep], kind="stable"):
            order = [j for j in np.argsort(-iou[i], kind="stable") if j not in used and iou[i, j] >= MATCH_IOU]
            if order:
                used.add(order[0])
                found += 1
    return 1.0 if wanted == 0 else found / wanted


def verify_detector(reference_metrics: dict, reference_preds: list[dict], metrics: dict, preds: list[dict], *,
                    min_agreement: float, max_map_drop: float = MAX_MAP_DROP) -> Verification:
    """Judge a .tflite detector's test-split results against the Keras model's (coco_eval metrics
    and per-image predictions, in the same image order)."""
    agreement = detection_agreement(reference_preds, preds)
    drop = reference_metrics["map50"] - metrics["map50"]
    problems = []
    if agreement < min_agreement:
        problems.append(f"finds {agreement:.1%} of the Keras detections again < MIN_AGREEMENT {min_agreement:.0%}")
    if drop > max_map_drop:
        problems.append(f"mAP@.5 {metrics['map50']:.3f} is {drop:.3f} below Keras's {reference_metrics['map50']:.3f} "
                        f"(at most {max_map_drop} allowed)")
    return Verification(
        examples=int(metrics["images"]), agreement=float(agreement), score=float(metrics["map50"]),
        reference_score=float(reference_metrics["map50"]), passed=not problems, problem="; ".join(problems),
        detail={"map": float(metrics["map"]), "keras_map": float(reference_metrics["map"])},
    )
