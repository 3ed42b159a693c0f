"""`make export`: a trained run folder -> RUN/export/ with one verified .tflite per mode, any task.

The contract every task's export keeps (the task contributes an ``ExportTarget``):

1. check the settings and the run folder, open the data the run was trained on (bad input
   fails here, before anything is written);
2. per mode: convert (calibrated on validation images through ``pipeline.preprocess``), embed
   metadata (labels, normalisation, the task), verify in the LiteRT interpreter on the whole
   test split against the Keras model, time it;
3. write, each atomically: the models that passed verification as ``model_<mode>.tflite`` (a
   stale file of a mode that failed is removed: it must not pass for this export), labels.txt,
   model_card.json and export_report.md, and golden/ (``export.golden``: a few test images as the
   exact pixels the models see, and LiteRT's outputs for each); then fail (UserError) if any mode failed.
"""
from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder, write_bytes, write_json, write_text
from export.convert import CALIBRATION_IMAGES, INT8_IO_TYPES, QUANT_MODES, check_mode
from export.golden import GOLDEN_DIR, GoldenImages, write_golden
from export.runtime import LATENCY_RUNS, TFLiteModel, measure_latency
from export.verify import Verification

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
    calib: int = CALIBRATION_IMAGES
    min_agreement: float = 0.98
    int8_io: str = "uint8"
    qat_epochs: int = 2
    prune_epochs: int = 2
    qat_lr: float = 3e-5
    prune_lr: float = 1e-4
    latency_runs: int = LATENCY_RUNS

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


class ExportTarget(Protocol):
    """What a task contributes to the export contract (``tasks`` makes one per run)."""

    task: str
    quality: str                       # the name of ``Verification.score``: "accuracy", "mAP@.5"
    labels: list[str]
    reference_score: float             # the Keras model's, on the verification images
    examples: int                      # verification images (the whole test split)

    def convert(self, mode: str, cfg: ExportConfig, log) -> bytes:
        """The .tflite of ``mode``, metadata embedded."""

    def verify(self, mode: str, model_bytes: bytes, cfg: ExportConfig) -> Verification: ...

    def card(self, cfg: ExportConfig) -> dict:
        """The task's part of model_card.json: input, output, calibration, ..."""

    def golden_images(self) -> GoldenImages:
        """The first test images (export.golden.CANDIDATES at most) as the model sees them."""

    def golden_outputs(self, model_bytes: bytes, pixels, labels: list[str]) -> list[dict]:
        """LiteRT's answer per image (export.golden.classifier_outputs / detector_outputs)."""


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


