"""Training throughput (images/s) of the CNN with 1 and 2 local workers, and with mixed precision on a GPU.

Each case runs in fresh processes, like ``make train``: one worker uses the default strategy
and every core; N workers use MultiWorkerMirroredStrategy on 127.0.0.1, each with its share of
the cores. Input costs nothing (one in-memory batch, repeated), so the numbers are the
training step itself plus, with several workers, the gradient all-reduce between them.
The mixed precision cases run only where a GPU is visible (on a CPU, float16 is emulated and slow).

    python -m benchmarks.distribute_bench [--out runs/bench-distribute] [--smoke]

No data is read (random images). ``smoke=True`` runs a few steps on 32 px images; it still
starts one process for the 1-worker case and two for the 2-worker case (what the benchmark
measures), so its floor is three TensorFlow start-ups and a cluster handshake.
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
from dataclasses import dataclass
from pathlib import Path

from common.run_folder import write_json, write_text

GLOBAL_BATCH = 64
IMAGE_SIZE = 64
WARMUP_STEPS = 5


@dataclass(frozen=True)
class DistributeSize:
    """global_batch: images per step over all workers; image_size: input side;
    warmup_steps: untimed steps (tracing, first all-reduces); steps: timed steps per case."""

    global_batch: int = GLOBAL_BATCH
    image_size: int = IMAGE_SIZE
    warmup_steps: int = WARMUP_STEPS
    steps: int = 30


FULL = DistributeSize()
SMOKE = DistributeSize(global_batch=8, image_size=32, warmup_steps=1, steps=2)


def _worker(precision: str, steps: int, out: Path, size: DistributeSize = FULL) -> None:
    """One benchmark worker (multi-worker when TF_CONFIG is set); the chief writes images/s to ``out``."""
    from pipeline.training import distribute

    strategy = distribute.select_strategy("multiworker" if distribute.read_tf_config() else "default")
    import keras
    import numpy as np
    import tensorflow as tf

    from models.cnn import CNNConfig, build_cnn
    from pipeline.training import keras_compat

    batch, side = size.global_batch, size.image_size
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, side, side, 3)).astype(np.float32)
    labels = rng.integers(0, 7, batch).astype(np.int32)
    policy = distribute.auto_shard_policy(None, distribute.num_workers(strategy))
    ds = distribute.with_auto_shard(tf.data.Dataset.from_tensors((images, labels)).repeat(), policy)
    keras.utils.set_random_seed(0)
    with strategy.scope(), distribute.apply_precision(precision):
        model = build_cnn(CNNConfig(), 7, side,
                          output_dtype="float32" if distribute.is_mixed(precision) else None)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model = keras_compat.adapt_model(model, strategy)
    model.fit(ds, epochs=1, steps_per_epoch=size.warmup_steps, verbose=0)  # tracing, first all-reduces
    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    if distribute.is_chief():
        write_json(out, {"images_per_second": steps * batch / seconds, "seconds": seconds, "steps": steps})


def _case(workers: int, precision: str, steps: int, smoke: bool = False) -> dict:
    from pipeline.training.multiworker import run_workers

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks.distribute_bench", "--worker", "--precision", precision,
                   "--steps", str(steps), "--result", str(out)] + (["--smoke"] if smoke else [])
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


def run_distribute_benchmark(out_dir: Path, *, steps: int | None = None, smoke: bool = False) -> dict:
    """Measure every case this machine can run; write distribute.json and distribute.md to ``out_dir``.

    ``steps``: timed steps per case (None: the size's). ``smoke``: tiny sizes (see ``SMOKE``).
    """
    from pipeline.training import distribute

    size = SMOKE if smoke else FULL
    steps = size.steps if steps is None else steps
    gpus = len(distribute.visible_gpus())
    cases = [(1, "float32"), (2, "float32")]
    if gpus:
        cases += [(1, "mixed_float16"), (2, "mixed_float16")]
    results = [_case(w, p, steps, smoke) for w, p in cases]
    base = results[0]["images_per_second"]
    for r in results:
        r["speedup"] = r["images_per_second"] / base
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "gpus": gpus},
        "model": f"CNN (default config), {size.image_size}px input, global batch {size.global_batch}",
        "steps": steps,
        "smoke": smoke,
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
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 30)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs, measures nothing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    size = SMOKE if args.smoke else FULL
    if args.worker:
        _worker(args.precision, size.steps if args.steps is None else args.steps, args.result, size)
    else:
        run_distribute_benchmark(args.out, steps=args.steps, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
