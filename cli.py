"""The one command-line entry; the Makefile's targets call it.

    python cli.py train   --data shapes --run runs/classify-shapes --epochs 12 --seed 0
    python cli.py eval    --run RUN [--data SPEC] [--model FILE.tflite]
    python cli.py predict --run RUN [--image PATH] [--model FILE.tflite]
    python cli.py tune    --run RUN --task classify|detect --data shapes --tuner bayesian --trials 6 [--max-latency-ms 2]
    python cli.py export  --run RUN --quant int8|float32|float16|dynamic|int8-qat|all [--prune 0.5]
    python cli.py bench   [--only pipeline,export,tuning,detection,detector-int8,distribute] [--out runs/bench]
    python cli.py app     --run RUN                      RUN/app/: the exported model in a web page (MediaPipe Tasks)
    python cli.py serve   --run RUN [--host 127.0.0.1] [--port 8000]

A ``UserError`` (bad path, bad file, bad setting) prints one line and exits 2;
anything else is a bug and keeps its traceback. A command that writes files ends with one
line naming them: ``Wrote runs/classify-shapes: model.keras, metrics.json, report.md (...)``.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from common.console import quiet_tensorflow
from common.errors import UserError
from common.run_folder import RunFolder, write_json


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="classify", choices=("classify", "detect"),
                   help="classify | detect (tasks.TASKS)")
    p.add_argument("--data", default="shapes", help="shapes | tfds:NAME | folder:PATH | voc:PATH | coco:FILE.json")
    p.add_argument("--data-dir", type=Path, default=None, help="where tfds data is prepared (default ./data/tfds)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and count them in the report")


def _parser() -> argparse.ArgumentParser:
    # Here rather than at the top: they import TensorFlow, which main() first silences.
    from export.command import add_export_args
    from tuning.command import add_tune_args

    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model into a run folder (resumes an interrupted run)")
    _add_data_args(p)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--epochs", type=int, help="default: the step budget chosen from the data (README)")
    p.add_argument("--steps", type=int, help="optimizer steps (rounded up to whole epochs)")
    p.add_argument("--time-budget", type=float, help="minutes the step budget may take (default 20; detector 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int, help="default: chosen from the image (detector: object) sizes")
    p.add_argument("--lr", type=float)
    p.add_argument("--model", choices=("cnn", "mobilenetv2"), help="the classifier (default cnn)")
    p.add_argument("--alpha", type=float, help="MobileNetV2 width multiplier (default 0.35)")
    p.add_argument("--weights", help="MobileNetV2 start: imagenet (default) | none | PATH to a weights file")
    p.add_argument("--init", type=Path, help="an earlier run folder: start from its layers that fit")
    p.add_argument("--class-weights", choices=("auto", "none"), help="auto (default): weigh imbalanced classes")
    p.add_argument("--filters", type=_ints, help="filters per conv block, e.g. 32,64,128")
    p.add_argument("--kernel-size", type=int)
    p.add_argument("--pool-size", type=int)
    p.add_argument("--pool-stride", type=int)
    p.add_argument("--hidden-units", type=_ints, help="units per dense layer, e.g. 128 or 256,64")
    p.add_argument("--dropout", type=float)
    p.add_argument("--flip", type=int, choices=(0, 1), help="horizontal flips: default 0 for the classifier "
                                                            "(digits, text, arrows), 1 for the detector")
    p.add_argument("--force", action="store_true", help="replace a finished or different run in --run")
    p.add_argument("--strategy", default="auto", help="auto | default | mirrored | multiworker (needs TF_CONFIG)")
    p.add_argument("--precision", default="float32", help="float32 | mixed_float16 | mixed_bfloat16 | auto")
    p.add_argument("--workers", type=int, default=1, help="train with N local workers on 127.0.0.1 ports")

    p = sub.add_parser("eval", help="evaluate a run's model (or an exported .tflite) on a test split")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", default=None, help="default: the data the run was trained on")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--model", type=Path, default=None, help="a .tflite to evaluate instead of model.keras")
    p.add_argument("--split", default="test")

    p = sub.add_parser("predict", help="print a Label / Probability table for one image")
    p.add_argument("--run", type=Path, default=None)
    p.add_argument("--image", type=Path, default=None, help="default: a sample image from the run folder")
    p.add_argument("--model", type=Path, default=None, help="a .tflite (runs as on a phone) or .keras file")
    p.add_argument("--top-k", type=int, default=5)

    p = sub.add_parser("tune", help="search the CNN's or the SSD's hyperparameters (Keras Tuner), "
                                     "retrain the best into RUN")
    add_tune_args(p)

    p = sub.add_parser("export", help="convert a run's model to verified .tflite files in RUN/export/")
    add_export_args(p)

    p = sub.add_parser("app", help="build RUN/app/: a static web page running the exported model in MediaPipe "
                                   "Tasks for the web (camera, dropped images, ?selftest=1)")
    p.add_argument("--run", type=Path, required=True, help="an exported run folder (make export)")

    p = sub.add_parser("serve", help="serve RUN/app/ on a plain static server")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1",
                   help="127.0.0.1 (default; the camera works there) or 0.0.0.0 to open it to your network")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("bench", help="benchmarks: input pipeline, export, tuning memory, detection, distribution")
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--only", default="all", help="comma-separated subset of: pipeline, export, tuning, "
                                                 "detection, detector-int8, distribute, quality (default all)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check every benchmark runs (numbers mean nothing)")
    return parser


def wrote(where: Path | str, names: Sequence[str] = (), note: str = "") -> str:
    """The summary line a command ends with: ``Wrote WHERE[: a, b, c][ (note)]``."""
    line = f"Wrote {where}"
    if names:
        line += ": " + ", ".join(names)
    return f"{line} ({note})" if note else line


def train_summary(run_dir: Path | str, metrics: dict) -> str:
    """The line after a training run, from its metrics.json content ({"test": {...}, ...})."""
    test = metrics["test"]
    split = metrics.get("test_split", "test")
    if "accuracy" in test:
        note = f"{split} accuracy {test['accuracy']:.2%}"
    else:
        note = f"{split} mAP@.5 {test['map50']:.3f}"
    return wrote(run_dir, ("model.keras", "metrics.json", "report.md"), note)


def export_summary(card: dict) -> str:
    """The line after an export, from its model card ({"run", "models": {mode: {"file", "passed"}}})."""
    models = [m["file"] for m in card["models"].values() if m["passed"]]
    return wrote(RunFolder(Path(card["run"])).export, [*models, "labels.txt", "model_card.json", "export_report.md"])


def tune_summary(report: Path | str, run_dir: Path | str) -> str:
    """The line after a search: its report, and the run folder the best configuration was retrained into."""
    return f"{wrote(report)} and retrained {run_dir}"


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _written_since(folder: Path, start: float) -> list[str]:
    """Names of the files directly in ``folder`` modified at or after ``start`` (time.time())."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_mtime >= start)


