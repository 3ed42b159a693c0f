"""Classification metrics from predictions: accuracy, per-class precision/recall/F1, confusion matrix.

The predictor is any callable from a float32 image batch to class
probabilities, so the Keras model and an exported .tflite are scored by the
same code.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def predict_dataset(predict: Callable[[np.ndarray], np.ndarray], batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Run ``predict`` over (images, labels) batches. Returns (probs float32 [N, C], labels int32 [N])."""
    probs, labels = [], []
    for images, y in batches:
        probs.append(np.asarray(predict(np.asarray(images))))
        labels.append(np.asarray(y))
    if not probs:
        raise ValueError("no examples to evaluate")
    return np.concatenate(probs).astype(np.float32), np.concatenate(labels).astype(np.int32)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C]; rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predicted), 1)
    return cm


def classification_metrics(probs: np.ndarray, labels: np.ndarray, label_names) -> dict:
    """Metrics as plain JSON-able Python values."""
    num_classes = len(label_names)
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted_count = cm.sum(axis=0)
    precision = np.divide(tp, predicted_count, out=np.zeros_like(tp), where=predicted_count > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    eps = 1e-7
    log_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0))))
    top_k = min(3, num_classes)
    top_k_hits = (np.argsort(-probs, axis=1)[:, :top_k] == labels[:, None]).any(axis=1)
    return {
        "examples": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        f"top{top_k}_accuracy": float(top_k_hits.mean()),
        "loss": log_loss,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": cm.tolist(),
    }
