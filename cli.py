"""The one command-line entry; the Makefile's targets call it.

    python cli.py train   --data shapes --run runs/classify-shapes --epochs 12 --seed 0
    python cli.py eval    --run RUN [--data SPEC] [--model FILE.tflite]
    python cli.py predict --run RUN [--image PATH] [--model FILE.tflite]
    python cli.py tune    --run RUN --task classify|detect --data shapes --tuner bayesian --trials 6 [--max-latency-ms 2]
    python cli.py export  --run RUN --quant int8|float32|float16|dynamic|int8-qat|all [--prune 0.5]
    python cli.py bench   [--only pipeline,export,tuning,detection,detector-int8,distribute] [--out runs/bench]

A ``UserError`` (bad path, bad file, bad setting) prints one line and exits 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from common.errors import UserError
from export.command import add_export_args, run_export
from tuning.command import add_tune_args


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="classify", help="classify | detect")
    p.add_argument("--data", default="shapes", help="shapes | tfds:NAME | folder:PATH | voc:PATH | coco:FILE.json")
    p.add_argument("--data-dir", type=Path, default=None, help="where tfds data is prepared (default ./data/tfds)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and count them in the report")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model into a run folder (resumes an interrupted run)")
    _add_data_args(p)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--filters", type=_ints, help="filters per conv block, e.g. 32,64,128")
    p.add_argument("--kernel-size", type=int)
    p.add_argument("--pool-size", type=int)
    p.add_argument("--pool-stride", type=int)
    p.add_argument("--hidden-units", type=_ints, help="units per dense layer, e.g. 128 or 256,64")
    p.add_argument("--dropout", type=float)
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (text, digits, chiral shapes)")
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

    p = sub.add_parser("bench", help="benchmarks: input pipeline, export, tuning memory, detection, distribution")
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--only", default="all", help="comma-separated subset of: pipeline, export, tuning, "
                                                 "detection, detector-int8, distribute (default all)")
    p.add_argument("--data-dir", type=Path, default=None)
    return parser


def cmd_train(args) -> None:
    from dataclasses import replace

    from pipeline.training.distribute import resolve_precision, select_strategy
    from pipeline.sources.specs import open_source
    from pipeline.training.classifier import TrainConfig, train_classifier

    if args.task == "detect":
        return _train_detector(args)
    # First TensorFlow work of the process: MultiWorkerMirroredStrategy cannot start after any other.
    strategy = None if args.workers > 1 else select_strategy(args.strategy)
    defaults = TrainConfig()
    cnn_changes = {k: v for k, v in {
        "filters": args.filters, "kernel_size": args.kernel_size, "pool_size": args.pool_size,
        "pool_stride": args.pool_stride, "hidden_units": args.hidden_units, "dropout": args.dropout,
    }.items() if v is not None}
    try:
        cnn = replace(defaults.cnn, **cnn_changes)
    except ValueError as e:
        raise UserError(str(e)) from None
    changes = {k: v for k, v in {
        "epochs": TrainConfig.epochs_for(args.data) if args.epochs is None else args.epochs,
        "batch_size": args.batch_size, "image_size": args.image_size, "learning_rate": args.lr,
    }.items() if v is not None}
    augment = replace(defaults.augment, flip=not args.no_flip)
    cfg = replace(defaults, data=args.data, task=args.task, seed=args.seed, cnn=cnn, augment=augment,
                  precision=resolve_precision(args.precision), **changes)
    source = open_source(args.data, args.task, data_dir=args.data_dir, seed=args.seed, skip_bad=args.skip_bad)
    if args.workers > 1:  # the data is prepared (above) once, before the workers start
        from pipeline.training.multiworker import launch_local_workers

        code = launch_local_workers(args.argv, args.workers, args.run)
        if code:
            raise SystemExit(code)
        return
    train_classifier(cfg, source, args.run, force=args.force, strategy=strategy)


def _train_detector(args) -> None:
    from dataclasses import replace

    from pipeline.sources.specs import open_source
    from pipeline.training.detector import DetectTrainConfig, train_detector

    if args.workers > 1 or args.strategy not in ("auto", "default") or args.precision != "float32":
        raise UserError("TASK=detect trains on one worker in float32 for now (no STRATEGY=, PRECISION=, WORKERS=)")
    cfg = DetectTrainConfig(data=args.data, seed=args.seed)
    changes = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                                 "learning_rate": args.lr}.items() if v is not None}
    try:
        if args.image_size:
            changes["ssd"] = cfg.ssd.replace(anchors=cfg.ssd.anchors.replace(input_size=args.image_size))
        if args.no_flip:
            changes["augment"] = replace(cfg.augment, flip=False)
        cfg = replace(cfg, **changes)
    except ValueError as e:
        raise UserError(f"IMAGE_SIZE={args.image_size}: {e}") from None
    source = open_source(args.data, "detect", data_dir=args.data_dir, seed=args.seed, skip_bad=args.skip_bad)
    train_detector(cfg, source, args.run, force=args.force)


def _run_task(run_dir: Path | None, model: Path | None) -> str:
    """"classify" or "detect": from the run's config.json, else from the model file itself."""
    from common.run_folder import RunFolder

    if run_dir is not None and RunFolder(run_dir).config.exists():
        return RunFolder(run_dir).read_config().get("task", "classify")
    if model is not None and model.suffix == ".keras" and RunFolder(model.parent).config.exists():
        return RunFolder(model.parent).read_config().get("task", "classify")
    if model is not None and model.suffix == ".tflite" and model.exists():
        from export.runtime import TFLiteModel

        # a detector carries TFLite_Detection_PostProcess: boxes, classes, scores, count
        return "detect" if len(TFLiteModel(model).interpreter.get_output_details()) == 4 else "classify"
    return "classify"


