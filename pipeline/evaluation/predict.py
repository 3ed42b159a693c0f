"""Predict one image: a Label / Probability table from a run folder's Keras model or an exported .tflite."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import UserError
from common.run_folder import RunFolder
from pipeline.sources.images import load_rgb
from pipeline.preprocess import preprocess_for_model


class Classifier(Protocol):
    label_names: list[str]

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] raw RGB -> float32 [num_classes] probabilities."""


class KerasClassifier:
    """The run folder's model.keras, fed through the shared preprocessing."""

    def __init__(self, run_dir: Path):
        import keras

        run = RunFolder(Path(run_dir))
        model_path = run.require_model()
        self.label_names = run.read_labels()
        self.image_size = int(run.read_config()["image_size"])
        self.model = keras.models.load_model(model_path)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(preprocess_for_model(image, self.image_size), training=False))[0]


def load_classifier(run_dir: Path | None, model_path: Path | None = None) -> Classifier:
    """MODEL=...tflite runs the exported model as a phone would; otherwise RUN's model.keras."""
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.exists():
            raise UserError(f"{model_path}: model file not found")
        if model_path.suffix == ".tflite":
            from export.runtime import TFLiteClassifier

            return TFLiteClassifier(model_path)
        if model_path.suffix == ".keras":
            return KerasClassifier(model_path.parent)
        raise UserError(f"{model_path}: unknown model type (expected .keras or .tflite)")
    if run_dir is None:
        raise UserError("predict needs RUN= (a trained run folder) or MODEL= (a .keras or .tflite file)")
    return KerasClassifier(Path(run_dir))


def top_k(probs: np.ndarray, label_names, k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-probs)[: max(1, min(k, len(label_names)))]
    return [(label_names[i], float(probs[i])) for i in order]


def format_table(rows: list[tuple[str, float]]) -> str:
    width = max(len("Label"), *(len(name) for name, _ in rows))
    lines = [f"{'Label':<{width}}  Probability", f"{'-' * width}  -----------"]
    lines += [f"{name:<{width}}  {p:11.4f}" for name, p in rows]
    return "\n".join(lines)


def predict_file(classifier: Classifier, image_path: Path, k: int = 5) -> list[tuple[str, float]]:
    image = load_rgb(image_path)
    return top_k(classifier.predict_image(image), classifier.label_names, k)


def default_image(run_dir: Path) -> Path:
    """A sample test image saved by training, for `make predict` without IMAGE=."""
    samples = sorted(RunFolder(Path(run_dir)).samples.glob("*.png"))
    if not samples:
        raise UserError(f"no IMAGE= given and {run_dir}/samples/ has no sample images; pass IMAGE=path/to/image")
    return samples[0]
