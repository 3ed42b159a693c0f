"""Self-verification: an exported classifier must agree with the Keras model it came from.

The .tflite is loaded in the interpreter (as a phone would) and run on the
evaluation images; its top-1 is compared with the reference model's. Export
fails when agreement falls below the threshold (a corrupted, mis-calibrated or
badly pruned model).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from common.errors import UserError
from export.runtime import TFLiteModel


@dataclass(frozen=True)
class Verification:
    """Scores of one exported model on the evaluation images.

    agreement:     fraction of images where its top-1 equals the reference model's top-1.
    accuracy:      its top-1 accuracy against the labels.
    reference_accuracy: the reference Keras model's accuracy on the same images.
    max_abs_diff:  largest |probability difference| from the reference, over all images and classes.
    """

    examples: int
    agreement: float
    accuracy: float
    reference_accuracy: float
    max_abs_diff: float

    def to_dict(self) -> dict:
        return asdict(self)


def verify_classifier(model_bytes: bytes, images: np.ndarray, labels: np.ndarray,
                      reference_probs: np.ndarray) -> Verification:
    """Score a .tflite classifier against a reference.

    Args:
        model_bytes: the .tflite (with or without metadata).
        images: float32 [N, S, S, 3] 0..255, preprocessed by pipeline.preprocess.
        labels: int32 [N].
        reference_probs: float32 [N, C], the Keras model's probabilities for ``images``.
    """
    if len(images) == 0:
        raise UserError("no evaluation images to verify the exported model on")
    probs = TFLiteModel(model_bytes).predict_batch(images)
    if probs.shape != reference_probs.shape:
        raise UserError(f"exported model outputs {probs.shape[1:]} but the Keras model {reference_probs.shape[1:]}")
    top1, ref_top1 = probs.argmax(axis=1), reference_probs.argmax(axis=1)
    return Verification(
        examples=int(len(labels)),
        agreement=float(np.mean(top1 == ref_top1)),
        accuracy=float(np.mean(top1 == labels)),
        reference_accuracy=float(np.mean(ref_top1 == labels)),
        max_abs_diff=float(np.max(np.abs(probs - reference_probs))),
    )


def check_agreement(results: dict[str, Verification], min_agreement: float) -> None:
    """Raise UserError naming every mode whose top-1 agreement is below ``min_agreement``."""
    failed = {mode: r for mode, r in results.items() if r.agreement < min_agreement}
    if failed:
        detail = ", ".join(f"{mode} {r.agreement:.1%}" for mode, r in failed.items())
        raise UserError(f"exported model disagrees with the Keras model on the test split ({detail}; "
                        f"MIN_AGREEMENT={min_agreement:.0%}); not shipping it")