def _locked(run_dir: Path, command: str):
    """An exclusive lock on RUN for the commands that write it (common.run_lock)."""
    from common.run_lock import run_lock

    return run_lock(run_dir, command)


def cmd_train(args) -> None:
    from tasks import task_named

    task = task_named(args.task)
    cfg = task.config_from_args(args)
    if args.workers > 1 or args.strategy == "multiworker":
        # The launcher starts the workers; worker 0 (the chief) is the one process writing RUN,
        # so none of them takes the lock (each is its own process and would lock the others out).
        task.train(cfg, args)
        return
    metrics_file = RunFolder(args.run).metrics
    before = _mtime(metrics_file)
    with _locked(args.run, "train"):
        metrics = task.train(cfg, args)
    # A finished run is not retrained: its "already trained" line is the last word.
    if metrics and _mtime(metrics_file) != before:
        print(train_summary(args.run, metrics))


def cmd_eval(args) -> None:
    from tasks import task_of

    task = task_of(args.run, args.model if args.model is not None and args.model.suffix == ".tflite" else None)
    result, line = task.evaluate(args.run, model_path=args.model, data=args.data, data_dir=args.data_dir,
                                 split=args.split)
    run = RunFolder(args.run)
    own = result["data"] == run.read_config().get("data")
    out = run.evaluation(Path(result["model"]), args.split, None if own else result["data"])
    write_json(out, result)
    print(line)
    print(wrote(out))


def cmd_predict(args) -> None:
    from pipeline.evaluation.predict import default_image
    from tasks import task_of

    if args.model is None:
        if args.run is None:
            raise UserError("predict needs RUN= (a trained run folder) or MODEL= (a .keras or .tflite file)")
        RunFolder(args.run).require_model()
    image = args.image
    if image is None:
        if args.run is None:
            raise UserError("predict needs IMAGE=path/to/image")
        image = default_image(args.run)
    task = task_of(args.run, args.model)
    print(task.predict(args.run, model_path=args.model, image=image, top_k=args.top_k))


def cmd_export(args) -> None:
    from export.command import export_config
    from tasks import task_of

    cfg = export_config(args)
    task = task_of(args.run)
    with _locked(args.run, "export"):
        card = task.export(args.run, cfg, data_dir=args.data_dir)
    print(export_summary(card))


def cmd_tune(args) -> None:
    from tuning.command import run_tune
    from tuning.distributed import current_role
    from tuning.search import TuningFolder

    if current_role() == "worker":  # a worker of a search started by hand: the chief owns RUN
        run_tune(args)
        return
    with _locked(args.run, "tune"):
        best = run_tune(args)
    if best:
        print(tune_summary(TuningFolder(RunFolder(args.run).tuning).report, args.run))


def cmd_bench(args) -> None:
    from benchmarks.suite import parse_names, run_benchmarks

    start = time.time() - 1.0  # file times lag time.time() by up to a clock tick
    run_benchmarks(parse_names(args.only), args.out, data_dir=args.data_dir, smoke=args.smoke)
    print(wrote(args.out, _written_since(args.out, start)))


def cmd_app(args) -> None:
    from export.web_app import app_summary, build_app

    with _locked(args.run, "app"):
        app_dir = build_app(args.run)
    print(app_summary(app_dir))
    print(f"Serve it: make serve RUN={args.run}   (then open http://127.0.0.1:8000/)")


def cmd_serve(args) -> None:
    from export.serve import serve
    from export.web_app import APP_DIR

    serve(RunFolder(args.run).root / APP_DIR, args.host, args.port)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "tune": cmd_tune, "export": cmd_export,
            "bench": cmd_bench, "app": cmd_app, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_tensorflow()
    args = _parser().parse_args(argv)
    args.argv = argv[1:]  # the subcommand's own arguments, for commands that start copies of themselves
    # SIGTERM (a scheduler, `timeout`) takes the same path as Ctrl-C: state kept for resume.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
