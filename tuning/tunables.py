"""What the search needs from each task, in one object per task: its space, its quality, its trial
datasets and hypermodel, how a trial's hyperparameters become the `make train` config, and how
the best is retrained.

``tasks.ClassifierTask.search`` is ``CLASSIFIER_SEARCH`` (``MOBILENET_SEARCH`` with MODEL=mobilenetv2)
and ``tasks.DetectorTask.search`` is ``DETECTOR_SEARCH``; the rest of ``tuning`` calls these methods
and never compares task names. ``search_named(task, model)`` maps what settings.json records back to
the object (a resumed search, a worker process).
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod

import keras_tuner

from common.errors import ConfigError, UserError
from models.cnn import CNNConfig
from models.mobilenet import MobileNetConfig, valid_input_size
from models.presets import default_ssd
from pipeline.dataset import classification_dataset
from pipeline.detection_dataset import detection_eval_dataset
from pipeline.evaluation.coco_eval import evaluate_detector
from pipeline.sources.schema import Source
from pipeline.training.budget import CLASSIFIER_RULE, DETECTOR_RULE, BudgetRule
from pipeline.training.classifier import TrainConfig, train_classifier
from pipeline.training.detector import DetectTrainConfig, build_detector, keras_detect_fn, train_detector
from pipeline.training.recipe import classifier_image_size, profile_source
from tuning.hypermodel import CNNHyperModel, MobileNetHyperModel, SSDHyperModel
from tuning.objective import ACCURACY, MAP, Quality
from tuning.space import (MobileNetSearchSpace, SearchSpace, SSDSearchSpace, sample_cnn_config, sample_mobilenet_config,
                          sample_ssd_config, trial_input_size)

# ``cfg`` below is a tuning.search.TuneConfig; annotations only (search imports this module, and
# ``from __future__ import annotations`` keeps them unevaluated).


def _hyperparameters(values: dict) -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return hp


class TaskSearch(ABC):
    """One task's side of `make tune`."""

    name: str                  # the task, as recorded in settings.json
    model: str                 # the model searched: "cnn", "mobilenetv2", "ssd"
    key: str                   # name[-model]: what SEARCHES is keyed by
    quality: Quality           # what ranks trials
    space_type: type           # SearchSpace or SSDSearchSpace
    rule: BudgetRule           # `make train`'s step budget for the task: the top rung (tuning.fidelity)
    batch_size: int            # as `make train` uses
    trial_train_examples: int  # train images per trial by default (the users' few thousand: all of them)
    trials_per_process: int    # trials a fresh process runs before the next one takes over
    per_trial: str             # the report's words on what a trial sees beyond epochs and images
    measurement: str           # the report's words on what is measured

    @abstractmethod
    def train_config(self, cfg: TuneConfig, hyperparameters: dict, *, epochs: int | None = None):
        """The `make train` config of a trial's hyperparameters. epochs None: the retrain on the
        full data (final_epochs, or `make train`'s step budget for this data)."""

    @abstractmethod
    def default_values(self, cfg: TuneConfig) -> dict | None:
        """The hyperparameter values of the model `make train` builds (trial 0); None when the
        searched space does not hold it."""

    def seed_values(self, cfg: TuneConfig) -> list[dict]:
        """The trials a new search starts with, each trained at the top rung: the default model
        (trial 0), when the space holds it. None for a grid: it walks its own order from the first
        value of every entry (the default, for the detector's and MobileNetV2's spaces), and a trial
        slipped in before it would break its walk."""
        default = self.default_values(cfg) if cfg.tuner != "grid" else None
        return [] if default is None else [default]

    @abstractmethod
    def resolve(self, cfg: TuneConfig, source: Source) -> dict:
        """What this task chooses from the data before the search (TuneConfig fields to replace)."""

    @abstractmethod
    def trial_model(self, cfg: TuneConfig, hyperparameters: dict, num_classes: int):
        """A trial's model as its hypermodel builds it (uncompiled), ready for its checkpoint's weights."""

    @abstractmethod
    def test_quality(self, cfg: TuneConfig, model, hyperparameters: dict, source: Source) -> float:
        """A trial's model scored on the test split, as the retrained model is (metrics.json's test_key)."""

    @abstractmethod
    def check(self, cfg: TuneConfig, source: Source) -> None:
        """UserError for a search this data or these settings cannot run."""

    @abstractmethod
    def search(self, cfg: TuneConfig, tuner_factory, trials_source: Source, source: Source, verbose: int) -> None:
        """Run this process's share of the trials: ``tuner_factory(hypermodel)`` makes the tuner."""

    @abstractmethod
    def retrain(self, train_cfg, source: Source, run_dir, verbose: int) -> dict:
        """Train the best configuration into RUN as `make train` would; returns metrics.json's content."""

    @abstractmethod
    def model_summary(self, train_cfg) -> dict:
        """The model part of best_hyperparameters.json."""

    @abstractmethod
    def retrained_summary(self, final: dict) -> dict:
        """The retrained model's figures for best_hyperparameters.json."""