def _quant(detail: dict) -> dict | None:
    scale, zero_point = detail["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)} if scale else None


def model_entry(m: ExportedModel, float32_size: int | None) -> dict:
    """The model card's record of one exported model."""
    tfl = TFLiteModel(m.model_bytes)
    in_dtype = np.dtype(tfl.input["dtype"]).name
    v = m.verification
    return {
        "file": m.file_name,
        "size_bytes": len(m.model_bytes),
        "gzip_bytes": len(gzip.compress(m.model_bytes, 9)),
        "size_vs_float32": (len(m.model_bytes) / float32_size) if float32_size else None,
        "input": {"dtype": in_dtype, "quantization": _quant(tfl.input)},
        "outputs": [{"name": d["name"], "dtype": np.dtype(d["dtype"]).name, "quantization": _quant(d)}
                    for d in tfl.outputs],
        "latency_ms_1_thread": {k: m.latency[k] for k in ("median_ms", "p90_ms")},
        "score": v.score,
        "agreement": v.agreement,
        "passed": v.passed,
        "verification": v.to_dict(),
        "mediapipe_compatible": in_dtype in MEDIAPIPE_INPUT_TYPES,
        # the figure an app sees: MediaPipe Tasks (Python) on the test images at their own size (export.app_score)
        "mediapipe": v.detail.get("mediapipe"),
    }


def model_card(target: ExportTarget, run: RunFolder, cfg: ExportConfig, models: list[ExportedModel]) -> dict:
    float32_size = next((len(m.model_bytes) for m in models if m.mode == "float32"), None)
    return {
        "task": target.task,
        "run": str(run.root),
        "labels": list(target.labels),
        "quality": target.quality,
        "keras_score": target.reference_score,
        "evaluation": {"split": "test", "examples": target.examples},
        "min_agreement": cfg.min_agreement,
        "int8_io": cfg.int8_io,
        "metadata": "TFLite Model Metadata (labels.txt, RGB, mean 0 / std 1, task.json) embedded in every .tflite",
        **target.card(cfg),
        "models": {m.mode: model_entry(m, float32_size) for m in models},
    }


def _app_cell(m: dict) -> str:
    """The report's MediaPipe cell of one model entry."""
    app = m.get("mediapipe") or {}
    if not m["mediapipe_compatible"]:
        return "no (int8 input)"
    if "score" in app:
        return f"**{app['score']:.4f}**"
    return f"no: {app['error']}" if "error" in app else "-"


def export_report(card: dict) -> str:
    """Markdown comparison of the exported modes."""
    q = card["quality"]
    lines = [f"# Export report: {card['run']} ({card['task']})", "",
             f"Data `{card['data']}`, {card['evaluation']['examples']} test images; "
             f"Keras model {q} {card['keras_score']:.4f}. "
             f"Calibration: {card['calibration']['images']} validation images + 1 full-range image. "
             f"Every model must agree with its Keras model on >= {card['min_agreement']:.0%} of the test "
             f"split{card.get('extra_check', '')}.", "",
             f"**What an app sees** is the `{q} in MediaPipe` column: MediaPipe Tasks (Python) on the test "
             f"images at their own size, as an app hands it a photo (it resizes without antialiasing, keeps one "
             f"class per box and reports whole-pixel boxes). `{q}` is LiteRT on our preprocessing.", ""]
    for note in card.get("notes", []):
        lines += [note, ""]
    lines += [f"| mode | file | size (bytes) | vs float32 | gzip (bytes) | input | median ms | p90 ms "
              f"| {q} | agreement | passed | {q} in MediaPipe |",
              "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|"]
    for mode, m in card["models"].items():
        ratio = f"{m['size_vs_float32']:.2f}x" if m["size_vs_float32"] else "-"
        lat = m["latency_ms_1_thread"]
        lines.append(f"| {mode} | {m['file']} | {m['size_bytes']:,} | {ratio} | {m['gzip_bytes']:,} | "
                     f"{m['input']['dtype']} | {lat['median_ms']:.3f} | {lat['p90_ms']:.3f} | "
                     f"{m['score']:.4f} | {m['agreement']:.1%} | "
                     f"{'yes' if m['passed'] else 'NO: ' + m['verification']['problem']} | "
                     f"{_app_cell(m)} |")
    lines += ["", "Latency: ai_edge_litert Interpreter (XNNPACK), 1 thread, single image. A model that failed "
              "verification is not written.", ""]
    return "\n".join(lines)


def export_run(target: ExportTarget, run_dir: Path, cfg: ExportConfig, *, log=print) -> dict:
    """Export RUN to RUN/export/ through ``target``. Returns the model card; raises UserError when
    any mode failed verification (after writing the ones that passed, the card and the report)."""
    run = RunFolder(Path(run_dir))
    models = []
    for mode in cfg.modes:
        log(f"Converting {mode}...")
        model_bytes = target.convert(mode, cfg, log)
        log(f"  verifying on {target.examples} test images...")
        verification = target.verify(mode, model_bytes, cfg)
        latency = measure_latency(model_bytes, runs=cfg.latency_runs, threads=1)
        models.append(ExportedModel(mode, model_bytes, verification, latency))
        app = verification.detail.get("mediapipe") or {}
        log(f"  {len(model_bytes):,} bytes, agreement {verification.agreement:.1%}, {target.quality} "
            f"{verification.score:.4f} (Keras {verification.reference_score:.4f}"
            + (f"; in MediaPipe {app['score']:.4f}" if "score" in app else "")
            + f"), {latency['median_ms']:.3f} ms"
            + ("" if verification.passed else f"; FAILED: {verification.problem}"))
    card = model_card(target, run, cfg, models)
    out = run.export
    for m in models:
        if m.verification.passed:
            write_bytes(out / m.file_name, m.model_bytes)
        else:
            (out / m.file_name).unlink(missing_ok=True)  # a stale model must not pass for this one
    write_text(out / "labels.txt", "".join(f"{name}\n" for name in target.labels))
    write_json(out / "model_card.json", card)
    write_text(out / "export_report.md", export_report(card))
    passed = {m.file_name: m.model_bytes for m in models if m.verification.passed}
    if passed:
        write_golden(out / GOLDEN_DIR, target.task, target.golden_images(), passed, list(target.labels),
                     target.golden_outputs)
    failed = [m for m in models if not m.verification.passed]
    if failed:
        raise UserError("exported model failed verification against the Keras model on the test split ("
                        + "; ".join(f"{m.mode}: {m.verification.problem}" for m in failed)
                        + f"); not shipping it. Report: {out / 'export_report.md'}")
    return card
