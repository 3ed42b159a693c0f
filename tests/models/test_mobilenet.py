"""The MobileNetV2 classifier: config, input sizes, Keras 2 twins, weights files, two-phase
fine-tuning and TFLite conversion. Tiny models (alpha 0.35, 32 px), no downloads."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from ai_edge_litert.interpreter import Interpreter

from export.keras2 import copy_weights
from models.cnn import CNNConfig, build_cnn
from models.mobilenet import (
    NUM_BLOCKS,
    MobileNetConfig,
    backbone_layers,
    build_mobilenet_classifier,
    set_trainable_top_blocks,
    valid_input_size,
)

SIZE = 32
NUM_CLASSES = 3
# bn_momentum 0: one training-mode call sets every BN's moving statistics to that batch's. A randomly
# initialised MobileNetV2 in inference mode shrinks activations ~1e-10 by the top (uniform
# probabilities), which would make every "outputs agree" below pass for a broken model.
TINY = MobileNetConfig(alpha=0.35, weights="none", bn_momentum=0.0)


def _images(n, seed, size=SIZE):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _calibrated(model):
    model(_images(16, seed=99), training=True)
    return model


def _features(model, images):
    """float32 [B, D]: the pooled backbone output, before the head."""
    return np.asarray(type(model)(model.input, model.get_layer("global_pool").output)(images))


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return _calibrated(build_mobilenet_classifier(TINY, NUM_CLASSES, SIZE))


@pytest.fixture(scope="module")
def probe(model):
    """Images and the fixture model's probabilities and features on them (non-degenerate)."""
    images = _images(4, seed=1)
    probs = np.asarray(model(images))
    assert probs.std(axis=1).min() > 1e-3, "probabilities are uniform: the comparisons below would be vacuous"
    return images, probs, _features(model, images)


def _weights_of(model, kind):
    return [w for layer in model.layers if type(layer).__name__ == kind for w in layer.get_weights()]


def test_config_round_trips_through_json_and_replace():
    cfg = MobileNetConfig(alpha=1, weights="runs/a/model.keras", dropout=0.0, fine_tune_blocks=NUM_BLOCKS)
    assert cfg.alpha == 1.0 and isinstance(cfg.alpha, float)
    assert MobileNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.replace(alpha=0.5).alpha == 0.5 and cfg.replace(alpha=0.5).weights == cfg.weights
    assert str(cfg.weights_path) == "runs/a/model.keras" and MobileNetConfig().weights_path is None
    assert MobileNetConfig().weights == "imagenet" and 0 < MobileNetConfig().fine_tune_blocks < NUM_BLOCKS


@pytest.mark.parametrize("changes, message", [
    (dict(alpha=0.6), "alpha must be one of"),
    (dict(weights="coco"), "weights must be"),
    (dict(weights=None), "weights must be"),
    (dict(weights="model.pt"), "weights must be"),
    (dict(dropout=1.0), "dropout"),
    (dict(fine_tune_blocks=NUM_BLOCKS + 1), "fine_tune_blocks"),
    (dict(fine_tune_blocks=-1), "fine_tune_blocks"),
    (dict(bn_momentum=1.0), "bn_momentum"),
])
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        MobileNetConfig(**changes)


def test_config_rejects_unknown_fields_and_reports_every_problem():
    with pytest.raises(ValueError, match=r"unknown MobileNetConfig fields: \['width'\]"):
        MobileNetConfig.from_dict({"width": 1.0})
    with pytest.raises(ValueError, match="alpha.*dropout"):
        MobileNetConfig(alpha=2.0, dropout=-0.1)


def test_input_sizes_follow_the_weights():
    assert valid_input_size(96, "imagenet") and valid_input_size(224, "imagenet")
    assert not valid_input_size(100, "imagenet") and not valid_input_size(64, "imagenet")
    assert valid_input_size(32, "none") and valid_input_size(64, "w.keras") and valid_input_size(128, "none")
    assert not valid_input_size(48, "none") and not valid_input_size(0, "none")
    with pytest.raises(ValueError, match=r"ImageNet weights need an input size in \(96, 128, 160, 192, 224\), got 100"):
        build_mobilenet_classifier(MobileNetConfig(weights="imagenet"), NUM_CLASSES, 100)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_mobilenet_classifier(TINY, NUM_CLASSES, 48)
    with pytest.raises(ValueError, match="num_classes"):
        build_mobilenet_classifier(TINY, 0, SIZE)