class ClassifierSearch(TaskSearch):
    name = "classify"
    key = "classify"
    model = "cnn"
    quality = ACCURACY
    space_type = SearchSpace
    rule = CLASSIFIER_RULE
    batch_size = 64
    trial_train_examples = 10000
    trials_per_process = 4
    per_trial = ""
    measurement = ""

    def train_config(self, cfg: TuneConfig, hyperparameters: dict, *, epochs: int | None = None) -> TrainConfig:
        hp = _hyperparameters(hyperparameters)
        cnn, learning_rate = sample_cnn_config(hp, cfg.space)
        return TrainConfig(data=cfg.data, image_size=trial_input_size(hp, cfg.space, cfg.image_size, cnn),
                           batch_size=cfg.batch_size,
                           epochs=epochs or cfg.final_epochs,
                           learning_rate=learning_rate, seed=cfg.seed, cnn=cnn)

    def default_values(self, cfg: TuneConfig) -> dict | None:
        return cfg.space.values_of(CNNConfig(), TrainConfig().learning_rate)

    def seed_values(self, cfg: TuneConfig) -> list[dict]:
        """Trial 0, then, under MAX_LATENCY_MS= or MAX_SIZE_KB=, the default model made smaller along
        its two cheapest levers: each smaller input_scale of the space (latency: the first
        convolution runs at full resolution) and each narrower first dense layer (size: it holds most
        of the weights). What a person tries first to make a model fit."""
        seeds = super().seed_values(cfg)
        limits = cfg.objective.constraints
        if not seeds or "input_scale" not in seeds[0] or not (limits.max_latency_ms or limits.max_size_kb):
            return seeds
        default = seeds[0]
        seeds += [{**default, "input_scale": s} for s in cfg.space.input_scale if s < default["input_scale"]]
        if default.get("dense_layers", 0) >= 1:
            seeds += [{**default, "units_1": u} for u in sorted(cfg.space.hidden_units, reverse=True)
                      if u < default["units_1"]]
        return seeds

    def resolve(self, cfg: TuneConfig, source: Source) -> dict:
        if cfg.image_size is not None:
            return {}
        size, _ = classifier_image_size(profile_source(source), model=self.model)  # as `make train` chooses
        return {"image_size": size}

    def trial_model(self, cfg: TuneConfig, hyperparameters: dict, num_classes: int):
        model, _ = self.hypermodel(cfg, num_classes).network(_hyperparameters(hyperparameters))
        return model

    def test_quality(self, cfg: TuneConfig, model, hyperparameters: dict, source: Source) -> float:
        side = self.hypermodel(cfg, source.num_classes).trial_size(_hyperparameters(hyperparameters))
        test = classification_dataset(source, "test", self._pipeline(cfg, side), training=False)
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])

    def check(self, cfg: TuneConfig, source: Source) -> None:
        cfg.space.check_input_size(cfg.image_size)

    def _pipeline(self, cfg: TuneConfig, side: int | None = None):
        return TrainConfig(data=cfg.data, image_size=side or cfg.image_size, batch_size=cfg.batch_size).pipeline()

    def search(self, cfg: TuneConfig, tuner_factory, trials_source: Source, source: Source, verbose: int) -> None:
        @functools.lru_cache(maxsize=None)
        def data(side: int):
            """(train, validation) at ``side`` px: made once per side the trials ask for."""
            pipe = self._pipeline(cfg, side)
            return (classification_dataset(trials_source, "train", pipe, training=True, seed=cfg.seed).repeat(),
                    classification_dataset(source, "validation", pipe, training=False))

        train, val = data(cfg.image_size)
        tuner_factory(self.hypermodel(cfg, source.num_classes, data)).search(
            train, validation_data=val, epochs=cfg.fidelity.units, verbose=verbose)

    def hypermodel(self, cfg: TuneConfig, num_classes: int, data=None):
        return CNNHyperModel(cfg.space, num_classes=num_classes, input_size=cfg.image_size,
                             objective=cfg.objective, fidelity=cfg.fidelity, latency_runs=cfg.latency_runs,
                             data=data)

    def retrain(self, train_cfg: TrainConfig, source: Source, run_dir, verbose: int) -> dict:
        return train_classifier(train_cfg, source, run_dir, verbose=verbose)

    def model_summary(self, train_cfg: TrainConfig) -> dict:
        return {"cnn": train_cfg.cnn.to_dict()}

    def retrained_summary(self, final: dict) -> dict:
        return {"test_accuracy": final["test"]["accuracy"], "validation_accuracy": final["validation_accuracy"]}


