"""Training throughput (images/s) of the CNN with 1 and 2 local workers, and with mixed precision on a GPU.

Each case runs in fresh processes, like ``make train``: one worker uses the default strategy
and every core; N workers use MultiWorkerMirroredStrategy on 127.0.0.1, each with its share of
the cores. Input costs nothing (one in-memory batch, repeated), so the numbers are the
training step itself plus, with several workers, the gradient all-reduce between them.
The mixed precision cases run only where a GPU is visible (on a CPU, float16 is emulated and slow).

    python -m benchmarks.distribute_bench [--out runs/bench-distribute]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.run_folder import write_json, write_text

GLOBAL_BATCH = 64
IMAGE_SIZE = 64
WARMUP_STEPS = 5


def _worker(precision: str, steps: int, out: Path) -> None:
    """One benchmark worker (multi-worker when TF_CONFIG is set); the chief writes images/s to ``out``."""
    from pipeline.training import distribute

    strategy = distribute.select_strategy("multiworker" if distribute.read_tf_config() else "default")
    import keras
    import numpy as np
    import tensorflow as tf

    from models.cnn import CNNConfig, build_cnn

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 7, GLOBAL_BATCH).astype(np.int32)
    policy = distribute.auto_shard_policy(None, distribute.num_workers(strategy))
    ds = distribute.with_auto_shard(tf.data.Dataset.from_tensors((images, labels)).repeat(), policy)
    keras.utils.set_random_seed(0)
    with strategy.scope(), distribute.apply_precision(precision):
        model = build_cnn(CNNConfig(), 7, IMAGE_SIZE,
                          output_dtype="float32" if distribute.is_mixed(precision) else None)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model = distribute.adapt_model(model, strategy)
    model.fit(ds, epochs=1, steps_per_epoch=WARMUP_STEPS, verbose=0)  # tracing, first all-reduces
    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    if distribute.is_chief():
        write_json(out, {"images_per_second": steps * GLOBAL_BATCH / seconds, "seconds": seconds, "steps": steps})


def _case(workers: int, precision: str, steps: int) -> dict:
    from pipeline.training.multiworker import run_workers

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.distribute_bench", "--worker", "--precision", precision,
                   "--steps", str(steps), "--result", str(out)]
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if workers == 1:
            code = subprocess.run(command, env=env, cwd=Path(__file__).resolve().parents[1]).returncode
        else:
            code = run_workers(command, workers, env=env)
        if code:
            raise RuntimeError(f"benchmark case workers={workers} precision={precision} failed (status {code})")
        result = json.loads(out.read_text())
    return {"workers": workers, "precision": precision, **result}


def run_distribute_benchmark(out_dir: Path, *, steps: int = 30) -> dict:
    """Measure every case this machine can run; write distribute.json and distribute.md to ``out_dir``."""
    from pipeline.training import distribute

    gpus = len(distribute.visible_gpus())
    cases = [(1, "float32"), (2, "float32")]
    if gpus:
        cases += [(1, "mixed_float16"), (2, "mixed_float16")]
    results = [_case(w, p, steps) for w, p in cases]
    base = results[0]["images_per_second"]
    for r in results:
        r["speedup"] = r["images_per_second"] / base
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "gpus": gpus},
        "model": f"CNN (default config), {IMAGE_SIZE}px input, global batch {GLOBAL_BATCH}",
        "steps": steps,
        "results": results,
    }
    out_dir = Path(out_dir)
    write_json(out_dir / "distribute.json", report)
    lines = ["# Multi-worker training throughput", "",
             f"{report['model']}; {report['machine']['cpus']} CPUs, {gpus} GPU(s); {steps} timed steps per case.",
             "", "| workers | precision | images/s | vs 1 worker float32 |", "|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['precision']} | {r['images_per_second']:.0f} | {r['speedup']:.2f}x |"
              for r in results]
    if not gpus:
        lines += ["", "No GPU visible: mixed precision cases not run (float16 on a CPU is emulated, not faster)."]
    write_text(out_dir / "distribute.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-distribute"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        _worker(args.precision, args.steps, args.result)
    else:
        run_distribute_benchmark(args.out, steps=args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