def test_imagenet_weights_are_asked_of_keras_applications(monkeypatch):
    real, asked = keras.applications.MobileNetV2, []

    def offline(**kwargs):  # record the request, build without downloading
        asked.append((kwargs["weights"], kwargs["alpha"]))
        return real(**{**kwargs, "weights": None})

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    build_mobilenet_classifier(MobileNetConfig(alpha=0.35, weights="imagenet"), NUM_CLASSES, 96)
    build_mobilenet_classifier(TINY, NUM_CLASSES, SIZE)
    assert asked == [("imagenet", 0.35), (None, 0.35)]


def test_output_is_a_distribution_over_raw_pixels(model, probe):
    images, probs, _ = probe
    assert model.name == "mobilenetv2_classifier" and model.inputs[0].name == "image"
    assert probs.shape == (4, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    rescale = model.get_layer("rescale")
    assert model.layers[1] is rescale  # MobileNetV2's [-1, 1] scaling is the first thing in the graph
    np.testing.assert_allclose(rescale(np.array([0.0, 127.5, 255.0], np.float32)), [-1.0, 0.0, 1.0])
    assert model.get_layer("classifier_dropout").rate == TINY.dropout
    assert model.get_layer("probabilities").units == NUM_CLASSES
    # Flat: the backbone's layers are the classifier's own, not one nested Model layer.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert len(backbone_layers(model)) == len(model.layers) - 5  # image, rescale, pool, dropout, probabilities


def test_batchnorm_momentum_and_mixed_precision_head():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_mobilenet_classifier(MobileNetConfig(weights="none", dropout=0.0), 2, SIZE, output_dtype="float32")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("Conv_1").compute_dtype == "float16"
    assert model.get_layer("probabilities").compute_dtype == "float32" and model.output.dtype == "float32"
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 52 and {bn.momentum for bn in bns} == {0.9}
    assert "classifier_dropout" not in [layer.name for layer in model.layers]


def test_tf_keras_twin_has_the_same_layers_and_agrees_after_copying_both_ways(model, probe):
    images, probs, features = probe
    twin = build_mobilenet_classifier(TINY, NUM_CLASSES, SIZE, keras=tf_keras)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    shapes = lambda m: [[tuple(w.shape) for w in layer.weights] for layer in m.layers]  # noqa: E731
    assert shapes(twin) == shapes(model)

    copy_weights(model, twin)
    np.testing.assert_allclose(twin.predict(images, verbose=0), probs, atol=1e-4)
    np.testing.assert_allclose(_features(twin, images), features, atol=5e-4)  # Keras 2 vs 3 kernels

    back = build_mobilenet_classifier(TINY, NUM_CLASSES, SIZE)
    assert not np.allclose(_features(back, images), features, atol=1e-4)  # a fresh model differs ...
    copy_weights(twin, back)
    np.testing.assert_allclose(np.asarray(back(images)), probs, atol=1e-4)  # ... until the weights come back
    np.testing.assert_allclose(_features(back, images), features, atol=5e-4)


@pytest.mark.parametrize("file_name", ["backbone.weights.h5", "classifier.keras"])
def test_weights_file_initialises_the_backbone(model, probe, tmp_path, file_name):
    images, _, features = probe
    path = tmp_path / file_name
    model.save_weights(path) if file_name.endswith(".weights.h5") else model.save(path)
    # Another task (5 classes): the backbone loads, the head is new.
    loaded = build_mobilenet_classifier(TINY.replace(weights=str(path)), 5, SIZE)
    np.testing.assert_array_equal(_features(loaded, images), features)
    assert loaded.output.shape[-1] == 5


def test_weights_file_loads_into_a_tf_keras_twin(model, probe, tmp_path):
    images, _, features = probe
    path = tmp_path / "backbone.weights.h5"
    model.save_weights(path)
    twin = build_mobilenet_classifier(TINY.replace(weights=str(path)), NUM_CLASSES, SIZE, keras=tf_keras)
    np.testing.assert_allclose(_features(twin, images), features, atol=5e-4)  # Keras 2 vs 3 kernels


def test_keras_applications_h5_file_loads(probe, tmp_path):
    """The Keras 2 .h5 keras.applications downloads (no top): ImageNet weights for an offline machine."""
    images = probe[0]
    bare = tf_keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    for bn in (layer for layer in bare.layers if type(layer).__name__ == "BatchNormalization"):
        bn.momentum = 0.0  # one training-mode call below sets non-trivial statistics (see TINY)
    bare(_images(16, seed=99) / 127.5 - 1.0, training=True)
    path = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    bare.save_weights(str(path))
    loaded = build_mobilenet_classifier(TINY.replace(weights=str(path)), NUM_CLASSES, SIZE)
    expected = np.asarray(bare(images / 127.5 - 1.0)).mean(axis=(1, 2))
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(_features(loaded, images), expected, atol=5e-4)  # Keras 2 vs 3 kernels


def test_weights_file_that_does_not_fit_raises_naming_the_file(tmp_path):
    wider = build_mobilenet_classifier(TINY.replace(alpha=0.5), NUM_CLASSES, SIZE)
    h5, full = tmp_path / "wide.weights.h5", tmp_path / "wide.keras"
    wider.save_weights(h5)
    wider.save(full)
    cnn = tmp_path / "cnn.keras"
    build_cnn(CNNConfig(filters=(4,), hidden_units=()), NUM_CLASSES, SIZE).save(cnn)
    for path, message in [(h5, "does not fit a MobileNetV2 backbone of alpha 0.35"),
                          (full, "does not fit the backbone: layer '.*' has weights"),
                          (cnn, "does not fit the backbone: no layer 'Conv1'")]:
        with pytest.raises(ValueError, match=message) as error:
            build_mobilenet_classifier(TINY.replace(weights=str(path)), NUM_CLASSES, SIZE)
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        build_mobilenet_classifier(TINY.replace(weights=str(tmp_path / "missing.keras")), NUM_CLASSES, SIZE)


def test_fine_tuning_phases_unfreeze_top_blocks_and_keep_batchnorm_frozen():
    model = _calibrated(build_mobilenet_classifier(TINY, NUM_CLASSES, SIZE))
    names = lambda: [w.path.split("/")[0] for w in model.trainable_weights]  # noqa: E731

    set_trainable_top_blocks(model, 0)  # phase 1: the head alone
    assert names() == ["probabilities", "probabilities"]

    set_trainable_top_blocks(model, 4)  # phase 2: blocks 13..16 (expand, depthwise, project) and Conv_1
    expected = [f"block_{b}_{part}" for b in range(13, 17) for part in ("expand", "depthwise", "project")]
    assert sorted(set(names())) == sorted(expected + ["Conv_1", "probabilities"])
    assert len(model.trainable_weights) == 12 + 1 + 2  # MobileNetV2's convs have no bias
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))

    set_trainable_top_blocks(model, NUM_BLOCKS)  # the whole backbone but BN
    convs = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D")]
    assert len(convs) == 1 + 2 + 16 * 3 + 1  # stem, expanded_conv, block_1..16, Conv_1
    assert all(layer.trainable for layer in convs) and len(model.trainable_weights) == len(convs) + 2
    with pytest.raises(ValueError, match="blocks must be an int in 0..17"):
        set_trainable_top_blocks(model, NUM_BLOCKS + 1)

    # A training step under phase 2 moves only the unfrozen weights; BN statistics stay put.
    set_trainable_top_blocks(model, 4)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.train_on_batch(_images(8, seed=5), np.arange(8) % NUM_CLASSES)
    changed = {layer.name for layer in model.layers
               if any(not np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))}
    assert changed == set(expected + ["Conv_1", "probabilities"])


def test_set_trainable_top_blocks_works_on_a_tf_keras_twin():
    twin = build_mobilenet_classifier(TINY, NUM_CLASSES, SIZE, keras=tf_keras)
    set_trainable_top_blocks(twin, 4)
    assert len(twin.trainable_weights) == 15
    assert not any(layer.trainable for layer in twin.layers if type(layer).__name__ == "BatchNormalization")


def test_float32_tflite_conversion_agrees_with_keras(model, probe):
    images, probs, _ = probe
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert tuple(source["shape"][1:]) == (SIZE, SIZE, 3) and source["dtype"] == np.float32
    outputs = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0])
    np.testing.assert_allclose(np.stack(outputs), probs, atol=1e-4)
