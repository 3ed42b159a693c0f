import numpy as np
import pytest

from models.cnn import CNNConfig, build_cnn, feature_map_sizes


def _layers(model, kind):
    return [layer for layer in model.layers if type(layer).__name__ == kind]


def test_config_maps_to_layer_structure():
    cfg = CNNConfig(filters=(8, 16), kernel_size=5, pool_size=3, pool_stride=2, hidden_units=(32, 16), dropout=0.25)
    model = build_cnn(cfg, num_classes=4, input_size=40)
    convs = _layers(model, "Conv2D")
    assert [c.filters for c in convs] == [8, 16]
    assert all(c.kernel_size == (5, 5) for c in convs)
    pools = _layers(model, "MaxPooling2D")
    assert [(p.pool_size, p.strides) for p in pools] == [((3, 3), (2, 2))] * 2
    dense = _layers(model, "Dense")
    assert [d.units for d in dense] == [32, 16, 4]
    assert len(_layers(model, "Dropout")) == 3 and all(d.rate == 0.25 for d in _layers(model, "Dropout"))
    assert len(_layers(model, "ReLU")) == 4  # one per conv block and per hidden dense layer
    # 40 -> pool(3, s2) -> 19 -> 9 ; flatten = 9*9*16
    assert feature_map_sizes(cfg, 40) == [19, 9]
    assert model.get_layer("flatten").output.shape[-1] == 9 * 9 * 16
    assert model.output.shape[-1] == 4


def test_output_is_a_distribution_over_raw_pixels():
    model = build_cnn(CNNConfig(filters=(4,), hidden_units=(8,)), num_classes=3, input_size=16)
    probs = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)


def test_no_dropout_layers_when_disabled_and_no_hidden_layers():
    model = build_cnn(CNNConfig(filters=(4, 4, 4), hidden_units=(), dropout=0.0), 2, 32)
    assert not _layers(model, "Dropout")
    assert [d.units for d in _layers(model, "Dense")] == [2]


def test_config_round_trips_and_validates():
    cfg = CNNConfig(filters=[16, 32], hidden_units=[64])
    assert cfg.filters == (16, 32) and cfg.num_blocks == 2
    assert CNNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="dropout"):
        CNNConfig(dropout=1.5)
    with pytest.raises(ValueError, match="filters"):
        CNNConfig(filters=())
    with pytest.raises(ValueError, match="unknown CNNConfig fields"):
        CNNConfig.from_dict({"filterz": [3]})
    with pytest.raises(ValueError, match="shrink a 8px input to nothing"):
        build_cnn(CNNConfig(filters=(4, 4, 4, 4)), 2, 8)


def test_same_builder_gives_identical_tf_keras_model():
    import tf_keras

    cfg = CNNConfig(filters=(4, 8), hidden_units=(16,))
    k3 = build_cnn(cfg, 5, 24)
    k2 = build_cnn(cfg, 5, 24, keras=tf_keras)
    assert [layer.name for layer in k3.layers] == [layer.name for layer in k2.layers]
    assert [w.shape for w in k3.get_weights()] == [w.shape for w in k2.get_weights()]
