"""A Keras Tuner oracle over a tiny CNN space, driven by hand: trials created, finished or left running,
without training anything (the resume and trial-process tests)."""
from __future__ import annotations

from tuning.hypermodel import CNNHyperModel
from tuning.objective import ObjectiveConfig
from tuning.search import TuneConfig, TuningFolder, make_tuner
from tuning.space import SearchSpace

SPACE = SearchSpace(conv_blocks=(1, 2), filters=(4, 8), kernel_size=(3,), pool_size=(2,), pool_stride=(2,),
                    dense_layers=(0, 1), hidden_units=(8, 16), dropout=(0.0,), learning_rate=(1e-3, 3e-3))
METRICS = {"val_accuracy": 0.5, "params": 10.0, "int8_bytes": 1000.0, "latency_ms": 0.1, "latency_p90_ms": 0.1,
           "wall_seconds": 1.0, "rss_mb": 1.0}


def oracle(tuner: str, folder: TuningFolder, trials: int = 6):
    cfg = TuneConfig(tuner=tuner, trials=trials, steps=9, image_size=16, space=SPACE)
    hypermodel = CNNHyperModel(SPACE, num_classes=3, input_size=16, objective=ObjectiveConfig(),
                               fidelity=cfg.fidelity)
    t = make_tuner(cfg, hypermodel, folder)
    t.oracle.verbose = 0
    return t.oracle


def finish(oracle, trial, objective: float):
    oracle.update_trial(trial.trial_id, {**METRICS, "objective": objective})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
