"""The search space: exactly the advertised hyperparameters and bounds, sampled in one place."""
from __future__ import annotations

import keras_tuner as kt
import pytest

from common.errors import ConfigError
from models.cnn import CNNConfig
from tuning.space import SearchSpace, load_space, sample_cnn_config, scaled_input_size, trial_input_size

ADVERTISED = {
    "conv_blocks": (1, 2, 3),
    "filters_1": (8, 16, 32, 64), "filters_2": (8, 16, 32, 64), "filters_3": (8, 16, 32, 64),
    "kernel_size": (3, 5),
    "pool_size": (2, 3),
    "pool_stride": (2, 3),
    "dense_layers": (0, 1),
    "units_1": (32, 64, 128),
    "dropout": (0.3, 0.0, 0.5),
    "learning_rate": (2e-3, 1e-3, 5e-3, 5e-4),
    "input_scale": (1.0, 0.75, 0.5),
}


def _registered(space: SearchSpace) -> dict:
    """What Keras Tuner sees after building with every conditional branch active."""
    hp = kt.HyperParameters()
    hp.values.update({"conv_blocks": space.conv_blocks[1], "dense_layers": space.dense_layers[1]})
    cfg, _ = sample_cnn_config(hp, space)
    trial_input_size(hp, space, 64, cfg)
    out = {}
    for p in hp.space:
        if isinstance(p, kt.engine.hyperparameters.Int):
            out[p.name] = tuple(range(p.min_value, p.max_value + 1))
        elif isinstance(p, kt.engine.hyperparameters.Fixed):
            out[p.name] = (p.value,)
        else:
            out[p.name] = tuple(p.values)
    return out


def test_default_space_is_exactly_the_advertised_one():
    space = SearchSpace()
    assert space.hyperparameters() == ADVERTISED
    assert _registered(space) == ADVERTISED


def test_the_default_space_holds_the_make_train_model():
    """Trial 0 is `make train`'s CNN at its learning rate: the values that sample back into exactly it."""
    from models.cnn import CNNConfig
    from pipeline.training.classifier import TrainConfig

    space = SearchSpace()
    values = space.values_of(CNNConfig(), TrainConfig().learning_rate)
    assert values is not None
    hp = kt.HyperParameters()
    hp.values.update(values)
    assert sample_cnn_config(hp, space) == (CNNConfig(), TrainConfig().learning_rate)
    # A space narrowed away from the default cannot hold it: no trial 0 then, and the report says so.
    assert load_space(None, ["filters=8"]).values_of(CNNConfig(), TrainConfig().learning_rate) is None


def test_sampled_config_uses_only_the_active_blocks_and_layers():
    hp = kt.HyperParameters()
    hp.values.update({"conv_blocks": 2, "filters_1": 16, "filters_2": 32, "filters_3": 8, "kernel_size": 5,
                      "pool_size": 3, "pool_stride": 2, "dense_layers": 0, "units_1": 64, "dropout": 0.5,
                      "learning_rate": 5e-3})
    cfg, lr = sample_cnn_config(hp, SearchSpace())
    assert cfg.filters == (16, 32)
    assert cfg.hidden_units == ()
    assert (cfg.kernel_size, cfg.pool_size, cfg.pool_stride, cfg.dropout, lr) == (5, 3, 2, 0.5, 5e-3)
    assert not hp.is_active("filters_3") and not hp.is_active("units_1")


def test_file_and_overrides_narrow_and_widen(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("conv_blocks: [1, 2]\nfilters: [16, 64, 128]\nlearning_rate: 0.001\n")
    space = load_space(path, ["dense_layers=1,2", "dropout=0.1"])
    assert _registered(space) == {
        "conv_blocks": (1, 2), "filters_1": (16, 64, 128), "filters_2": (16, 64, 128),
        "kernel_size": (3, 5), "pool_size": (2, 3), "pool_stride": (2, 3), "dense_layers": (1, 2),
        "units_1": (32, 64, 128), "units_2": (32, 64, 128), "dropout": (0.1,), "learning_rate": (0.001,),
        "input_scale": (1.0, 0.75, 0.5),
    }
    json_path = tmp_path / "space.json"
    json_path.write_text('{"kernel_size": [3]}')
    assert load_space(json_path).kernel_size == (3,)


@pytest.mark.parametrize("text", ["filtres: [8]\n", "conv_blocks: [3, 1]\n", "dropout: [1.5]\n",
                                  "filters: [8, 8]\n", "kernel_size: three\n"])
def test_bad_space_files_fail_loudly(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="SPACE="):
        load_space(path)


def test_space_that_shrinks_the_image_to_nothing_is_rejected():
    space = SearchSpace(conv_blocks=(1, 4), pool_size=(2, 3), pool_stride=(3,))
    space.check_input_size(128)  # 128 -> 42 -> 14 -> 4 -> 1
    with pytest.raises(ConfigError, match="shrink a 64px image"):
        space.check_input_size(64)  # 64 -> 21 -> 7 -> 2 -> 0


def test_number_of_configurations_counts_per_block_choices():
    space = SearchSpace(conv_blocks=(1, 2), filters=(8, 16), kernel_size=(3,), pool_size=(2,), pool_stride=(2,),
                        dense_layers=(0, 1), hidden_units=(32, 64, 128), dropout=(0.0, 0.5), learning_rate=(1e-3,))
    # blocks: 2 + 2*2 = 6; dense: 1 + 3 = 4; dropout: 2; input_scale: 3 (its default)
    assert space.num_configurations() == 6 * 4 * 2 * 3


def test_space_round_trips_through_json():
    space = load_space(None, ["filters=4,8", "learning_rate=1e-2,1e-3"])
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_input_scale_sets_a_trials_input_side_and_keeps_its_blocks_buildable():
    assert [scaled_input_size(64, s, CNNConfig()) for s in (1.0, 0.75, 0.5)] == [64, 48, 32]
    assert scaled_input_size(60, 1.0, CNNConfig()) == 60  # 1.0 is `make train`'s side, whatever it is
    assert scaled_input_size(20, 0.25, CNNConfig()) == 8  # never below 8 px
    deep = CNNConfig(filters=(8, 8, 8), pool_size=3, pool_stride=3)
    assert scaled_input_size(64, 0.5, deep) == 32  # 32 -> 10 -> 3 -> 1: builds
    assert scaled_input_size(32, 0.5, deep) == 32  # 16 px would pool to nothing: raised until it builds
    hp = kt.HyperParameters()
    hp.values.update({"conv_blocks": 1, "filters_1": 8, "input_scale": 0.5})
    cfg, _ = sample_cnn_config(hp, SearchSpace())
    assert trial_input_size(hp, SearchSpace(), 64, cfg) == 32


def test_a_trial_at_a_smaller_scale_is_built_and_retrained_at_its_side():
    from tuning.search import TuneConfig
    from tuning.tunables import ClassifierSearch

    cfg = TuneConfig(steps=9, image_size=64)
    values = {**SearchSpace().values_of(CNNConfig(), 2e-3), "input_scale": 0.75}
    hm = ClassifierSearch().hypermodel(cfg, 5)
    hp = kt.HyperParameters()
    hp.values.update(values)
    assert hm.trial_size(hp) == 48 and hm.network(hp)[0].input_shape == (None, 48, 48, 3)
    assert ClassifierSearch().train_config(cfg, values).image_size == 48
    assert ClassifierSearch().train_config(cfg, {**values, "input_scale": 1.0}).image_size == 64
