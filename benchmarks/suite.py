"""`make bench`: every benchmark in one run, or a chosen few (`BENCH=pipeline,export`).

Each benchmark writes its own JSON and Markdown into the output folder;
``summary.md`` collects the Markdown tables in one page.
"""
from __future__ import annotations

import time
from pathlib import Path

from common.errors import UserError
from common.run_folder import write_text

ORDER = ("pipeline", "export", "tuning", "detection", "detector-int8", "distribute")


def _ensure_trained_run(run_dir: Path, data_dir: Path | None) -> Path:
    """The export benchmark measures a real model: train the default one once if missing."""
    from pipeline.sources.specs import open_source
    from pipeline.training.classifier import TrainConfig, train_classifier

    cfg = TrainConfig()
    train_classifier(cfg, open_source(cfg.data, data_dir=data_dir), run_dir)
    return run_dir


def _pipeline(out: Path, data_dir):
    from benchmarks.pipeline_throughput import run_pipeline_benchmark

    return run_pipeline_benchmark("shapes", out, data_dir=data_dir)


def _export(out: Path, data_dir):
    from benchmarks.export_bench import run_export_benchmark

    from benchmarks.int8_kernels import run_int8_kernel_probe

    run = _ensure_trained_run(out / "classify-run", data_dir)
    result = run_export_benchmark(run, out, data_dir=data_dir)
    result["int8_kernels"] = run_int8_kernel_probe(out)  # where the int8 speed-up comes from, or not
    return result


def _tuning(out: Path, data_dir):
    from benchmarks.tuning_memory import run_tuning_memory_benchmark

    return run_tuning_memory_benchmark(out, data_dir=data_dir)


def _detection(out: Path, data_dir):
    from benchmarks.detection_bench import run_detection_benchmark

    return run_detection_benchmark(out, data_dir=data_dir)


def _detector_int8(out: Path, data_dir):
    from benchmarks.detector_int8_profile import run_detector_int8_profile

    return run_detector_int8_profile(out)  # an untrained model: op times do not depend on the weights


def _distribute(out: Path, data_dir):
    from benchmarks.distribute_bench import run_distribute_benchmark

    return run_distribute_benchmark(out)


RUNNERS = {"pipeline": _pipeline, "export": _export, "tuning": _tuning, "detection": _detection,
           "detector-int8": _detector_int8, "distribute": _distribute}


def parse_names(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(ORDER)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise UserError(f"BENCH={text}: unknown benchmark(s) {unknown}; choose from {', '.join(ORDER)} or all")
    return names


def run_benchmarks(names: list[str], out_dir: Path, data_dir: Path | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    results, timings = {}, {}
    for name in names:
        print(f"\n=== benchmark: {name} ===")
        start = time.perf_counter()
        results[name] = RUNNERS[name](out_dir, data_dir)
        timings[name] = time.perf_counter() - start
    pages = sorted(p for p in out_dir.glob("*.md") if p.name != "summary.md")
    summary = ["# Benchmarks", "", "| benchmark | wall time |", "|---|---|"]
    summary += [f"| {n} | {t / 60:.1f} min |" for n, t in timings.items()]
    summary += [""] + [p.read_text() for p in pages]
    write_text(out_dir / "summary.md", "\n".join(summary))
    print(f"\nBenchmark results in {out_dir}/ (summary.md)")
    return results
