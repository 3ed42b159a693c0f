"""Tuning quality: does `make tune`, with its defaults, end with a model at least as good as `make train`'s?

For each data set, through the command line only (``cli.py train`` / ``cli.py tune`` as child
processes, with nothing but the data and the run folder, as a user types them):

1. `make train`: the default model, its test accuracy;
2. `make tune`: the default search; the shipped model's test accuracy, the gap to (1), the
   trials, the time, and whether "the default wins";
3. `make tune MAX_LATENCY_MS=` half of the default's int8 latency (measured by (2) on this CPU): the
   most accurate feasible model, and its gap to the default's accuracy.

Data: scikit-learn's 1,797 digit scans as a class folder (``benchmarks.quality_data``) and the
built-in shapes. Targets (issue 12): (2) >= (1) on both; (3) within 1 point of (1).

``smoke=True`` runs 200 digits, a few steps and 2 trials: it checks that the benchmark runs end to
end; its numbers mean nothing.
"""
from __future__ import annotations

import csv
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data_paths import resolve_data_dir
from benchmarks.quality_bench import run_cli
from benchmarks.quality_data import write_digits_folder
from common.run_folder import read_json, write_json, write_text
from export.runtime import cpu_description


@dataclass(frozen=True)
class TuningQualitySize:
    """digits: scans (None: all); shapes: run the built-in data too; train_flags / tune_flags: added to
    the commands (() at full size: the defaults, untouched)."""

    digits: int | None = None
    shapes: bool = True
    train_flags: tuple[str, ...] = ()
    tune_flags: tuple[str, ...] = ()


FULL = TuningQualitySize()
SMOKE = TuningQualitySize(digits=200, shapes=False, train_flags=("--epochs", "1"),
                          tune_flags=("--tuner", "random", "--trials", "2", "--steps", "4", "--final-epochs", "1",
                                      "--latency-runs", "5"))


def _tuned(run: Path) -> dict:
    """What a finished `make tune` in ``run`` shipped, and the default it was compared with."""
    best = read_json(run / "tuning" / "best_hyperparameters.json")
    metrics = read_json(run / "metrics.json")
    trials = [line for line in (run / "tuning" / "trials.csv").read_text().splitlines()[1:] if line]
    return {"test_accuracy": metrics["test"]["accuracy"], "trial_id": best["trial_id"],
            "latency_ms": best["latency_ms"], "int8_bytes": best["int8_bytes"], "default": best.get("default"),
            "trials": len(trials)}


def run_one(name: str, data: str, out: Path, size: TuningQualitySize, data_dir: Path) -> dict:
    common = ("--data", data, "--data-dir", str(data_dir))
    runs = {k: out / f"tuning-quality-{name}-{k}" for k in ("train", "tune", "tune-fast")}
    for run in runs.values():
        shutil.rmtree(run, ignore_errors=True)  # the current defaults, run now
    seconds = {"train": run_cli("train", *common, "--run", str(runs["train"]), *size.train_flags)}
    default_test = read_json(runs["train"] / "metrics.json")["test"]["accuracy"]
    seconds["tune"] = run_cli("tune", *common, "--run", str(runs["tune"]), *size.tune_flags)
    tuned = _tuned(runs["tune"])
    default_latency = (tuned["default"] or {}).get("latency_ms") or tuned["latency_ms"]
    limit = round(default_latency / 2, 4)
    start = time.perf_counter()
    try:
        run_cli("tune", *common, "--run", str(runs["tune-fast"]), "--max-latency-ms", str(limit), *size.tune_flags)
        fast = _tuned(runs["tune-fast"])
    except RuntimeError:  # no trial met the limit: `make tune` says so and ships nothing
        fast = None
    seconds["tune_fast"] = time.perf_counter() - start
    return {
        "data": data, "default_test_accuracy": default_test,
        "tuned": tuned, "gap_points": round(100 * (tuned["test_accuracy"] - default_test), 2),
        "default_wins": bool(tuned["default"] and tuned["default"]["default_wins"]),
        "latency_limit_ms": limit, "fast": fast,
        "fast_gap_points": None if fast is None else round(100 * (fast["test_accuracy"] - default_test), 2),
        "fast_latency_ratio": None if fast is None or not default_latency
        else round(fast["latency_ms"] / default_latency, 3),
        "fastest_trial_ms": _fastest(runs["tune-fast"]),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _fastest(run: Path) -> float | None:
    """The lowest median int8 latency any trial of the search in ``run`` measured."""
    path = run / "tuning" / "trials.csv"
    if not path.exists():
        return None
    times = [float(r["latency_ms"]) for r in csv.DictReader(path.open()) if r["latency_ms"]]
    return min(times) if times else None


def run_tuning_quality_benchmark(out_dir: Path, *, data_dir: Path | None = None, smoke: bool = False) -> dict:
    """Run the benchmark into ``out_dir``; write tuning_quality.json and .md. Returns the figures."""
    size = SMOKE if smoke else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = resolve_data_dir(data_dir)
    digits = write_digits_folder(data_dir / "quality" / ("digits-smoke" if smoke else "digits"), size.digits)
    sets = {"digits": f"folder:{digits}"}
    if size.shapes:
        sets["shapes"] = "shapes"
    result = {"cpu": cpu_description(), "smoke": smoke,
              "sets": {name: run_one(name, data, out_dir, size, data_dir) for name, data in sets.items()}}
    write_json(out_dir / "tuning_quality.json", result)
    write_text(out_dir / "tuning_quality.md", _markdown(result))
    return result


def _markdown(r: dict) -> str:
    lines = ["# Tuning against the default", "",
             f"`make train` and `make tune` with their defaults, on {r['cpu']}; then `make tune` with "
             "MAX_LATENCY_MS at half the default's int8 latency.", "",
             "| data | `make train` test | `make tune` test | gap | shipped | trials | tune time | "
             "half-latency limit | its test | gap | latency vs default |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["sets"].items():
        shipped = "the default" if s["default_wins"] else f"trial {s['tuned']['trial_id']}"
        if s["fast"] is None:
            fastest = "-" if s["fastest_trial_ms"] is None else f"{s['fastest_trial_ms']:.3f} ms"
            fast = f"no trial met it (fastest: {fastest}) | - | -"
        else:
            ratio = "-" if s["fast_latency_ratio"] is None else f"{s['fast_latency_ratio']:.2f}×"
            fast = f"{s['fast']['test_accuracy']:.2%} | {s['fast_gap_points']:+.2f} | {ratio}"
        lines.append(f"| {name} | {s['default_test_accuracy']:.2%} | {s['tuned']['test_accuracy']:.2%} | "
                     f"{s['gap_points']:+.2f} | {shipped} | {s['tuned']['trials']} | "
                     f"{s['seconds']['tune'] / 60:.1f} min | {s['latency_limit_ms']:g} ms | {fast} |")
    return "\n".join(lines) + "\n"
