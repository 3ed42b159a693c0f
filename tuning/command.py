"""`python cli.py tune ...`: the arguments, and the glue from them to ``tuning.search.tune``.

    python cli.py tune --run RUN --task classify|detect --data SPEC --tuner hyperband|bayesian|random|grid
                       --trials N --seed S
                       [--steps S | --epochs E] [--trials-per-process K] [--max-size-kb K] [--max-latency-ms L] [--objective accuracy|score]
                       [--latency-weight W] [--space FILE] [--space-set KEY=V1,V2 ...] [--workers N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import ConfigError
from tuning.objective import DEFAULT_LATENCY_WEIGHT, OBJECTIVES, Constraints, ObjectiveConfig
from tuning.search import TASKS, TUNERS, TuneConfig, tune
from tuning.space import load_space
from tuning.tunables import search_named

_DEFAULTS = TuneConfig()


def add_tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="run folder; the search lives in RUN/tuning")
    p.add_argument("--task", choices=TASKS, default=_DEFAULTS.task,
                   help="classify: search the CNN, rank by accuracy; detect: search the SSD, rank by mAP")
    p.add_argument("--data", default="shapes", help="shapes | tfds:NAME | folder:PATH | voc:PATH | coco:FILE.json")
    p.add_argument("--data-dir", type=Path, default=None, help="where tfds data is prepared (default ./data/tfds)")
    p.add_argument("--tuner", choices=TUNERS, default=_DEFAULTS.tuner,
                   help="hyperband (default: rungs of 1/9, 1/3 and all of the top rung), or bayesian, random, grid "
                        "(every trial at the top rung)")
    p.add_argument("--trials", type=int, default=None,
                   help="trial budget, trial 0 (the default model) included; default 14 for hyperband (trial 0 and "
                        "one bracket), 6 for the others; rerun with more to extend")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--steps", type=int, default=None,
                   help="the top rung in optimizer steps (default: `make train`'s budget for the trials' data)")
    p.add_argument("--epochs", type=int, default=None, help="the top rung in passes over the trials' data")
    p.add_argument("--trials-per-process", type=int, default=None,
                   help="trials a fresh process runs before the next takes over (default 4 classify, 1 detect)")
    p.add_argument("--final-epochs", type=int, default=_DEFAULTS.final_epochs,
                   help="epochs for retraining the best configuration on all the data "
                        "(default: as `make train` on this data)")
    p.add_argument("--trial-train-examples", type=int, default=None,
                   help="train images per trial (0: all; default 3000 classify, 1000 detect); the retrain uses all")
    p.add_argument("--image-size", type=int, default=None,
                   help="classifier input side (default: as `make train` chooses it from the data); the detector's "
                        "input size is searched")
    p.add_argument("--model", choices=("cnn", "mobilenetv2"), default=None,
                   help="the classifier searched: cnn (default) or mobilenetv2")
    p.add_argument("--weights", default=None, help="MODEL=mobilenetv2: imagenet (default) | none | PATH")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 classify, 32 detect")
    p.add_argument("--max-size-kb", type=float, default=None, help="int8 .tflite size limit")
    p.add_argument("--max-latency-ms", type=float, default=None, help="median int8 latency limit (1 thread)")
    p.add_argument("--objective", choices=OBJECTIVES, default="accuracy")
    p.add_argument("--latency-weight", type=float, default=DEFAULT_LATENCY_WEIGHT,
                   help="W in score = accuracy x (latency/T)^-W (--objective score)")
    p.add_argument("--latency-runs", type=int, default=_DEFAULTS.latency_runs)
    p.add_argument("--space", type=Path, default=None, help="YAML/JSON file narrowing or widening the space")
    p.add_argument("--space-set", action="append", default=[], metavar="KEY=V1,V2",
                   help="override one search-space entry, e.g. filters=8,16 (repeatable)")
    p.add_argument("--workers", type=int, default=0, help="start a chief and N worker processes on this host")
    p.add_argument("--oracle-ip", default="127.0.0.1", help="address the chief binds with --workers")
    p.add_argument("--force", action="store_true", help="replace a different search or run in --run")
    p.add_argument("--quiet", action="store_true")


def config_from_args(args) -> TuneConfig:
    try:
        objective = ObjectiveConfig(kind=args.objective, latency_weight=args.latency_weight,
                                    constraints=Constraints(args.max_size_kb, args.max_latency_ms))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.workers < 0:
        raise ConfigError(f"WORKERS={args.workers}: must be >= 0")
    model = None if args.model in (None, "cnn") else args.model
    if model is None and args.weights is not None:
        raise ConfigError("WEIGHTS= is MobileNetV2's (MODEL=mobilenetv2)")
    return TuneConfig(data=args.data, task=args.task, tuner=args.tuner, trials=args.trials, epochs=args.epochs,
                      steps=args.steps, trials_per_process=args.trials_per_process,
                      seed=args.seed, image_size=args.image_size, model=model,
                      weights=args.weights or _DEFAULTS.weights,
                      batch_size=args.batch_size,
                      trial_train_examples=args.trial_train_examples, final_epochs=args.final_epochs,
                      latency_runs=args.latency_runs, space=load_space(args.space, args.space_set, search_named(args.task, model).space_type),
                      objective=objective)


def run_tune(args) -> dict:
    return tune(config_from_args(args), args.run, data_dir=args.data_dir, workers=args.workers, force=args.force,
                oracle_ip=args.oracle_ip, verbose=0 if args.quiet else 1)