class MobileNetSearch(ClassifierSearch):
    """The classifier with MODEL=mobilenetv2: width, dropout, learning rate and fine-tuned blocks;
    trials train end to end from the search's WEIGHTS=, the best is retrained in two phases."""

    key = "classify-mobilenetv2"
    model = "mobilenetv2"
    space_type = MobileNetSearchSpace
    batch_size = 32
    trial_train_examples = 5000
    trials_per_process = 2
    per_trial = "; MobileNetV2 trained end to end from WEIGHTS="

    def train_config(self, cfg: TuneConfig, hyperparameters: dict, *, epochs: int | None = None) -> TrainConfig:
        mobilenet, learning_rate = sample_mobilenet_config(_hyperparameters(hyperparameters), cfg.space,
                                                           MobileNetConfig(weights=cfg.weights))
        return TrainConfig(data=cfg.data, model="mobilenetv2", image_size=cfg.image_size, batch_size=cfg.batch_size,
                           epochs=epochs or cfg.final_epochs, learning_rate=learning_rate, seed=cfg.seed,
                           mobilenet=mobilenet)

    def check(self, cfg: TuneConfig, source: Source) -> None:
        if not valid_input_size(cfg.image_size, cfg.weights):
            raise ConfigError(f"IMAGE_SIZE={cfg.image_size}: MobileNetV2 with WEIGHTS={cfg.weights} needs "
                              + ("one of 96, 128, 160, 192, 224" if cfg.weights == "imagenet"
                                 else "a multiple of 32"))

    def default_values(self, cfg: TuneConfig) -> dict | None:
        values = cfg.space.default_values()
        default = MobileNetConfig()
        same = (values["alpha"], values["dropout"], values["fine_tune_blocks"], values["learning_rate"]) == \
            (default.alpha, default.dropout, default.fine_tune_blocks, TrainConfig().learning_rate)
        return values if same else None

    def hypermodel(self, cfg: TuneConfig, num_classes: int, data=None):
        return MobileNetHyperModel(cfg.space, MobileNetConfig(weights=cfg.weights), num_classes=num_classes,
                                   input_size=cfg.image_size, objective=cfg.objective, fidelity=cfg.fidelity,
                                   latency_runs=cfg.latency_runs, data=data)

    def model_summary(self, train_cfg: TrainConfig) -> dict:
        return {"mobilenet": train_cfg.mobilenet.to_dict()}


