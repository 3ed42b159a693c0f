"""The Keras Tuner HyperModels: build a model from hp, train it, then measure it as it would ship.

    CNNHyperModel        the classifier: build_cnn(sample_cnn_config(hp))
    MobileNetHyperModel  the classifier with MODEL=mobilenetv2: build_mobilenet_classifier(sample_mobilenet_config(hp))
    SSDHyperModel  the detector: build_detector(sample_ssd_config(hp)), scored by COCO mAP

``fit`` follows Keras Tuner's contract (the tuner's callbacks arrive in
``**kwargs`` and go on to ``model.fit``) and returns a metrics dict, which the
oracle stores with the trial, in RUN/tuning/project/trial_*/trial.json. A trial trains in units of
``fidelity.unit_steps`` optimizer steps (tuning.fidelity), its learning rate warmed up and decayed
over the steps it trains; a loss that becomes NaN fails the trial (keras_tuner.errors.FailedTrialError),
and the search goes on.

    steps            optimizer steps the configuration has trained (Hyperband: all its rungs so far)

    val_accuracy     classifier: best validation accuracy over the trial's epochs (float model)
    val_map          detector: COCO mAP@[.5:.95] of the validation split after the trial's
                     epochs (float model); val_map50 beside it
    params           parameter count
    int8_bytes       size of the int8 .tflite
    latency_ms       median CPU latency of the int8 .tflite, one thread, ai-edge-litert (for the
                     detector: the whole shipped graph, TFLite_Detection_PostProcess included)
    latency_p90_ms   its 90th percentile
    wall_seconds     training + conversion + measurement
    rss_mb           this process's resident memory at the end of the trial
    objective        what the oracle maximises (tuning.objective.objective_value)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import keras_tuner
import psutil
from keras_tuner.errors import FailedTrialError

from export.convert import convert_keras
from export.detector_convert import PostProcess, convert_detector
from export.runtime import LATENCY_RUNS, measure_latency
from models.cnn import build_cnn
from models.mobilenet import MobileNetConfig, build_mobilenet_classifier
from pipeline.detection_dataset import detection_dataset, detection_eval_dataset
from pipeline.evaluation.coco_eval import evaluate_detector
from pipeline.training.budget import warmup_cosine
from pipeline.training.detector import build_detector, compile_detector, keras_detect_fn
from tuning.fidelity import Fidelity
from tuning.objective import ObjectiveConfig, objective_value
from tuning.space import (MobileNetSearchSpace, SearchSpace, sample_cnn_config, sample_mobilenet_config,
                          trial_input_size)

# A trial's int8 calibration: fewer images than an export's (export.convert.CALIBRATION_IMAGES),
# since a trial's int8 model is only measured (size, latency), never shipped.
TRIAL_CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class Int8Measurement:
    size_bytes: int
    median_ms: float
    p90_ms: float


def calibration_images(dataset, count: int = TRIAL_CALIBRATION_IMAGES):
    """float32 [1, S, S, 3] in 0..255, drawn from (images, labels) batches (the eval pipeline)."""
    return (images.numpy() for images in dataset.unbatch().take(count).map(lambda x, y: x).batch(1))


def fit_steps(model, fidelity: Fidelity, *args, **kwargs):
    """``model.fit`` in units of ``fidelity.unit_steps`` steps; FailedTrialError when the loss is not finite."""
    callbacks = list(kwargs.pop("callbacks", [])) + [keras.callbacks.TerminateOnNaN()]
    history = model.fit(*args, steps_per_epoch=fidelity.unit_steps, callbacks=callbacks,
                        **{"shuffle": False, **kwargs})  # our datasets shuffle themselves
    losses = history.history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise FailedTrialError(f"the training loss became {losses[-1] if losses else 'undefined'}: this "
                               f"configuration diverges (learning rate too high for it?)")
    return history


def trained_steps(hp, fidelity: Fidelity) -> float:
    """Steps the configuration has trained when this run of the trial ends (all its rungs)."""
    return float(fidelity.steps(int(hp.values.get("tuner/epochs", fidelity.units))))


def measure_int8(model, calibration, *, latency_runs: int = LATENCY_RUNS) -> Int8Measurement:
    """Convert ``model`` to int8 TFLite with the export package and time it on this CPU."""
    model_bytes = convert_keras(model, "int8", calibration)
    latency = measure_latency(model_bytes, runs=latency_runs, threads=1)
    return Int8Measurement(len(model_bytes), float(latency["median_ms"]), float(latency["p90_ms"]))


class CNNHyperModel(keras_tuner.HyperModel):
    """build(hp) -> build_cnn(sample_cnn_config(hp)) at the trial's input side; fit() trains, converts
    and measures.

    ``input_size``: `make train`'s side; a trial's is that times its input_scale
    (``space.trial_input_size``). ``data``: side -> (train, validation) datasets at that side, for
    trials whose side differs from ``input_size`` (the search passes those at ``input_size``).
    """

    def __init__(self, space: SearchSpace, *, num_classes: int, input_size: int, objective: ObjectiveConfig,
                 fidelity: Fidelity, latency_runs: int = LATENCY_RUNS, name: str = "cnn", data=None):
        super().__init__(name=name)
        self.space = space
        self.fidelity = fidelity
        self.num_classes = num_classes
        self.input_size = input_size
        self.objective = objective
        self.latency_runs = latency_runs
        self.data = data

    def trial_size(self, hp) -> int:
        """The input side of the trial ``hp``."""
        cfg, _ = sample_cnn_config(hp, self.space)
        return trial_input_size(hp, self.space, self.input_size, cfg)

    def network(self, hp):
        """(the uncompiled model of ``hp``, its learning rate)."""
        cfg, learning_rate = sample_cnn_config(hp, self.space)
        return build_cnn(cfg, self.num_classes, self.trial_size(hp)), learning_rate

    def build(self, hp):
        model, learning_rate = self.network(hp)
        schedule = warmup_cosine(learning_rate, self.fidelity.trial_steps(hp.values))
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        start = time.perf_counter()
        side = self.trial_size(hp)
        if side != self.input_size:
            if self.data is None:
                raise ValueError(f"a trial at {side}px needs the search's data at that size (data=)")
            train, kwargs["validation_data"] = self.data(side)
            args = (train, *args[1:])
        history = fit_steps(model, self.fidelity, *args, **kwargs)
        val_accuracy = float(max(history.history["val_accuracy"]))
        measured = measure_int8(model, calibration_images(kwargs["validation_data"]),
                                latency_runs=self.latency_runs)
        return {
            "val_accuracy": val_accuracy,
            "steps": trained_steps(hp, self.fidelity),
            "params": float(model.count_params()),
            "int8_bytes": float(measured.size_bytes),
            "latency_ms": measured.median_ms,
            "latency_p90_ms": measured.p90_ms,
            "wall_seconds": time.perf_counter() - start,
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
            "objective": objective_value(self.objective, val_accuracy, measured.size_bytes, measured.median_ms),
        }


class MobileNetHyperModel(CNNHyperModel):
    """build(hp) -> build_mobilenet_classifier(sample_mobilenet_config(hp)), trained end to end from the
    search's WEIGHTS=; fit() as the CNN's."""

    def __init__(self, space: MobileNetSearchSpace, base: MobileNetConfig, **kwargs):
        super().__init__(space, name="mobilenetv2", **kwargs)
        self.base = base

    def trial_size(self, hp) -> int:
        return self.input_size  # ImageNet weights come at fixed sizes: the search keeps `make train`'s

    def network(self, hp):
        cfg, learning_rate = sample_mobilenet_config(hp, self.space, self.base)
        return build_mobilenet_classifier(cfg, self.num_classes, self.input_size), learning_rate


class SSDHyperModel(keras_tuner.HyperModel):
    """build(hp) -> build_detector(the trial's DetectTrainConfig); fit() trains, scores mAP, converts, measures.

    Each trial builds its own datasets: its input size and anchors, and so its encoded
    targets, are hyperparameters. ``train_source`` is the (cut) train split of the trials,
    ``val_source`` the full source whose validation split scores them.
    """

    def __init__(self, tune_cfg, *, train_source, val_source, trial_config, fidelity: Fidelity):
        """trial_config: hp -> the trial's DetectTrainConfig (tuning.tunables.DetectorSearch.trial_config)."""
        super().__init__(name="ssd")
        self.tune_cfg = tune_cfg
        self.fidelity = fidelity
        self.train_source = train_source
        self.val_source = val_source
        self.label_names = list(val_source.label_names)
        self.trial_config = trial_config

    def build(self, hp):
        cfg = self.trial_config(hp)
        return compile_detector(build_detector(cfg, len(self.label_names)), cfg, self.fidelity.trial_steps(hp.values))

    def fit(self, hp, model, *args, **kwargs):
        start = time.perf_counter()
        cfg = self.trial_config(hp)
        anchors = cfg.ssd.anchors
        train = detection_dataset(self.train_source, "train", anchors, cfg.pipeline(), training=True,
                                  seed=cfg.seed).repeat()
        fit_steps(model, self.fidelity, train, *args, **kwargs)
        val = detection_eval_dataset(self.val_source, "validation", anchors.input_size, cfg.batch_size)
        scores, _, _ = evaluate_detector(keras_detect_fn(model, cfg), val, self.label_names)
        calibration = [b["image"].numpy() for b in val.unbatch().batch(1).take(TRIAL_CALIBRATION_IMAGES)]
        post = PostProcess(score_threshold=cfg.score_threshold, iou_threshold=cfg.nms_iou,
                           max_detections=cfg.max_detections)
        model_bytes = convert_detector(model, anchors, len(self.label_names), "int8", calibration=calibration,
                                       post=post)
        latency = measure_latency(model_bytes, runs=self.tune_cfg.latency_runs, threads=1)
        objective = self.tune_cfg.objective
        return {
            "val_map": float(scores["map"]),
            "val_map50": float(scores["map50"]),
            "steps": trained_steps(hp, self.fidelity),
            "params": float(model.count_params()),
            "int8_bytes": float(len(model_bytes)),
            "latency_ms": float(latency["median_ms"]),
            "latency_p90_ms": float(latency["p90_ms"]),
            "wall_seconds": time.perf_counter() - start,
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
            "objective": objective_value(objective, float(scores["map"]), len(model_bytes),
                                         float(latency["median_ms"])),
        }

