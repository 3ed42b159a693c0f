"""Export benchmark: size, CPU latency and accuracy of every quantization mode of one run.

    python -m benchmarks.export_bench RUN OUT_DIR [--data-dir DIR]

Writes OUT_DIR/export_bench.json and OUT_DIR/export_bench.md. Latency is the
ai_edge_litert Interpreter (XNNPACK) on this machine's CPU, single image, at 1
and 2 threads; median and p90 over LATENCY_RUNS invocations after warm-up.
"""
from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from common.run_folder import write_json, write_text

LATENCY_RUNS = 100
THREADS = (1, 2)
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
             f"on {result['test_examples']} test images. Latency: median / p90 ms over {LATENCY_RUNS} runs.", "",
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


def run_export_benchmark(run_dir: Path, out_dir: Path, *, data_dir: Path | None = None) -> dict:
    """Convert every mode of RUN, measure it, write JSON + Markdown into ``out_dir``; return the JSON dict."""
    from export.convert import QUANT_MODES
    from export.exporter import ExportConfig, export_models, load_export_data, model_entry
    from export.runtime import measure_latency

    cfg = ExportConfig(modes=QUANT_MODES, min_agreement=0.0, latency_runs=5)
    data = load_export_data(Path(run_dir), cfg.calib, data_dir=data_dir)
    models, facts = export_models(data, cfg)
    float32_size = next(len(m.model_bytes) for m in models if m.mode == "float32")
    rows = {}
    for m in models:
        entry = model_entry(m, float32_size)
        rows[m.mode] = {
            "size_bytes": entry["size_bytes"], "gzip_bytes": entry["gzip_bytes"],
            "size_vs_float32": entry["size_vs_float32"], "input_dtype": entry["input"]["dtype"],
            "accuracy": entry["accuracy"], "agreement": entry["agreement"],
            "latency_ms": {str(t): measure_latency(m.model_bytes, runs=LATENCY_RUNS, threads=t) for t in THREADS},
        }
    result = {
        "run": str(run_dir),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU used",
        "keras_accuracy": facts["keras_accuracy"],
        "qat_keras_accuracy": (facts["qat"] or {}).get("keras_accuracy"),
        "test_examples": int(len(data.test_labels)),
        "latency_runs": LATENCY_RUNS,
        "modes": rows,
        "targets": _targets(rows, facts["keras_accuracy"]),
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
    args = parser.parse_args(argv)
    result = run_export_benchmark(args.run, args.out, data_dir=args.data_dir)
    print(_markdown(result))


if __name__ == "__main__":
    main()
