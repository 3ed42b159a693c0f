"""`make export`: a trained run folder -> RUN/export/ with one verified .tflite per mode.

Order of work (bad input fails before anything is written):

1. check the settings and the run folder, open the data the run was trained on;
2. calibration images from the validation split, evaluation images from the
   test split, both through pipeline.preprocess (what training saw);
3. optionally prune (export.keras2), then per mode: (QAT fine-tune,) convert,
   embed metadata, verify against the Keras model in the interpreter, time it;
4. write the models, labels.txt, model_card.json and export_report.md, each
   atomically; raise UserError if any model disagrees with the Keras model.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder, write_bytes, write_json, write_text
from export.convert import INT8_IO_TYPES, QUANT_MODES, check_mode, convert_keras
from export.metadata import ImageInput, with_classifier_metadata
from export.runtime import TFLiteModel, measure_latency
from export.verify import Verification, check_agreement, verify_classifier

MEDIAPIPE_INPUT_TYPES = ("uint8", "float32")  # MediaPipe Tasks reject int8 image inputs


@dataclass(frozen=True)
class ExportConfig:
    """What `make export` does.

    modes:          quantization modes to export (QUANT=, "all" = every mode).
    prune:          target sparsity in (0, 1) of conv/dense kernels, or None (PRUNE=).
    calib:          number of validation images used for int8 calibration (CALIB=).
    min_agreement:  minimum top-1 agreement with the Keras model on the test split (MIN_AGREEMENT=).
    int8_io:        input/output type of the integer-only models, "uint8" or "int8" (INT8_IO=).
    qat_epochs, prune_epochs: fine-tuning epochs on the train split.
    qat_lr, prune_lr: their learning rates (QAT only nudges weights; higher rates cost accuracy).
    latency_runs:   timed invocations per model (1 thread) for the card.
    """

    modes: tuple[str, ...] = ("int8",)
    prune: float | None = None
    calib: int = 200
    min_agreement: float = 0.98
    int8_io: str = "uint8"
    qat_epochs: int = 2
    prune_epochs: int = 2
    qat_lr: float = 3e-5
    prune_lr: float = 1e-4
    latency_runs: int = 50

    def __post_init__(self):
        if not self.modes:
            raise ConfigError("QUANT=: no quantization mode given")
        for mode in self.modes:
            check_mode(mode)
        if self.prune is not None and not 0.0 < self.prune < 1.0:
            raise ConfigError(f"PRUNE={self.prune}: target sparsity must be between 0 and 1 (e.g. 0.5)")
        if self.calib < 1:
            raise ConfigError(f"CALIB={self.calib}: the calibration set would be empty; use at least 1 image")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"MIN_AGREEMENT={self.min_agreement}: must be between 0 and 1")
        if self.int8_io not in INT8_IO_TYPES:
            raise ConfigError(f"INT8_IO={self.int8_io}: expected one of {', '.join(INT8_IO_TYPES)}")
        if self.qat_epochs < 1 or self.prune_epochs < 1:
            raise ConfigError("fine-tuning epochs must be at least 1")


def parse_modes(text: str) -> tuple[str, ...]:
    """QUANT= value ("int8", "float32,int8" or "all") -> modes in canonical order."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    if names == ["all"]:
        return QUANT_MODES
    for name in names:
        check_mode(name)
    return tuple(m for m in QUANT_MODES if m in names)


@dataclass
class ExportedModel:
    """One converted, metadata-carrying, verified model (in memory until written)."""

    mode: str
    model_bytes: bytes
    verification: Verification
    latency: dict = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return f"model_{self.mode}.tflite"


@dataclass
class ExportData:
    """Everything export needs from the run folder and its data."""

    run: RunFolder
    train_cfg: object  # pipeline.training.classifier.TrainConfig
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
        from models.cnn import build_cnn

        cfg, n, size = self.train_cfg.cnn, len(self.labels), self.image_size
        return lambda keras: build_cnn(cfg, n, size, keras=keras)

    def train_batches(self):
        from pipeline.dataset import classification_dataset

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
    import keras

    from pipeline.dataset import classification_dataset
    from pipeline.sources.specs import open_source
    from pipeline.training.classifier import TrainConfig

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


