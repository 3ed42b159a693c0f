"""The SSD model: shapes and channels from AnchorConfig, BN momentum, Keras 2 parity,
post-processing, and a tiny overfit that shows the model, targets and loss fit together."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.anchors import AnchorConfig, generate_anchors
from models.box_coding import encode_boxes
from models.losses import LossConfig, SSDLoss, pack_targets
from models.matching import encode_targets
from models.postprocess import decode_detections
from models.ssd import SSDConfig, build_ssd, split_predictions

NUM_CLASSES = 3
# 64 px: stride 16 -> 4x4, stride 32 -> 2x2, stride 64 (extra level) -> 1x1; 3 anchors per cell.
TINY = SSDConfig(
    anchors=AnchorConfig(input_size=64, strides=(16, 32, 64), min_scale=0.3, max_scale=0.8, aspect_ratios=(1.0, 2.0)),
    alpha=0.35,
    head_filters=16,
    extra_filters=32,
)


@pytest.fixture(scope="module")
def model():
    return build_ssd(TINY, NUM_CLASSES)


def test_output_has_one_row_per_anchor(model):
    anchors = TINY.anchors
    assert anchors.num_anchors == (16 + 4 + 1) * 3 == len(generate_anchors(anchors))
    out = model(np.zeros((2, 64, 64, 3), np.float32))
    assert tuple(out.shape) == (2, anchors.num_anchors, 4 + NUM_CLASSES + 1)
    deltas, logits = split_predictions(out)
    assert deltas.shape[-1] == 4 and logits.shape[-1] == NUM_CLASSES + 1


def test_head_channels_come_from_the_anchor_config(model):
    k = TINY.anchors.per_location
    for stride, side in zip(TINY.anchors.strides, TINY.anchors.feature_map_sizes):
        box, cls = model.get_layer(f"box_s{stride}_pred"), model.get_layer(f"class_s{stride}_pred")
        assert box.filters == k * 4 and cls.filters == k * (NUM_CLASSES + 1)
        assert tuple(box.output.shape[1:3]) == (side, side)  # one head per feature map
    assert len(TINY.anchors.strides) >= 2


def test_every_batchnorm_uses_the_configured_momentum(model):
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) > 50  # the backbone's, not just the heads'
    assert {bn.momentum for bn in bns} == {0.9}
    assert model.get_layer("bn_Conv1").get_config()["momentum"] == 0.9  # saved with the model too


def test_pixels_are_scaled_inside_the_graph(model):
    rescale = model.get_layer("rescale")
    np.testing.assert_allclose(rescale(np.array([0.0, 127.5, 255.0], np.float32)), [-1.0, 0.0, 1.0])
    assert model.layers[1] is rescale


def test_tf_keras_builds_the_same_layers_and_weights(model):
    tf_keras = pytest.importorskip("tf_keras")
    twin = build_ssd(TINY, NUM_CLASSES, keras=tf_keras)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    shapes = lambda m: [[tuple(w.shape) for w in layer.weights] for layer in m.layers]  # noqa: E731
    assert shapes(twin) == shapes(model)
    assert twin.output.shape[1:] == model.output.shape[1:]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(anchors=AnchorConfig(input_size=100)), "multiple of 32"),
        (dict(anchors=AnchorConfig(input_size=16, strides=(16,))), "multiple of 32"),
        (dict(anchors=AnchorConfig(input_size=64, strides=(4, 32))), "stride 4"),
        (dict(anchors=AnchorConfig(input_size=64, strides=(16, 64))), "stride 64"),
        (dict(head="fancy"), "head must be"),
        (dict(weights="coco"), "weights"),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(changes, message):
    with pytest.raises(ValueError, match=message):
        SSDConfig(**changes)


def test_config_round_trips_through_json():
    assert SSDConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    assert TINY.input_size == TINY.anchors.input_size == 64


def test_decode_detections_recovers_boxes_and_suppresses_duplicates():
    anchors = generate_anchors(TINY.anchors)
    a = len(anchors)
    box = np.array([0.1, 0.1, 0.45, 0.4], np.float32)
    deltas = encode_boxes(np.broadcast_to(box, (a, 4)), anchors).numpy()
    logits = np.zeros((a, NUM_CLASSES + 1), np.float32)
    logits[:, 0] = 10.0  # background everywhere ...
    logits[[0, 1], 0], logits[[0, 1], 2] = 0.0, 10.0  # ... except two anchors on the same box, class 1
    logits[5, 0], logits[5, 3] = 0.0, 8.0  # and one anchor of class 2 predicting its own anchor box
    deltas[5] = 0.0
    det = decode_detections(deltas[None], logits[None], anchors, score_threshold=0.5, iou_threshold=0.5, max_detections=10)
    assert det.num.numpy().tolist() == [2]
    assert det.classes.numpy()[0, :2].tolist() == [1, 2]  # 0-based labels, best first
    np.testing.assert_allclose(det.boxes.numpy()[0, 0], box, atol=1e-5)
    np.testing.assert_allclose(det.boxes.numpy()[0, 1], np.clip(anchors[5], 0, 1), atol=1e-5)
    assert det.scores.numpy()[0, 0] > 0.99 and det.boxes.shape == (1, 10, 4)


def synthetic_detection_data(n=4, size=64, seed=0):
    """n noisy images, each with 1-2 bright rectangles: uint8-range float32 [n, size, size, 3], boxes, labels."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (n, size, size, 3)).astype(np.float32)
    all_boxes, all_labels = [], []
    for i in range(n):
        boxes, labels = [], []
        for _ in range(1 + i % 2):
            h, w = rng.integers(16, 40, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            label = int(rng.integers(0, NUM_CLASSES))
            images[i, y : y + h, x : x + w] = 255.0 * np.eye(3)[label]  # colour = class
            boxes.append([y / size, x / size, (y + h) / size, (x + w) / size])
            labels.append(label)
        all_boxes.append(np.array(boxes, np.float32))
        all_labels.append(np.array(labels, np.int32))
    return images, all_boxes, all_labels


@pytest.mark.heavy
def test_a_few_steps_overfit_a_handful_of_images():
    # Tracing MobileNetV2's backward pass dominates this test on a CPU; two backbone levels,
    # single-layer "conv" heads and plain SGD keep that (and the optimizer's graph) small.
    cfg = TINY.replace(anchors=TINY.anchors.replace(strides=(16, 32)), head="conv", head_depth=0)
    anchors = generate_anchors(cfg.anchors)
    images, boxes, labels = synthetic_detection_data()
    ds = (
        tf.data.Dataset.from_tensor_slices((images, tf.ragged.constant(boxes, ragged_rank=1), tf.ragged.constant(labels)))
        .map(lambda image, b, l: (image, pack_targets(*encode_targets(b, l, anchors))))  # as the input pipeline does
        .batch(len(images))
    )
    keras.utils.set_random_seed(0)
    model = build_ssd(cfg, NUM_CLASSES)
    assert tuple(model.output.shape[1:]) == (cfg.anchors.num_anchors, 4 + NUM_CLASSES + 1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=SSDLoss(LossConfig()), jit_compile=False)
    history = model.fit(ds, epochs=15, verbose=0).history["loss"]
    assert np.isfinite(history).all()
    assert np.mean(history[-3:]) < 0.25 * history[0], history
