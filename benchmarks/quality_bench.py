"""Quality benchmark: what the default settings give on real images.

Whatever `make train` does by default is trained, exported to int8 and scored, through the
command line and nothing else (``cli.py train / export / eval`` as child processes; train gets no
flags but the data and the run folder), so the figures follow the defaults as they change:

* digits: the CNN classifier on scikit-learn's 1797 real 8x8 handwritten digit scans
  (``folder:``); test accuracy of the Keras model and of the int8 .tflite, beside an RBF SVM on
  the raw pixels of the same train / validation / test split (C picked on validation);
* photos: the SSD detector on 600 256 px photos with four classes of objects cut from real
  photos and pasted onto real backgrounds (``voc:``, see ``benchmarks.quality_data``); mAP@.5
  and mAP@[.5:.95] of the Keras model and of the int8 .tflite. Its test split has 60 photos, so one
  run's figure moves by several points with the draw of the test images; the trained detector is
  also scored on a second set drawn with another seed (``HELD_OUT_SEED``; its 480-photo train split,
  which the run never saw), a steadier figure of the same model.

Each row also has the optimizer steps, the training time and the wall time of train + export +
eval, and the same figures for the previous release's defaults (``OLD_DEFAULTS``, measured once).

The data is written once into ``data_dir``/quality (default: the project's, see
``benchmarks.data_paths``). ``smoke=True`` uses 200 digits and 40 photos and trains one epoch:
it checks that the benchmark runs end to end; its numbers mean nothing.
"""
from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.svm import SVC

from benchmarks.data_paths import resolve_data_dir
from benchmarks.quality_data import write_digits_folder, write_photo_detection_set
from common.processes import die_with_parent
from common.run_folder import RunFolder, read_json, write_json, write_text
from pipeline.sources.specs import open_source

CLI = Path(__file__).resolve().parents[1] / "cli.py"
SVM_C = (0.3, 1.0, 3.0, 10.0, 30.0)  # picked on the validation split; gamma is sklearn's "scale"
HELD_OUT_SEED = 1  # the photo set the detector is also scored on: other draws of the same objects and backgrounds
HELD_OUT_SPLIT = "train"  # its largest split (80 %); no run of the benchmark trains on that set

# The previous release's defaults on the full-size data, run exactly as ``run_quality_benchmark``
# runs the current ones (cli.py train with only --task/--data/--run, export --quant int8, eval of
# the int8 .tflite; both exports passed export's default verification gate). Measured once, at
# commit a1b186a, on the 2-core development machine (Intel Xeon with AVX-512 VNNI, CPU only,
# shared with other work) on 2026-12-02. Digits: that release's 80/10/10 split (1439 / 179 / 179,
# so its test images are not exactly today's), batch 64, early stopping after 11 of 30 epochs.
# Photos: the set's own split files (480 / 60 / 60, the same today), batch 32, all 10 epochs.
# wall_seconds: train + export + eval, each a fresh process.
OLD_DEFAULTS = {
    "commit": "a1b186a",
    "digits": {"keras": {"accuracy": 0.9050}, "int8": {"accuracy": 0.9050},
               "steps": 253, "epochs_run": 11, "train_seconds": 41.8, "wall_seconds": 102.9},
    "photos": {"keras": {"map50": 0.0360, "map": 0.0108}, "int8": {"map50": 0.0362, "map": 0.0104},
               "steps": 150, "epochs_run": 10, "train_seconds": 239.2, "wall_seconds": 352.1},
}


@dataclass(frozen=True)
class QualitySize:
    """How large the benchmark is.

    digits: scans of the digits set (None: all 1797). photos: images of the photo set.
    train_flags: added to ``cli.py train`` (() at full size: the defaults, untouched).
    """

    digits: int | None = None
    photos: int = 600
    train_flags: tuple[str, ...] = ()


FULL = QualitySize()
SMOKE = QualitySize(digits=200, photos=40, train_flags=("--epochs", "1"))


def steps_of(metrics: dict, config: dict) -> int:
    """Optimizer steps a run took: ``metrics["steps"]`` when the run records it, else
    epochs_run x ceil(train images / batch_size) (config.json's batch size)."""
    if "steps" in metrics:
        return int(metrics["steps"])
    return int(metrics["epochs_run"]) * math.ceil(metrics["split_sizes"]["train"] / config["batch_size"])


def run_cli(*args: str) -> float:
    """Run ``cli.py ARGS`` in a child process (output shown as it comes); its wall seconds.
    A failure stops the benchmark with the command and its exit status."""
    command = [sys.executable, str(CLI), *args]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    code = subprocess.run(command, env=os.environ.copy(), preexec_fn=die_with_parent).returncode
    if code:
        raise RuntimeError(f"{' '.join(command)}: exit status {code}")
    return time.perf_counter() - start


