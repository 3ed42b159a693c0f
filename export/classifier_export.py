"""The classifier's part of `make export` (an ``export.exporter.ExportTarget``).

Calibration images come from the validation split and verification images from the test
split, both through pipeline.preprocess (what training saw). Optional pruning and the
int8-qat mode go through the tf_keras seam (export.keras2).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder
from export import keras2
from export.app_score import classifier_accuracy
from export.convert import convert_keras
from export.exporter import ExportConfig, Verification
from export.golden import CANDIDATES, GoldenImages, classifier_outputs
from export.metadata import ImageInput, with_classifier_metadata
from export.verify import verify_classifier
from pipeline.dataset import classification_dataset
from pipeline.sources.specs import open_source
from pipeline.training.classifier import TrainConfig, build_network


@dataclass
class ExportData:
    """Everything export needs from the run folder and its data."""

    run: RunFolder
    train_cfg: TrainConfig
    labels: list[str]
    model: object  # Keras 3 model
    source: object  # pipeline.sources.schema.Source
    calibration: list[np.ndarray]  # float32 [1, S, S, 3] each
    test_images: np.ndarray  # float32 [N, S, S, 3]
    test_labels: np.ndarray  # int32 [N]

    @property
    def image_size(self) -> int:
        return int(self.train_cfg.image_size)

    def builder(self):
        """keras module -> this run's architecture (for the Keras 3 <-> tf_keras seam)."""
        cfg, n = self.train_cfg, len(self.labels)
        return lambda keras_module: build_network(cfg, n, keras_module, pretrained=False)

    def train_batches(self):
        return classification_dataset(self.source, "train", self.train_cfg.pipeline(), training=True,
                                      seed=self.train_cfg.seed)


