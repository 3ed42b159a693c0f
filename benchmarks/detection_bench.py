"""Detector benchmark: train from scratch on the built-in shapes within a time budget, then measure.

Reported (targets in brackets):

* mAP@.5 [>= 0.90] and mAP@[.5:.95] [>= 0.60] on the test split, for the Keras model and the
  float32 and int8 .tflite files (int8 within 2 points of Keras);
* median single-image latency of int8 vs float32 on this CPU [int8 <= 0.5x float32];
* images/s of the tf.data training pipeline (decode, resize, cache, augment, target encoding,
  batch) vs images/s the model trains at when its input costs nothing [pipeline >= 3x].

The number of epochs is set so that training fits the budget: the model's measured
consumption rate times the training time left, over the train split's size.

Data comes from ``data_dir`` (default: the project's, see ``benchmarks.data_paths``).
``smoke=True`` trains a tiny 64 px detector for one epoch on a few images: it checks the
benchmark works end to end; its mAP and timings mean nothing.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.data_paths import resolve_data_dir
from common.run_folder import write_json, write_text
from models.anchors import AnchorConfig
from models.ssd import SSDConfig

TARGETS = {"map50": 0.90, "map": 0.60, "int8_map50_gap": 0.02, "latency_ratio": 0.5, "pipeline_ratio": 3.0}
RESERVE_S = 360  # after training: test evaluation, two conversions, tflite scoring, latency


@dataclass(frozen=True)
class DetectionSize:
    """How large the benchmark is.

    data: the DATA= spec when the caller gives none.
    ssd: the detector (None: ``DetectTrainConfig``'s default).
    batch_size: None: ``DetectTrainConfig``'s.
    epochs: None: as many as fit the time budget; else exactly this many.
    pipeline_seconds, consumption_steps: timing of the pipeline and consumption measurements.
    calibration_images: of the int8 export; latency_runs: per exported model.
    """

    data: str = "shapes"
    ssd: SSDConfig | None = None
    batch_size: int | None = None
    epochs: int | None = None
    pipeline_seconds: float = 20.0
    consumption_steps: int = 15
    calibration_images: int = 100
    latency_runs: int = 100


# The smallest detector of the default's kind (MobileNetV2 SSDLite): 64 px input, two levels, thin heads.
SMOKE_SSD = SSDConfig(anchors=AnchorConfig(input_size=64, strides=(16, 32), min_scale=0.25, max_scale=0.5),
                      alpha=0.35, head_depth=0, head_filters=16, extra_filters=32)
FULL = DetectionSize()
SMOKE = DetectionSize(
    data="shapes:train=16,validation=8,test=8,size=64", ssd=SMOKE_SSD, batch_size=8, epochs=1, pipeline_seconds=0.3, consumption_steps=2,
    calibration_images=4, latency_runs=5,
)


def _images_per_second(iterator, batch_of, seconds: float, warmup: int = 2) -> float:
    for _ in range(warmup):
        next(iterator)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += batch_of(next(iterator))
    return n / (time.perf_counter() - start)


def measure_pipeline(source, cfg, seconds: float = 20.0) -> dict:
    """images/s of the training pipeline: the first pass (decoding into the cache) and steady state."""
    from pipeline.detection_dataset import detection_dataset

    ds = detection_dataset(source, "train", cfg.ssd.anchors, cfg.pipeline(), training=True, seed=cfg.seed)
    start, n = time.perf_counter(), 0
    for x, _ in ds:  # epoch 1 fills the cache
        n += len(x)
    first = n / (time.perf_counter() - start)
    steady = _images_per_second(iter(ds.repeat()), lambda b: len(b[0]), seconds)
    return {"first_epoch_images_per_s": first, "images_per_s": steady}


def measure_consumption(source, cfg, steps: int = 15) -> dict:
    """images/s the model trains at on one batch held in memory (no input cost)."""
    import tensorflow as tf

    from pipeline.detection_dataset import detection_dataset
    from pipeline.training.detector import build_detector, compile_detector

    x, y = next(iter(detection_dataset(source, "validation", cfg.ssd.anchors, cfg.pipeline(), training=False)))
    model = compile_detector(build_detector(cfg, source.num_classes), cfg, total_steps=100)
    held = tf.data.Dataset.from_tensors((x, y)).repeat()
    t = time.perf_counter()
    model.fit(held, steps_per_epoch=2, epochs=1, verbose=0)  # traces the train step
    trace_s = time.perf_counter() - t
    t = time.perf_counter()
    model.fit(held, steps_per_epoch=steps, epochs=1, verbose=0)
    return {"images_per_s": steps * len(x) / (time.perf_counter() - t), "trace_seconds": trace_s}


def export_and_verify(run: Path, data_dir: Path, size: DetectionSize) -> dict:
    """mode -> (.tflite bytes, ``export.verify.Verification`` on the whole test split) for float32
    and int8, through the detector's export target (``tasks``), each written to RUN/export/model_<mode>.tflite.

    Not ``export_run``: it refuses to go on past a model that fails verification, and a
    benchmark reports the figures whatever they are (min_agreement 0, and the mAP drop is
    reported, not judged).
    """
    from common.run_folder import write_bytes
    from export.exporter import ExportConfig
    from tasks import task_named

    cfg = ExportConfig(modes=("float32", "int8"), calib=size.calibration_images, min_agreement=0.0)
    target = task_named("detect").export_target(run, cfg, data_dir=data_dir, log=print)
    out = {}
    for mode in cfg.modes:
        model_bytes = target.convert(mode, cfg, print)
        out[mode] = (model_bytes, target.verify(mode, model_bytes, cfg))
        write_bytes(run / "export" / f"model_{mode}.tflite", model_bytes)  # the names `make export` uses
    return out


def run_detection_benchmark(out_dir: Path, minutes: float = 30, *, data: str | None = None,
                            data_dir: Path | None = None, seed: int = 0, smoke: bool = False) -> dict:
    """Train, export and measure; writes OUT/detection_bench.json and .md. Returns the results.

    ``data``: a detection DATA= spec (None: the size's, the built-in shapes). ``data_dir``: where
    tfds data is prepared (None: the project's default). ``smoke``: tiny sizes (see ``SMOKE``).
    """
    from export.runtime import measure_latency
    from pipeline.sources.specs import open_source
    from pipeline.training.detector import DetectTrainConfig, train_detector

    begin = time.time()
    size = SMOKE if smoke else FULL
    data = data or size.data
    data_dir = resolve_data_dir(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = open_source(data, "detect", data_dir=data_dir, seed=seed)
    base = DetectTrainConfig(data=data, seed=seed, auto_input=False, auto_anchors=False)  # the size's SSD
    base = replace(base, ssd=size.ssd or base.ssd, batch_size=size.batch_size or base.batch_size)
    pipeline = measure_pipeline(source, base, seconds=size.pipeline_seconds)
    consumption = measure_consumption(source, base, steps=size.consumption_steps)
    train_budget = minutes * 60 - (time.time() - begin) - RESERVE_S
    epochs = size.epochs or max(1, math.floor(train_budget * consumption["images_per_s"] / source.split_sizes["train"]))
    cfg = replace(base, epochs=epochs, patience_steps=epochs * math.ceil(source.split_sizes["train"] / base.batch_size))
    print(f"pipeline {pipeline['images_per_s']:.0f} img/s, model {consumption['images_per_s']:.1f} img/s; "
          f"training {epochs} epochs in ~{train_budget / 60:.1f} min", flush=True)

    # Its own run folder: the tuning benchmark writes a run in the same output folder.
    run = out_dir / "detection-run"
    metrics = train_detector(cfg, source, run, force=True)
    exports = export_and_verify(run, data_dir, size)
    # the .tflite's test-split mAP, as verification measured it against the Keras model
    tflite = {mode: {"map50": v.score, "map": v.detail["map"]} for mode, (_, v) in exports.items()}
    latency = {mode: measure_latency(blob, runs=size.latency_runs, threads=1) for mode, (blob, _) in exports.items()}

    keras_test = metrics["test"]
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "note": "shared 2-core CPU, no GPU"},
        "data": data,
        "smoke": smoke,
        "minutes_budget": minutes,
        "wall_minutes": (time.time() - begin) / 60,
        "config": cfg.to_dict(),
        "epochs": metrics["epochs_run"],
        "train_seconds": metrics["train_seconds"],
        "map": {"keras": {"map50": keras_test["map50"], "map": keras_test["map"]},
                **{m: {"map50": t["map50"], "map": t["map"]} for m, t in tflite.items()}},
        "int8_map50_gap": keras_test["map50"] - tflite["int8"]["map50"],
        "int8_map_gap": keras_test["map"] - tflite["int8"]["map"],
        "latency_ms": {m: latency[m]["median_ms"] for m in latency},
        "latency_ratio": latency["int8"]["median_ms"] / latency["float32"]["median_ms"],
        "model_bytes": {m: len(blob) for m, (blob, _) in exports.items()},
        "agreement": {m: v.agreement for m, (_, v) in exports.items()},
        "pipeline": pipeline,
        "consumption": consumption,
        "pipeline_ratio": pipeline["images_per_s"] / consumption["images_per_s"],
        "targets": TARGETS,
    }
    results["met"] = {
        "map50": keras_test["map50"] >= TARGETS["map50"],
        "map": keras_test["map"] >= TARGETS["map"],
        "int8_within_2_points": results["int8_map50_gap"] <= TARGETS["int8_map50_gap"]
        and results["int8_map_gap"] <= TARGETS["int8_map50_gap"],
        "latency": results["latency_ratio"] <= TARGETS["latency_ratio"],
        "pipeline": results["pipeline_ratio"] >= TARGETS["pipeline_ratio"],
    }
    write_json(out_dir / "detection_bench.json", results)
    write_text(out_dir / "detection_bench.md", _markdown(results))
    print(_markdown(results))
    return results


def _markdown(r: dict) -> str:
    ok = lambda flag: "met" if flag else "NOT met"  # noqa: E731
    rows = [f"| {name} | {v['map50']:.3f} | {v['map']:.3f} |" for name, v in r["map"].items()]
    return "\n".join([
        "# Detection benchmark",
        "",
        f"{r['machine']['note']}; budget {r['minutes_budget']} min, wall {r['wall_minutes']:.1f} min; "
        f"{r['epochs']} epochs in {r['train_seconds'] / 60:.1f} min.",
        "",
        "| model | mAP@.5 | mAP@[.5:.95] |",
        "|---|---|---|",
        *rows,
        "",
        f"- mAP@.5 >= {TARGETS['map50']}: {ok(r['met']['map50'])}; mAP@[.5:.95] >= {TARGETS['map']}: {ok(r['met']['map'])}",
        f"- int8 vs Keras: mAP@.5 gap {100 * r['int8_map50_gap']:+.1f} points, mAP gap "
        f"{100 * r['int8_map_gap']:+.1f} points ({ok(r['met']['int8_within_2_points'])})",
        f"- latency (median, 1 thread): float32 {r['latency_ms']['float32']:.2f} ms, int8 "
        f"{r['latency_ms']['int8']:.2f} ms, ratio {r['latency_ratio']:.2f} ({ok(r['met']['latency'])})",
        f"- pipeline {r['pipeline']['images_per_s']:.0f} img/s (first epoch "
        f"{r['pipeline']['first_epoch_images_per_s']:.0f}) vs model {r['consumption']['images_per_s']:.1f} img/s: "
        f"{r['pipeline_ratio']:.1f}x ({ok(r['met']['pipeline'])})",
        "",
    ])


if __name__ == "__main__":  # python -m benchmarks.detection_bench OUT [MINUTES]
    import sys

    run_detection_benchmark(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/detection-bench"),
                            float(sys.argv[2]) if len(sys.argv) > 2 else 30)