class DetectorSearch(TaskSearch):
    name = "detect"
    key = "detect"
    model = "ssd"
    quality = MAP
    space_type = SSDSearchSpace
    rule = DETECTOR_RULE
    batch_size = DetectTrainConfig.batch_size  # make train's, so trial 0 is its model
    trial_train_examples = 3000
    trials_per_process = 1
    per_trial = "; scored on the whole validation split with pycocotools"
    measurement = " (TFLite_Detection_PostProcess included)"

    def train_config(self, cfg: TuneConfig, hyperparameters: dict, *,
                     epochs: int | None = None) -> DetectTrainConfig:
        ssd, learning_rate = sample_ssd_config(_hyperparameters(hyperparameters), cfg.space, default_ssd())
        # The search chose the input size and anchors: the recipe's choices are not applied on top.
        return DetectTrainConfig(data=cfg.data, ssd=ssd, learning_rate=learning_rate, batch_size=cfg.batch_size,
                                 seed=cfg.seed, epochs=epochs or cfg.final_epochs, auto_input=False,
                                 auto_anchors=False)

    def default_values(self, cfg: TuneConfig) -> dict | None:
        # The space's first values are `make train TASK=detect`'s detector before the recipe fits its
        # input size and anchors to the data (tests/tuning/test_ssd_space.py keeps them so).
        return cfg.space.default_values()

    def resolve(self, cfg: TuneConfig, source: Source) -> dict:
        return {}  # the input size and anchors are searched

    def trial_model(self, cfg: TuneConfig, hyperparameters: dict, num_classes: int):
        return build_detector(self.train_config(cfg, hyperparameters, epochs=1), num_classes)

    def test_quality(self, cfg: TuneConfig, model, hyperparameters: dict, source: Source) -> float:
        train_cfg = self.train_config(cfg, hyperparameters)
        test = detection_eval_dataset(source, "test", train_cfg.ssd.anchors.input_size, train_cfg.batch_size)
        scores, _, _ = evaluate_detector(keras_detect_fn(model, train_cfg), test, list(source.label_names))
        return float(scores["map"])

    def check(self, cfg: TuneConfig, source: Source) -> None:
        if not source.split_sizes.get("validation"):
            raise UserError(f"DATA={cfg.data}: TASK=detect tuning ranks trials by mAP on the validation split, "
                            f"and this source has none")

    def search(self, cfg: TuneConfig, tuner_factory, trials_source: Source, source: Source, verbose: int) -> None:
        # The anchors (and so the targets) and the input size change with the trial: the
        # hypermodel makes each trial's datasets itself.
        hypermodel = SSDHyperModel(cfg, train_source=trials_source, val_source=source,
                                   trial_config=lambda hp: self.trial_config(cfg, hp), fidelity=cfg.fidelity)
        tuner_factory(hypermodel).search(epochs=cfg.fidelity.units, verbose=verbose)

    def trial_config(self, cfg: TuneConfig, hp) -> DetectTrainConfig:
        """A trial's DetectTrainConfig: its SSD and learning rate (its steps are the fidelity's)."""
        sample_ssd_config(hp, cfg.space, default_ssd())  # Keras Tuner learns the space from these calls
        return self.train_config(cfg, dict(hp.values), epochs=1)

    def retrain(self, train_cfg: DetectTrainConfig, source: Source, run_dir, verbose: int) -> dict:
        return train_detector(train_cfg, source, run_dir, verbose=verbose)

    def model_summary(self, train_cfg: DetectTrainConfig) -> dict:
        return {"ssd": train_cfg.ssd.to_dict()}

    def retrained_summary(self, final: dict) -> dict:
        return {"test_map": final["test"]["map"], "test_map50": final["test"]["map50"]}


CLASSIFIER_SEARCH = ClassifierSearch()
MOBILENET_SEARCH = MobileNetSearch()
DETECTOR_SEARCH = DetectorSearch()
SEARCHES: dict[str, TaskSearch] = {s.key: s for s in (CLASSIFIER_SEARCH, MOBILENET_SEARCH, DETECTOR_SEARCH)}
TASK_NAMES = tuple(dict.fromkeys(s.name for s in SEARCHES.values()))


def search_named(name: str, model: str | None = None) -> TaskSearch:
    """The search of TASK=``name`` for MODEL=``model`` (None: the task's own model, the CNN or the SSD)."""
    key = name if model is None else next((s.key for s in SEARCHES.values() if (s.name, s.model) == (name, model)),
                                          None)
    if key in SEARCHES:
        return SEARCHES[key]
    known = ", ".join(f"{s.name} ({s.model})" for s in SEARCHES.values())
    raise ConfigError(f"TASK={name}" + (f" MODEL={model}" if model else "") + f": expected one of {known}")


def describe_seeds(cfg: TuneConfig) -> str:
    """The trials a search starts with, in words (the first line of `make tune`, the report)."""
    seeds = cfg.search.seed_values(cfg)
    if not seeds:
        return "the default model is not a trial of this search (grid, or a space without it)"
    text = "trial 0 is the default model"
    if len(seeds) > 1:
        changes = ", ".join(" ".join(f"{k}={v:g}" for k, v in s.items() if v != seeds[0][k]) for s in seeds[1:])
        text += f"; trials 1-{len(seeds) - 1}, also at the top rung, are the default made smaller (a limit is set): {changes}"
    return text