def _eval_result(run: Path, model: Path, split: str = "test", data: str | None = None) -> dict:
    """What `cli.py eval` wrote for ``model`` on ``split`` (of ``data``; None: the run's own data)."""
    path = RunFolder(run).evaluation(model, split, data)
    if not path.exists():
        raise RuntimeError(f"{path}: `cli.py eval` wrote no evaluation of {model} on the {split} split")
    return read_json(path)


def train_export_eval(task: str, data: str, run: Path, size: QualitySize, scores: tuple[str, ...],
                      data_dir: Path) -> dict:
    """Train ``data`` with the defaults into ``run`` (a fresh folder), export int8, evaluate the
    .tflite on the test split. Returns the Keras and int8 ``scores``, steps and times. ``data_dir``:
    where the source's prepared files (its manifest) go, as `make train DATA_DIR=`."""
    shutil.rmtree(run, ignore_errors=True)  # the current defaults, trained now: never a finished run
    where = ("--data-dir", str(data_dir))
    seconds = {"train": run_cli("train", "--task", task, "--data", data, "--run", str(run), *where, *size.train_flags)}
    # --min-agreement 0: the int8 model is scored whatever its agreement with Keras (export's gate
    # would stop here, e.g. on a smoke run's barely trained model); the int8 column shows any drop
    seconds["export"] = run_cli("export", "--run", str(run), "--quant", "int8", "--min-agreement", "0", *where)
    model = run / "export" / "model_int8.tflite"
    seconds["eval"] = run_cli("eval", "--run", str(run), "--model", str(model), *where)
    metrics, config, tflite = read_json(run / "metrics.json"), read_json(run / "config.json"), _eval_result(run, model)
    return {
        "data": data,
        "run": str(run),
        "keras": {k: metrics["test"][k] for k in scores},
        "int8": {k: tflite[k] for k in scores},
        "test_examples": tflite.get("examples", tflite.get("images")),
        "split_sizes": metrics["split_sizes"],
        "steps": steps_of(metrics, config),
        "epochs_run": metrics["epochs_run"],
        "batch_size": config["batch_size"],
        "train_seconds": metrics["train_seconds"],
        "step_seconds": seconds,
        "wall_seconds": sum(seconds.values()),
    }


def score_held_out(run: Path, data: str, scores: tuple[str, ...], data_dir: Path) -> dict:
    """The Keras model and the int8 .tflite of ``run`` scored on ``data``'s HELD_OUT_SPLIT (`cli.py eval
    --data`): ``scores`` and "by_size" of each, the images, the objects and the seconds."""
    out: dict = {"data": data, "split": HELD_OUT_SPLIT, "seconds": 0.0}
    for name, model in (("keras", run / "model.keras"), ("int8", run / "export" / "model_int8.tflite")):
        out["seconds"] += run_cli("eval", "--run", str(run), "--model", str(model), "--data", data,
                                  "--split", HELD_OUT_SPLIT, "--data-dir", str(data_dir))
        result = _eval_result(run, model, HELD_OUT_SPLIT, data)
        out[name] = {k: result[k] for k in scores}
        out[name]["by_size"] = result.get("by_size")
        out["images"], out["objects"] = result.get("images"), result.get("objects")
    return out