def _take_images(dataset, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Unbatch (float32 [B, S, S, 3], int32 [B]) batches into arrays of at most ``limit`` images."""
    images, labels, n = [], [], 0
    for x, y in dataset:
        x, y = np.asarray(x), np.asarray(y)
        if limit is not None:
            x, y = x[: limit - n], y[: limit - n]
        images.append(x)
        labels.append(y)
        n += len(x)
        if limit is not None and n >= limit:
            break
    if not images:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(images).astype(np.float32), np.concatenate(labels).astype(np.int32)


def load_export_data(run_dir: Path, calib: int, *, data_dir: Path | None = None) -> ExportData:
    """Open the run folder, its model and data. Raises UserError for a missing or incomplete run."""
    run = RunFolder(Path(run_dir))
    run.require_model()
    train_cfg = TrainConfig.from_dict(run.read_config())
    if train_cfg.task != "classify":
        raise UserError(f"{run.root}: export handles classification runs; this is a {train_cfg.task} run")
    labels = run.read_labels()
    source = open_source(train_cfg.data, train_cfg.task, data_dir=data_dir, seed=train_cfg.seed)
    if list(source.label_names) != labels:
        raise UserError(f"DATA={train_cfg.data}: its classes {list(source.label_names)} differ from the run's {labels}")
    try:
        model = keras.models.load_model(run.model)
    except Exception as e:  # a truncated or foreign file: Keras raises several types
        raise UserError(f"{run.model}: cannot load the Keras model ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    pipe = train_cfg.pipeline()
    calib_images, _ = _take_images(classification_dataset(source, "validation", pipe, training=False), calib)
    if len(calib_images) == 0:
        raise UserError(f"DATA={train_cfg.data}: the validation split is empty, so the int8 calibration set "
                        f"would be empty")
    test_images, test_labels = _take_images(classification_dataset(source, "test", pipe, training=False), None)
    if len(test_images) == 0:
        raise UserError(f"DATA={train_cfg.data}: the test split is empty; export cannot verify the models")
    return ExportData(run=run, train_cfg=train_cfg, labels=labels, model=model, source=source,
                      calibration=[img[None] for img in calib_images], test_images=test_images,
                      test_labels=test_labels)


def predict_probabilities(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """float32 [N, S, S, 3] -> float32 [N, C] with a Keras 3 or tf_keras model."""
    return np.concatenate([np.asarray(model(images[i:i + batch], training=False))
                           for i in range(0, len(images), batch)]).astype(np.float32)


class ClassifierExport:
    """A classification run, ready to convert: its model, calibration and test images."""

    task = "classify"
    quality = "accuracy"

    def __init__(self, run_dir: Path, cfg: ExportConfig, *, data_dir: Path | None = None, log=print):
        self.data = load_export_data(run_dir, cfg.calib, data_dir=data_dir)
        self.labels = self.data.labels
        self.examples = int(len(self.data.test_labels))
        self.model = self.data.model
        self.pruning = None
        if cfg.prune is not None:
            log(f"Pruning to {cfg.prune:.0%} sparsity ({cfg.prune_epochs} fine-tuning epochs)...")
            pruned = keras2.prune(self.model, self.data.builder(), self.data.train_batches(), cfg.prune,
                                  epochs=cfg.prune_epochs, learning_rate=cfg.prune_lr)
            self.model = pruned.model
            self.pruning = {"target": pruned.target, "reached": pruned.reached, "per_layer": pruned.per_layer,
                            "epochs": cfg.prune_epochs}
        self.reference = predict_probabilities(self.model, self.data.test_images)
        self.reference_score = float(np.mean(self.reference.argmax(1) == self.data.test_labels))
        if self.pruning:
            self.pruning["keras_accuracy"] = self.reference_score
            log(f"  reached {self.pruning['reached']:.1%} sparsity; pruned Keras accuracy {self.reference_score:.2%}")
        self.qat = None
        self._qat_reference = None

    def convert(self, mode: str, cfg: ExportConfig, log) -> bytes:
        source_model = self.model
        if mode == "int8-qat":
            log(f"Quantization-aware fine-tuning ({cfg.qat_epochs} epochs)...")
            source_model = keras2.qat_fine_tune(self.model, self.data.builder(), self.data.train_batches(),
                                                epochs=cfg.qat_epochs, learning_rate=cfg.qat_lr,
                                                preserve_sparsity=cfg.prune is not None)
            self._qat_reference = predict_probabilities(source_model, self.data.test_images)
            self.qat = {"epochs": cfg.qat_epochs, "fake_quant_layers": keras2.has_fake_quant(source_model),
                        "keras_accuracy": float(np.mean(self._qat_reference.argmax(1) == self.data.test_labels))}
        raw = convert_keras(source_model, mode, self.data.calibration, io_dtype=cfg.int8_io)
        return with_classifier_metadata(
            raw, self.labels, ImageInput(size=self.data.image_size), name=f"{self.data.run.root.name} ({mode})",
            version=mode, description=f"Image classifier over {len(self.labels)} classes, trained on "
                                      f"{self.data.train_cfg.data}; {mode} TFLite export.")

    def verify(self, mode: str, model_bytes: bytes, cfg: ExportConfig) -> Verification:
        # int8-qat is compared with the QAT model it was converted from
        reference = self._qat_reference if mode == "int8-qat" else self.reference
        v = verify_classifier(model_bytes, self.data.test_images, self.data.test_labels, reference,
                              min_agreement=cfg.min_agreement, progress=f"verifying {mode}")
        app = classifier_accuracy(model_bytes, self.data.source, "test", self.labels, progress=f"MediaPipe {mode}")
        return replace(v, detail={**v.detail, "mediapipe": app})

    golden_outputs = staticmethod(classifier_outputs)

    def golden_images(self) -> GoldenImages:
        images = self.data.test_images[:CANDIDATES]
        return GoldenImages(pixels=np.clip(np.round(images), 0, 255).astype(np.uint8),
                            truth=[[self.labels[int(y)]] for y in self.data.test_labels[:CANDIDATES]])

    def card(self, cfg: ExportConfig) -> dict:
        size = self.data.image_size
        notes = []
        if self.pruning:
            p = self.pruning
            notes.append(f"Pruned to {p['reached']:.1%} sparsity (target {p['target']:.0%}); "
                         f"pruned Keras accuracy {p['keras_accuracy']:.2%}.")
        if self.qat:
            notes.append(f"QAT: {self.qat['epochs']} epochs; QAT Keras accuracy {self.qat['keras_accuracy']:.2%}.")
        return {
            "data": self.data.train_cfg.data,
            "input": {
                "shape": [1, size, size, 3],
                "color_order": "RGB",
                "pixels": "raw 0..255, resized to the input size by pipeline.preprocess.preprocess_image "
                          "(bilinear, antialiased); no normalisation outside the model",
                "float_input": "float32 pixel values 0..255; the graph scales by 1/255 (Rescaling layer). "
                               "Metadata normalisation: mean 0, std 1.",
                "quantized_input": "uint8/int8 tensors carry (scale, zero_point); value = scale * (q - zero_point). "
                                   "uint8 with scale 1, zero point 0 takes camera bytes unchanged.",
            },
            "output": {"shape": [1, len(self.labels)], "semantics": "softmax probabilities in labels.txt order"},
            "calibration": {"split": "validation", "images": len(self.data.calibration),
                            "plus_full_range_image": True},
            "pruning": self.pruning,
            "qat": self.qat,
            "notes": notes,
        }