def _predict(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """float32 [N, S, S, 3] -> float32 [N, C] with a Keras 3 or tf_keras model."""
    return np.concatenate([np.asarray(model(images[i:i + batch], training=False))
                           for i in range(0, len(images), batch)]).astype(np.float32)


def export_models(data: ExportData, cfg: ExportConfig, *, log=print) -> tuple[list[ExportedModel], dict]:
    """Convert, annotate and verify every requested mode. Returns (models, facts for the card)."""
    from export import keras2

    model, facts = data.model, {"keras_accuracy": None, "pruning": None, "qat": None}
    reference = _predict(model, data.test_images)
    facts["keras_accuracy"] = float(np.mean(reference.argmax(1) == data.test_labels))
    if cfg.prune is not None:
        log(f"Pruning to {cfg.prune:.0%} sparsity ({cfg.prune_epochs} fine-tuning epochs)...")
        pruned = keras2.prune(model, data.builder(), data.train_batches(), cfg.prune,
                              epochs=cfg.prune_epochs, learning_rate=cfg.prune_lr)
        model = pruned.model
        reference = _predict(model, data.test_images)
        facts["pruning"] = {"target": pruned.target, "reached": pruned.reached, "per_layer": pruned.per_layer,
                            "epochs": cfg.prune_epochs,
                            "keras_accuracy": float(np.mean(reference.argmax(1) == data.test_labels))}
        log(f"  reached {pruned.reached:.1%} sparsity; pruned Keras accuracy {facts['pruning']['keras_accuracy']:.2%}")
    image = ImageInput(size=data.image_size)
    exported = []
    for mode in cfg.modes:
        source_model, mode_reference = model, reference
        if mode == "int8-qat":
            log(f"Quantization-aware fine-tuning ({cfg.qat_epochs} epochs)...")
            source_model = keras2.qat_fine_tune(model, data.builder(), data.train_batches(), epochs=cfg.qat_epochs,
                                                learning_rate=cfg.qat_lr,
                                                preserve_sparsity=cfg.prune is not None)
            mode_reference = _predict(source_model, data.test_images)
            facts["qat"] = {"epochs": cfg.qat_epochs, "fake_quant_layers": keras2.has_fake_quant(source_model),
                            "keras_accuracy": float(np.mean(mode_reference.argmax(1) == data.test_labels))}
        log(f"Converting {mode}...")
        raw = convert_keras(source_model, mode, data.calibration, io_dtype=cfg.int8_io)
        model_bytes = with_classifier_metadata(
            raw, data.labels, image, name=f"{data.run.root.name} ({mode})", version=mode,
            description=f"Image classifier over {len(data.labels)} classes, trained on {data.train_cfg.data}; "
                        f"{mode} TFLite export.")
        verification = verify_classifier(model_bytes, data.test_images, data.test_labels, mode_reference)
        latency = measure_latency(model_bytes, runs=cfg.latency_runs, threads=1)
        exported.append(ExportedModel(mode, model_bytes, verification, latency))
        log(f"  {len(model_bytes):,} bytes, agreement {verification.agreement:.1%}, "
            f"accuracy {verification.accuracy:.2%}, {latency['median_ms']:.3f} ms")
    return exported, facts


def _quant(detail: dict) -> dict | None:
    scale, zero_point = detail["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)} if scale else None


def model_entry(m: ExportedModel, float32_size: int | None) -> dict:
    """The model card's record of one exported model."""
    tfl = TFLiteModel(m.model_bytes)
    in_dtype, out_dtype = np.dtype(tfl.input["dtype"]).name, np.dtype(tfl.outputs[0]["dtype"]).name
    return {
        "file": m.file_name,
        "size_bytes": len(m.model_bytes),
        "gzip_bytes": len(gzip.compress(m.model_bytes, 9)),
        "size_vs_float32": (len(m.model_bytes) / float32_size) if float32_size else None,
        "input": {"dtype": in_dtype, "quantization": _quant(tfl.input)},
        "output": {"dtype": out_dtype, "quantization": _quant(tfl.outputs[0])},
        "latency_ms_1_thread": {k: m.latency[k] for k in ("median_ms", "p90_ms")},
        "accuracy": m.verification.accuracy,
        "agreement": m.verification.agreement,
        "verification": m.verification.to_dict(),
        "mediapipe_compatible": in_dtype in MEDIAPIPE_INPUT_TYPES,
    }


def model_card(data: ExportData, cfg: ExportConfig, models: list[ExportedModel], facts: dict) -> dict:
    size = data.image_size
    float32_size = next((len(m.model_bytes) for m in models if m.mode == "float32"), None)
    return {
        "task": "classify",
        "run": str(data.run.root),
        "data": data.train_cfg.data,
        "labels": data.labels,
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
        "output": {"shape": [1, len(data.labels)], "semantics": "softmax probabilities in labels.txt order"},
        "keras_accuracy": facts["keras_accuracy"],
        "evaluation": {"split": "test", "examples": int(len(data.test_labels))},
        "calibration": {"split": "validation", "images": len(data.calibration), "plus_full_range_image": True},
        "pruning": facts["pruning"],
        "qat": facts["qat"],
        "min_agreement": cfg.min_agreement,
        "int8_io": cfg.int8_io,
        "metadata": "TFLite Model Metadata (labels.txt, RGB, mean 0 / std 1) embedded in every .tflite",
        "models": {m.mode: model_entry(m, float32_size) for m in models},
    }


def export_report(card: dict) -> str:
    """Markdown comparison of the exported modes."""
    lines = [f"# Export report: {card['run']}", "",
             f"Data `{card['data']}`, {card['evaluation']['examples']} test images; "
             f"Keras model accuracy {card['keras_accuracy']:.2%}. "
             f"Calibration: {card['calibration']['images']} validation images + 1 full-range image. "
             f"Every model must agree with its Keras model on >= {card['min_agreement']:.0%} of test images.", ""]
    if card["pruning"]:
        p = card["pruning"]
        lines += [f"Pruned to {p['reached']:.1%} sparsity (target {p['target']:.0%}); "
                  f"pruned Keras accuracy {p['keras_accuracy']:.2%}.", ""]
    if card["qat"]:
        lines += [f"QAT: {card['qat']['epochs']} epochs; QAT Keras accuracy {card['qat']['keras_accuracy']:.2%}.", ""]
    lines += ["| mode | file | size (bytes) | vs float32 | gzip (bytes) | input | median ms | p90 ms "
              "| accuracy | agreement | MediaPipe |",
              "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for mode, m in card["models"].items():
        ratio = f"{m['size_vs_float32']:.2f}x" if m["size_vs_float32"] else "-"
        lat = m["latency_ms_1_thread"]
        lines.append(f"| {mode} | {m['file']} | {m['size_bytes']:,} | {ratio} | {m['gzip_bytes']:,} | "
                     f"{m['input']['dtype']} | {lat['median_ms']:.3f} | {lat['p90_ms']:.3f} | "
                     f"{m['accuracy']:.2%} | {m['agreement']:.1%} | {'yes' if m['mediapipe_compatible'] else 'no'} |")
    lines += ["", "Latency: ai_edge_litert Interpreter (XNNPACK), 1 thread, "
              "single image; agreement = top-1 equal to the Keras model it was converted from.", ""]
    return "\n".join(lines)


def export_run(run_dir: Path, cfg: ExportConfig, *, data_dir: Path | None = None, log=print) -> dict:
    """Export RUN to RUN/export/. Returns the model card; raises UserError when verification fails."""
    data = load_export_data(run_dir, cfg.calib, data_dir=data_dir)
    models, facts = export_models(data, cfg, log=log)
    card = model_card(data, cfg, models, facts)
    out = data.run.export
    results = {m.mode: m.verification for m in models}
    passed = [m for m in models if m.verification.agreement >= cfg.min_agreement]
    for m in models:
        if m in passed:
            write_bytes(out / m.file_name, m.model_bytes)
        elif (out / m.file_name).exists():
            (out / m.file_name).unlink()  # a stale model from an earlier export must not pass for this one
    write_text(out / "labels.txt", "".join(f"{name}\n" for name in data.labels))
    for mode, entry in card["models"].items():
        entry["passed"] = results[mode].agreement >= cfg.min_agreement
    write_json(out / "model_card.json", card)
    write_text(out / "export_report.md", export_report(card))
    check_agreement(results, cfg.min_agreement)
    log(f"Exported {', '.join(m.file_name for m in models)} to {out}")
    return card