def _pixels(source, split: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, H*W] gray pixels in 0..1, int [N] labels of one split."""
    x, y = [], []
    for ex in source.examples(split).as_numpy_iterator():
        x.append(ex["image"].astype(np.float32).mean(axis=-1).ravel() / 255.0)
        y.append(int(ex["label"]))
    return np.stack(x), np.array(y)


def svm_baseline(folder: Path, seed: int, data_dir: Path) -> dict:
    """An RBF SVM on raw gray pixels of the split the CNN saw (the folder source with the run's
    seed): C picked by validation accuracy, then scored on the test split."""
    source = open_source(f"folder:{folder}", "classify", seed=seed, data_dir=data_dir)
    (xt, yt), (xv, yv), (xs, ys) = (_pixels(source, s) for s in ("train", "validation", "test"))
    validation = {c: SVC(C=c).fit(xt, yt).score(xv, yv) for c in SVM_C}
    best = max(SVM_C, key=lambda c: validation[c])  # the first of equals: the smallest C
    return {"model": "sklearn SVC(kernel='rbf', gamma='scale')", "C": best, "validation_accuracy": validation[best],
            "accuracy": SVC(C=best).fit(xt, yt).score(xs, ys), "test_examples": len(ys)}


def run_quality_benchmark(out_dir: Path, *, data_dir: Path | None = None, smoke: bool = False) -> dict:
    """Write the data, train / export / evaluate both tasks with the defaults, and the SVM;
    writes OUT/quality.json and OUT/quality.md. Returns the results."""
    begin = time.perf_counter()
    size = SMOKE if smoke else FULL
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = resolve_data_dir(data_dir).resolve()
    root = data_dir / "quality"
    digits_dir = write_digits_folder(root / f"digits-{size.digits or 'all'}", limit=size.digits)
    photos_dir = write_photo_detection_set(root / f"photos-{size.photos}-seed0", n_images=size.photos, seed=0)

    digits = train_export_eval("classify", f"folder:{digits_dir}", out_dir / "quality" / "digits", size, ("accuracy",),
                               data_dir)
    digits["svm"] = svm_baseline(digits_dir, read_json(out_dir / "quality" / "digits" / "config.json")["seed"],
                                 data_dir)
    held_out_dir = write_photo_detection_set(root / f"photos-{size.photos}-seed{HELD_OUT_SEED}", n_images=size.photos,
                                             seed=HELD_OUT_SEED)
    photos = train_export_eval("detect", f"voc:{photos_dir}", out_dir / "quality" / "photos", size, ("map50", "map"),
                               data_dir)
    photos["held_out"] = score_held_out(Path(photos["run"]), f"voc:{held_out_dir}", ("map50", "map"), data_dir)

    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "smoke": smoke,
        "train_flags": list(size.train_flags),
        "digits": digits,
        "photos": photos,
        "old_defaults": OLD_DEFAULTS,
        "wall_seconds": time.perf_counter() - begin,
    }
    write_json(out_dir / "quality.json", results)
    write_text(out_dir / "quality.md", _markdown(results))
    print(_markdown(results))
    return results


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _markdown(r: dict) -> str:
    d, p, old = r["digits"], r["photos"], r["old_defaults"]
    h = p["held_out"]
    flags = " ".join(r["train_flags"]) or "none"

    def row(data: str, model: str, metric: str, label: str, new: dict, before: dict, baseline: str,
            costs: bool = True) -> str:
        cells = [data, model, label, _number(new["keras"][metric]), _number(new["int8"][metric]), baseline,
                 _number(before["keras"][metric]), _number(before["int8"][metric])]
        if costs:  # once per model
            cells += [f"{new['steps']} ({before['steps'] or '—'})",
                      f"{new['train_seconds']:.0f} ({_number(before['train_seconds'], 0)})",
                      f"{new['wall_seconds']:.0f} ({_number(before['wall_seconds'], 0)})"]
        else:
            cells += ["", "", ""]
        return "| " + " | ".join(cells) + " |"

    n_digits, n_photos = sum(d["split_sizes"].values()), sum(p["split_sizes"].values())
    return "\n".join([
        "# Quality with the default settings",
        "",
        f"`cli.py train` with no flags but the data (added flags: {flags}), export int8, eval of the int8 "
        f".tflite on the test split. Old defaults: the release at commit {old['commit']}, measured once "
        f"on the full-size data (in brackets: old figures). Wall: train + export + eval.",
        "",
        "| data | model | metric | Keras | int8 | RBF SVM on pixels | old Keras | old int8 | steps (old) "
        "| train s (old) | wall s (old) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        row(f"digits, {n_digits} real 8x8 scans", "CNN classifier", "accuracy", "accuracy", d, old["digits"],
            f"{d['svm']['accuracy']:.3f} (C={d['svm']['C']:g})"),
        row(f"photos, {n_photos} × 256 px, 4 classes", "SSD detector", "map50", "mAP@.5", p, old["photos"], "—"),
        row("", "", "map", "mAP@[.5:.95]", p, old["photos"], "—", costs=False),
        "",
        f"Test split: {d['test_examples']} digits, {p['test_examples']} photos. Whole benchmark "
        f"{r['wall_seconds'] / 60:.1f} min.",
        "",
        f"The same detector on {h['images']} photos it never saw, drawn with another seed (the {h['split']} split "
        f"of {h['data']}): Keras mAP@.5 {_number(h['keras']['map50'])}, mAP@[.5:.95] {_number(h['keras']['map'])}; "
        f"int8 mAP@.5 {_number(h['int8']['map50'])}, mAP@[.5:.95] {_number(h['int8']['map'])}.",
        "",
        *_size_lines(h["keras"].get("by_size")),
    ])


def _size_lines(by_size: dict | None) -> list[str]:
    """The held-out Keras AP@.5 by object size (the object's side at the model's input), one line."""
    if not by_size:
        return []
    parts = [f"{name} {_number(m['ap50'])} ({m['objects']} objects)" for name, m in by_size.items()]
    bounds = "/".join(str(m["max_px"]) for m in by_size.values() if m["max_px"])
    return [f"Its Keras AP@.5 by object size (side at the input, bins at {bounds} px): {', '.join(parts)}.", ""]


if __name__ == "__main__":  # python -m benchmarks.quality_bench OUT
    run_quality_benchmark(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench"))
