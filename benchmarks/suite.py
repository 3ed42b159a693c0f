"""`make bench`: every benchmark in one run, or a chosen few (`BENCH=pipeline,export`).

Each benchmark writes its own JSON and Markdown into the output folder;
``summary.md`` collects the Markdown tables in one page.

Every benchmark reads its data from one folder: ``data_dir`` (DATA_DIR= / --data-dir), else
the project's default (``pipeline.sources.specs.default_data_dir()``: $TFDS_DATA_DIR or
./data/tfds), never tfds' own ~/tensorflow_datasets. ``smoke=True`` runs each benchmark at a
tiny size (a few dozen 32 px images, one epoch, two trials, a 64 px detector, a few latency
runs; 200 digits and 40 photos for the quality benchmark): it checks that every benchmark works
from a fresh clone in a few minutes, and its numbers measure nothing.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path

import keras

from benchmarks.data_paths import SMOKE_CLASSIFY_DATA, resolve_data_dir
from common.errors import UserError
from common.run_folder import write_text

ORDER = ("pipeline", "export", "tuning", "detection", "detector-int8", "distribute", "quality", "tuning-quality")


def _ensure_trained_run(run_dir: Path, data_dir: Path, smoke: bool) -> Path:
    """The export benchmark measures a real model: train the default one once if missing
    (at smoke size: one epoch on the tiny data, 32 px)."""
    from pipeline.sources.specs import open_source
    from pipeline.training.classifier import TrainConfig, train_classifier

    cfg = TrainConfig(data=SMOKE_CLASSIFY_DATA, image_size=32, epochs=1) if smoke else TrainConfig()
    train_classifier(cfg, open_source(cfg.data, data_dir=data_dir), run_dir, verbose=0 if smoke else None)
    return run_dir


def _pipeline(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.pipeline_throughput import run_pipeline_benchmark

    return run_pipeline_benchmark(SMOKE_CLASSIFY_DATA if smoke else "shapes", out, data_dir=data_dir, smoke=smoke)


def _export(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.export_bench import run_export_benchmark
    from benchmarks.int8_kernels import run_int8_kernel_probe

    # A smoke run trains its own tiny model: a full-size run folder has another config.
    run = _ensure_trained_run(out / ("classify-run-smoke" if smoke else "classify-run"), data_dir, smoke)
    result = run_export_benchmark(run, out, data_dir=data_dir, smoke=smoke)
    result["int8_kernels"] = run_int8_kernel_probe(out, smoke=smoke)  # where the int8 speed-up comes from, or not
    return result


def _tuning(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.tuning_memory import run_tuning_memory_benchmark

    return run_tuning_memory_benchmark(out, data_dir=data_dir, smoke=smoke)


def _detection(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.detection_bench import run_detection_benchmark

    return run_detection_benchmark(out, data_dir=data_dir, smoke=smoke)


def _detector_int8(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.detector_int8_profile import run_detector_int8_profile

    return run_detector_int8_profile(out, smoke=smoke)  # an untrained model: op times do not depend on the weights


def _distribute(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.distribute_bench import run_distribute_benchmark

    return run_distribute_benchmark(out, smoke=smoke)  # random images: no data read


def _quality(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.quality_bench import run_quality_benchmark

    return run_quality_benchmark(out, data_dir=data_dir, smoke=smoke)  # real images, written into data_dir


def _tuning_quality(out: Path, data_dir: Path, smoke: bool):
    from benchmarks.tuning_quality import run_tuning_quality_benchmark

    return run_tuning_quality_benchmark(out, data_dir=data_dir, smoke=smoke)  # `make train` vs `make tune`


RUNNERS = {"pipeline": _pipeline, "export": _export, "tuning": _tuning, "detection": _detection,
           "detector-int8": _detector_int8, "distribute": _distribute, "quality": _quality,
           "tuning-quality": _tuning_quality}


def parse_names(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(ORDER)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise UserError(f"BENCH={text}: unknown benchmark(s) {unknown}; choose from {', '.join(ORDER)} or all")
    return names


def run_benchmarks(names: list[str], out_dir: Path, data_dir: Path | None = None, smoke: bool = False) -> dict:
    """Run ``names`` in order into ``out_dir``; write summary.md; return {name: result}.

    ``data_dir``: where tfds data is prepared (None: the project's default). ``smoke``: tiny sizes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = resolve_data_dir(data_dir)  # resolved once, so every benchmark reads the same folder
    results, timings = {}, {}
    for name in names:
        print(f"\n=== benchmark: {name}{' (smoke size)' if smoke else ''} ===")
        start = time.perf_counter()
        results[name] = RUNNERS[name](out_dir, data_dir, smoke)
        timings[name] = time.perf_counter() - start
        # Each benchmark builds its own models: left in Keras' global state, they slow every later
        # trace (the detector benchmarks took ~20% longer after the others) and add to its memory.
        keras.backend.clear_session()
        gc.collect()
    pages = sorted(p for p in out_dir.glob("*.md") if p.name != "summary.md")
    summary = ["# Benchmarks", ""]
    if smoke:
        summary += ["Smoke size (tiny data and models): these numbers check that the benchmarks run; "
                    "they measure nothing.", ""]
    summary += [f"Data dir: {data_dir}", "", "| benchmark | wall time |", "|---|---|"]
    summary += [f"| {n} | {t / 60:.1f} min |" for n, t in timings.items()]
    summary += [""] + [p.read_text() for p in pages]
    write_text(out_dir / "summary.md", "\n".join(summary))
    print(f"\nBenchmark results in {out_dir}/ (summary.md)")
    return results
