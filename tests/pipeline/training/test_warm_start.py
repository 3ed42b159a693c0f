"""INIT=RUN: an earlier run's layers loaded where they fit (pipeline.training.warm_start)."""
import keras
import numpy as np
import pytest

from common.errors import UserError
from common.run_folder import RunFolder
from models.cnn import CNNConfig, build_cnn
from pipeline.training.warm_start import load_matching_weights


def saved_run(tmp_path, model):
    run = RunFolder(tmp_path / "earlier")
    run.root.mkdir()
    model.save(run.model)
    return run.root


def test_matching_layers_load_and_the_rest_are_reported(tmp_path):
    keras.utils.set_random_seed(1)
    earlier = build_cnn(CNNConfig(filters=(8, 16), hidden_units=(32,)), num_classes=7, input_size=32)
    keras.utils.set_random_seed(2)
    # Same convolutions, a wider dense layer, 3 classes instead of 7.
    model = build_cnn(CNNConfig(filters=(8, 16), hidden_units=(48,)), num_classes=3, input_size=32)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}

    warm = load_matching_weights(model, saved_run(tmp_path, earlier))

    assert set(warm.loaded) == {"block1_conv", "block2_conv"}
    assert {name for name, _ in warm.not_loaded} == {"fc1", "probabilities"}
    assert all("shapes differ" in why for _, why in warm.not_loaded)
    for name in warm.loaded:
        for got, want in zip(model.get_layer(name).get_weights(), earlier.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    for name, _ in warm.not_loaded:
        for got, kept in zip(model.get_layer(name).get_weights(), before[name]):
            np.testing.assert_array_equal(got, kept)
    d = warm.to_dict()
    assert d["loaded"] == list(warm.loaded) and d["not_loaded"][0]["why"]


def test_nothing_in_common_is_an_error_naming_the_run(tmp_path):
    earlier = build_cnn(CNNConfig(filters=(4,), hidden_units=()), num_classes=2, input_size=16)
    inputs = keras.Input((16, 16, 3))
    other = keras.Model(inputs, keras.layers.Dense(2, name="other")(keras.layers.Flatten()(inputs)))
    with pytest.raises(UserError, match="none of its layers"):
        load_matching_weights(other, saved_run(tmp_path, earlier))


def test_a_missing_run_is_an_error(tmp_path):
    model = build_cnn(CNNConfig(filters=(4,), hidden_units=()), num_classes=2, input_size=16)
    with pytest.raises(UserError, match="not found"):
        load_matching_weights(model, tmp_path / "nowhere")