def _eval_detector(args) -> None:
    from common.run_folder import RunFolder, write_json
    from pipeline.evaluation.detect_predict import evaluate_detection_run

    result = evaluate_detection_run(args.run, model_path=args.model, data=args.data, data_dir=args.data_dir,
                                    split=args.split)
    what = Path(result["model"])
    out = RunFolder(args.run).root / "eval" / f"{what.stem}-{args.split}.json"
    write_json(out, result)
    print(f"{what} on {result['data']} [{args.split}]: mAP@[.5:.95] {result['map']:.3f}, mAP@.5 {result['map50']:.3f} "
          f"over {result['images']} images; written to {out}")


def cmd_eval(args) -> None:
    from common.run_folder import RunFolder, write_json
    from pipeline.dataset import classification_dataset
    from pipeline.evaluation.classification import classification_metrics, predict_dataset
    from pipeline.evaluation.predict import load_classifier
    from pipeline.sources.specs import open_source
    from pipeline.training.classifier import TrainConfig

    run = RunFolder(args.run)
    run.require_model()
    if _run_task(args.run, args.model) == "detect":
        return _eval_detector(args)
    cfg = TrainConfig.from_dict(run.read_config())
    data = args.data or cfg.data
    source = open_source(data, cfg.task, data_dir=args.data_dir, seed=cfg.seed)
    labels = run.read_labels()
    if list(source.label_names) != labels:
        raise UserError(f"DATA={data}: its classes {list(source.label_names)} differ from the run's {labels}")
    ds = classification_dataset(source, args.split, cfg.pipeline(), training=False)
    if args.model is not None and args.model.suffix == ".tflite":
        classifier = load_classifier(None, args.model)
        predict = classifier.predict_batch
        what = str(args.model)
    else:
        import keras

        model = keras.models.load_model(run.model)
        predict = lambda x: model.predict_on_batch(x)  # noqa: E731
        what = str(run.model)
    probs, y = predict_dataset(predict, ds)
    metrics = classification_metrics(probs, y, labels)
    out = run.root / "eval" / f"{Path(what).stem}-{args.split}.json"
    write_json(out, {"model": what, "data": data, "split": args.split, **metrics})
    print(f"{what} on {data} [{args.split}]: accuracy {metrics['accuracy']:.2%} over {metrics['examples']} images "
          f"(log loss {metrics['loss']:.4f}); written to {out}")


def cmd_predict(args) -> None:
    from pipeline.evaluation.predict import default_image, format_table, load_classifier, predict_file

    from common.run_folder import RunFolder

    if args.model is None:
        if args.run is None:
            raise UserError("predict needs RUN= (a trained run folder) or MODEL= (a .keras or .tflite file)")
        RunFolder(args.run).require_model()
    image = args.image
    if image is None:
        if args.run is None:
            raise UserError("predict needs IMAGE=path/to/image")
        image = default_image(args.run)
    if _run_task(args.run, args.model) == "detect":
        from pipeline.evaluation.detect_predict import format_detection_table, load_detector, predict_detections

        detector = load_detector(args.run, args.model)
        out_png = (args.run if args.run is not None else Path("runs")) / "predictions" / f"{Path(image).stem}.png"
        rows = predict_detections(detector, image, out_png)
        print(f"{image}")
        print(format_detection_table(rows))
        print(f"Boxes drawn in {out_png}")
        return
    classifier = load_classifier(args.run, args.model)
    rows = predict_file(classifier, image, args.top_k)
    print(f"{image}")
    print(format_table(rows))


def cmd_export(args) -> None:
    if _run_task(args.run, None) == "detect":
        from export.detector_convert import DETECTOR_MODES, export_detector

        modes = DETECTOR_MODES if args.quant == "all" else tuple(m.strip() for m in args.quant.split(","))
        unknown = [m for m in modes if m not in DETECTOR_MODES]
        if unknown or args.prune:
            raise UserError(f"QUANT={args.quant}{' PRUNE' if args.prune else ''}: a detector exports as "
                            f"{' or '.join(DETECTOR_MODES)} (or all)")
        export_detector(args.run, modes, data_dir=args.data_dir)
        return
    run_export(args)


def cmd_tune(args) -> None:
    from tuning.command import run_tune

    run_tune(args)


def cmd_bench(args) -> None:
    from benchmarks.suite import parse_names, run_benchmarks

    run_benchmarks(parse_names(args.only), args.out, data_dir=args.data_dir)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "tune": cmd_tune, "export": cmd_export, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv[1:]  # the subcommand's own arguments, for commands that start copies of themselves
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
