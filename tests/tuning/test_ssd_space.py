"""The detector's search space: its entries, its defaults, how it is narrowed, and what a sample builds."""
from __future__ import annotations

import json

import keras_tuner as kt
import pytest

from common.errors import ConfigError
from models.presets import default_ssd
from pipeline.training.detector import DetectTrainConfig
from tuning.objective import MAP, ObjectiveConfig, TrialRecord, explain_best
from tuning.search import TuneConfig
from tuning.space import SSDSearchSpace, SearchSpace, load_space, sample_ssd_config


def _sample(space: SSDSearchSpace, **values):
    hp = kt.HyperParameters()
    hp.values.update(values)
    return sample_ssd_config(hp, space, default_ssd()), hp


def test_first_value_of_every_entry_is_the_default_detector():
    space = SSDSearchSpace()
    first = {name: values[0] for name, values in space.hyperparameters().items()}
    (ssd, lr), hp = _sample(space, **first)
    assert ssd == default_ssd()
    assert lr == DetectTrainConfig().learning_rate
    assert {p.name for p in hp.space} == set(space.hyperparameters())


def test_a_sample_sets_the_model_and_its_anchors():
    (ssd, lr), _ = _sample(SSDSearchSpace(), alpha=0.75, input_size=160, head="ssdlite", head_depth=2,
                           head_filters=32, min_scale=0.1, max_scale=0.8, aspect_ratios="1:2:0.5:3:0.333",
                           learning_rate=1e-3)
    assert (ssd.alpha, ssd.head_depth, ssd.head_filters, lr) == (0.75, 2, 32, 1e-3)
    a = ssd.anchors
    assert (a.input_size, a.min_scale, a.max_scale, a.aspect_ratios) == (160, 0.1, 0.8, (1.0, 2.0, 0.5, 3.0, 0.333))
    assert a.strides == default_ssd().anchors.strides  # not searched: kept from the default detector
    assert a.per_location == 6  # five ratios plus the extra square anchor: the heads follow the space
    assert a.feature_map_sizes == (20, 10, 5)


def test_overrides_and_files_narrow_the_space(tmp_path):
    space = load_space(None, ["aspect_ratios=1,1:3", "head=conv,ssdlite", "input_size=96"], space_cls=SSDSearchSpace)
    assert space.aspect_ratios == ("1", "1:3") and space.head == ("conv", "ssdlite") and space.input_size == (96,)
    path = tmp_path / "space.yaml"
    path.write_text("alpha: 0.5\naspect_ratios: [[1, 2, 0.5], '1']\nlearning_rate: [0.001]\n")
    space = load_space(path, space_cls=SSDSearchSpace)
    assert (space.alpha, space.aspect_ratios, space.learning_rate) == ((0.5,), ("1:2:0.5", "1"), (0.001,))
    assert space.num_configurations() == 3 * 1 * 3 * 3 * 3 * 3 * 2
    assert SSDSearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


@pytest.mark.parametrize("override, message", [
    ("input_size=100", "multiples of 32"),
    ("head=fancy", "ssdlite or conv"),
    ("min_scale=0.5", "min_scale must be > 0 and <= every max_scale"),
    ("aspect_ratios=1:0", "must be positive"),
    ("aspect_ratios=square", "sets of numbers"),
    ("filters=8", "unknown entries"),
])
def test_bad_detector_space_is_refused_with_its_reason(override, message):
    with pytest.raises(ConfigError, match=message):
        load_space(None, [override], space_cls=SSDSearchSpace)


def test_tune_config_takes_the_task_defaults_and_round_trips():
    cfg = TuneConfig(task="detect")
    assert isinstance(cfg.space, SSDSearchSpace) and cfg.objective.quality == MAP
    assert (cfg.batch_size, cfg.trial_train_examples) == (DetectTrainConfig.batch_size, 3000) == (16, 3000)
    assert TuneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TuneConfig().trial_train_examples == 10000 and isinstance(TuneConfig().space, SearchSpace)
    with pytest.raises(ConfigError, match="TASK=detect searches a SSDSearchSpace"):
        TuneConfig(task="detect", space=SearchSpace())
    with pytest.raises(ConfigError, match="TASK=segment"):
        TuneConfig(task="segment")
    train = cfg.train_config({"alpha": 0.5, "input_size": 96, "head": "conv", "head_depth": 0, "head_filters": 32,
                              "min_scale": 0.1, "max_scale": 0.6, "aspect_ratios": "1", "learning_rate": 0.006})
    assert isinstance(train, DetectTrainConfig)
    assert (train.ssd.alpha, train.ssd.head, train.image_size, train.learning_rate) == (0.5, "conv", 96, 0.006)
    assert train.epochs == DetectTrainConfig().epochs  # the retrain trains as long as `make train` does


def test_detector_trials_are_explained_in_map():
    records = [TrialRecord("0", "COMPLETED", {}, 0.412, 1000, 300 * 1024, 4.0),
               TrialRecord("1", "COMPLETED", {}, 0.538, 1000, 900 * 1024, 9.0)]
    why = explain_best(records, ObjectiveConfig(quality=MAP))
    assert why.startswith("Trial 1 has the best validation mAP@[.5:.95] (validation mAP@[.5:.95] 0.538,")
    assert "Runner-up: trial 0 (validation mAP@[.5:.95] 0.412" in why
