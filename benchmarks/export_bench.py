"""Export benchmark: size, CPU latency and accuracy of every quantization mode of one run.

    python -m benchmarks.export_bench RUN OUT_DIR [--data-dir DIR]

Writes OUT_DIR/export_bench.json and OUT_DIR/export_bench.md. Latency is the
ai_edge_litert Interpreter (XNNPACK) on this machine's CPU, single image, at 1
and 2 threads; median and p90 over LATENCY_RUNS invocations after warm-up.
Data comes from ``--data-dir`` (default: the project's, see ``benchmarks.data_paths``);
``smoke=True`` uses few calibration images, one QAT epoch and a few latency runs.
"""
from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data_paths import resolve_data_dir
from common.run_folder import write_json, write_text

LATENCY_RUNS = 100
THREADS = (1, 2)


@dataclass(frozen=True)
class ExportSize:
    """latency_runs: timed invocations per model and thread count; calib: int8 calibration
    images; qat_epochs: fine-tuning epochs of the int8-qat mode."""

    latency_runs: int = LATENCY_RUNS
    calib: int = 200
    qat_epochs: int = 2


FULL = ExportSize()
SMOKE = ExportSize(latency_runs=5, calib=8, qat_epochs=1)
# The targets, checked against the measured figures.
TARGETS = {"int8_size_ratio_max": 0.27, "int8_latency_ratio_max": 0.5, "int8_accuracy_drop_max": 0.005}


def _targets(rows: dict, keras_accuracy: float) -> dict:
    f32, i8, qat = rows.get("float32"), rows.get("int8"), rows.get("int8-qat")
    out = {}
    if f32 and i8:
        out["int8_size_ratio"] = {"value": i8["size_vs_float32"], "target": TARGETS["int8_size_ratio_max"],
                                  "met": i8["size_vs_float32"] <= TARGETS["int8_size_ratio_max"]}
        ratio = i8["latency_ms"]["1"]["median_ms"] / f32["latency_ms"]["1"]["median_ms"]
        out["int8_latency_ratio_1_thread"] = {"value": ratio, "target": TARGETS["int8_latency_ratio_max"],
                                              "met": ratio <= TARGETS["int8_latency_ratio_max"]}
        drop = keras_accuracy - i8["accuracy"]
        out["int8_accuracy_drop"] = {"value": drop, "target": TARGETS["int8_accuracy_drop_max"],
                                     "met": drop <= TARGETS["int8_accuracy_drop_max"] + 1e-9}
    if i8 and qat:
        out["qat_at_least_ptq"] = {"value": qat["accuracy"] - i8["accuracy"], "target": 0.0,
                                   "met": qat["accuracy"] >= i8["accuracy"]}
    return out


def _markdown(result: dict) -> str:
    lines = [f"# Export benchmark: {result['run']}", "",
             f"Machine: {result['machine']}. Keras float accuracy {result['keras_accuracy']:.2%} "
             f"on {result['test_examples']} test images. Latency: median / p90 ms over {result['latency_runs']} runs.", "",
             "| mode | size (bytes) | vs float32 | gzip (bytes) | 1 thread median | 1 thread p90 "
             "| 2 threads median | 2 threads p90 | accuracy | agreement |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, r in result["modes"].items():
        one, two = r["latency_ms"]["1"], r["latency_ms"]["2"]
        lines.append(f"| {mode} | {r['size_bytes']:,} | {r['size_vs_float32']:.2f}x | {r['gzip_bytes']:,} | "
                     f"{one['median_ms']:.3f} | {one['p90_ms']:.3f} | {two['median_ms']:.3f} | {two['p90_ms']:.3f} | "
                     f"{r['accuracy']:.2%} | {r['agreement']:.1%} |")
    lines += ["", "| target | value | limit | met |", "|---|---:|---:|---|"]
    for name, t in result["targets"].items():
        lines.append(f"| {name} | {t['value']:.3f} | {t['target']:.3f} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def run_export_benchmark(run_dir: Path, out_dir: Path, *, data_dir: Path | None = None, smoke: bool = False) -> dict:
    """Convert every mode of RUN, measure it, write JSON + Markdown into ``out_dir``; return the JSON dict.

    ``data_dir``: where RUN's data is prepared (None: the project's default). ``smoke``: tiny sizes.
    """
    from export.convert import QUANT_MODES
    from export.exporter import ExportConfig, ExportedModel, model_entry
    from export.runtime import measure_latency
    from tasks import task_named

    size = SMOKE if smoke else FULL
    cfg = ExportConfig(modes=QUANT_MODES, min_agreement=0.0, calib=size.calib, qat_epochs=size.qat_epochs)
    # The classifier's export target, as `make export QUANT=all` uses, driven mode by mode so that
    # each model is also timed at 2 threads (export_run times 1).
    target = task_named("classify").export_target(Path(run_dir), cfg, data_dir=resolve_data_dir(data_dir), log=print)
    models, latency = [], {}
    for mode in cfg.modes:
        model_bytes = target.convert(mode, cfg, print)
        latency[mode] = {str(t): measure_latency(model_bytes, runs=size.latency_runs, threads=t) for t in THREADS}
        models.append(ExportedModel(mode, model_bytes, target.verify(mode, model_bytes, cfg), latency[mode]["1"]))
    float32_size = next(len(m.model_bytes) for m in models if m.mode == "float32")
    rows = {}
    for m in models:
        entry = model_entry(m, float32_size)
        rows[m.mode] = {
            "size_bytes": entry["size_bytes"], "gzip_bytes": entry["gzip_bytes"],
            "size_vs_float32": entry["size_vs_float32"], "input_dtype": entry["input"]["dtype"],
            "accuracy": entry["score"], "agreement": entry["agreement"], "latency_ms": latency[m.mode],
        }
    result = {
        "run": str(run_dir),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU used",
        "keras_accuracy": target.reference_score,
        "qat_keras_accuracy": (target.qat or {}).get("keras_accuracy"),
        "test_examples": target.examples,
        "latency_runs": size.latency_runs,
        "smoke": smoke,
        "modes": rows,
        "targets": _targets(rows, target.reference_score),
    }
    out_dir = Path(out_dir)
    write_json(out_dir / "export_bench.json", result)
    write_text(out_dir / "export_bench.md", _markdown(result))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs, measures nothing")
    args = parser.parse_args(argv)
    result = run_export_benchmark(args.run, args.out, data_dir=args.data_dir, smoke=args.smoke)
    print(_markdown(result))


if __name__ == "__main__":
    main()
