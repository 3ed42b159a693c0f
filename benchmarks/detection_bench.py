"""Detector benchmark: train from scratch on the built-in shapes within a time budget, then measure.

Reported (targets in brackets):

* mAP@.5 [>= 0.90] and mAP@[.5:.95] [>= 0.60] on the test split, for the Keras model and the
  float32 and int8 .tflite files (int8 within 2 points of Keras);
* median single-image latency of int8 vs float32 on this CPU [int8 <= 0.5x float32];
* images/s of the tf.data training pipeline (decode, resize, cache, augment, target encoding,
  batch) vs images/s the model trains at when its input costs nothing [pipeline >= 3x].

The number of epochs is set so that training fits the budget: the model's measured
consumption rate times the training time left, over the train split's size.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import replace
from pathlib import Path

from common.run_folder import write_json, write_text

TARGETS = {"map50": 0.90, "map": 0.60, "int8_map50_gap": 0.02, "latency_ratio": 0.5, "pipeline_ratio": 3.0}
RESERVE_S = 360  # after training: test evaluation, two conversions, tflite scoring, latency


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
    from pipeline.training.detector import build_detector

    x, y = next(iter(detection_dataset(source, "validation", cfg.ssd.anchors, cfg.pipeline(), training=False)))
    model = build_detector(cfg, source.num_classes, steps_per_epoch=100)
    held = tf.data.Dataset.from_tensors((x, y)).repeat()
    t = time.perf_counter()
    model.fit(held, steps_per_epoch=2, epochs=1, verbose=0)  # traces the train step
    trace_s = time.perf_counter() - t
    t = time.perf_counter()
    model.fit(held, steps_per_epoch=steps, epochs=1, verbose=0)
    return {"images_per_s": steps * len(x) / (time.perf_counter() - t), "trace_seconds": trace_s}


def _tflite_test_metrics(path: Path, source, cfg, labels) -> dict:
    from pipeline.evaluation.coco_eval import evaluate_detector
    from pipeline.evaluation.detect_predict import TFLiteDetector
    from pipeline.detection_dataset import detection_eval_dataset

    batches = detection_eval_dataset(source, "test", cfg.image_size, 32)
    metrics, _, _ = evaluate_detector(TFLiteDetector(path).detect_batch, batches, labels)
    return metrics


def run_detection_benchmark(out_dir: Path, minutes: float = 30, *, data: str = "shapes",
                            data_dir: Path | None = None, seed: int = 0) -> dict:
    """Train, export and measure; writes OUT/detection_bench.json and .md. Returns the results."""
    from export.detector_convert import export_detector
    from export.runtime import measure_latency
    from pipeline.sources.specs import open_source
    from pipeline.training.detector import DetectTrainConfig, train_detector

    begin = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = open_source(data, "detect", data_dir=data_dir, seed=seed)
    base = DetectTrainConfig(data=data, seed=seed)
    pipeline = measure_pipeline(source, base)
    consumption = measure_consumption(source, base)
    train_budget = minutes * 60 - (time.time() - begin) - RESERVE_S
    epochs = max(1, math.floor(train_budget * consumption["images_per_s"] / source.split_sizes["train"]))
    cfg = replace(base, epochs=epochs, patience=max(epochs, base.patience))
    print(f"pipeline {pipeline['images_per_s']:.0f} img/s, model {consumption['images_per_s']:.1f} img/s; "
          f"training {epochs} epochs in ~{train_budget / 60:.1f} min", flush=True)

    run = out_dir / "run"
    metrics = train_detector(cfg, source, run, force=True)
    labels = list(source.label_names)
    exports = export_detector(run, ("float32", "int8"), source=source)
    tflite = {mode: _tflite_test_metrics(Path(r["path"]), source, cfg, labels) for mode, r in exports.items()}
    latency = {mode: measure_latency(r["path"], runs=100, threads=1) for mode, r in exports.items()}

    keras_test = metrics["test"]
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "note": "shared 2-core CPU, no GPU"},
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
        "model_bytes": {m: r["bytes"] for m, r in exports.items()},
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
