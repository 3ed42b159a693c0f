"""The SSD loss: hand-computed values, hard-negative mining, the Keras wrapper."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.losses import LossConfig, SSDLoss, hard_negative_mask, loss_terms, pack_targets, smooth_l1, ssd_loss, unpack_targets


def targets(class_ids, deltas=None):
    """y_true float32 [B, A, 5] from class ids [B, A] (deltas default to small random values)."""
    class_ids = np.asarray(class_ids, np.int32)
    if deltas is None:
        deltas = np.random.default_rng(0).normal(0, 0.5, class_ids.shape + (4,)).astype(np.float32)
    return pack_targets(class_ids, deltas)


def predictions(deltas, logits):
    return tf.concat([tf.cast(deltas, tf.float32), tf.cast(logits, tf.float32)], axis=-1)


def confident_logits(class_ids, num_classes, margin=30.0):
    return tf.one_hot(class_ids, num_classes + 1) * margin


def test_pack_unpack_round_trip():
    class_ids = np.array([[0, 3, 1]], np.int32)
    deltas = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    got_ids, got_deltas = unpack_targets(pack_targets(class_ids, deltas))
    assert got_ids.dtype == tf.int32
    np.testing.assert_array_equal(got_ids, class_ids)
    np.testing.assert_array_equal(got_deltas, deltas)


def test_smooth_l1_by_hand():
    np.testing.assert_allclose(smooth_l1([0.0, 0.5, -0.5, 2.0, -3.0]), [0.0, 0.125, 0.125, 1.5, 2.5])


def test_hard_negative_mask_keeps_three_negatives_per_positive_with_the_highest_loss():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (2, 20)).astype(np.float32)
    positive = np.zeros((2, 20), bool)
    positive[0, [3, 7]] = True  # image 0: 2 positives -> 6 negatives
    positive[1, 5] = True  # image 1: 1 positive -> 3 negatives
    scores[0, 3] = scores[0, 7] = 10.0  # positives never count as negatives, however high
    mask = hard_negative_mask(scores, positive).numpy()
    assert mask.sum(axis=1).tolist() == [6, 3]
    assert not (mask & positive).any()
    for i in range(2):
        negatives = np.where(positive[i], -np.inf, scores[i])
        assert set(np.flatnonzero(mask[i])) == set(np.argsort(-negatives)[: mask[i].sum()])


def test_hard_negative_mask_without_positives_uses_min_negatives():
    scores = np.linspace(0, 1, 10, dtype=np.float32)[None]
    positive = np.zeros((1, 10), bool)
    assert hard_negative_mask(scores, positive).numpy().sum() == 0
    np.testing.assert_array_equal(np.flatnonzero(hard_negative_mask(scores, positive, min_negatives=2)), [8, 9])


def test_localization_is_zero_for_exact_predictions_and_positive_otherwise():
    class_ids = np.array([[0, 2, 0, 1, 0, 0]], np.int32)
    y_true = targets(class_ids)
    exact = predictions(y_true[..., :4], confident_logits(class_ids, 2))
    terms = loss_terms(y_true, exact)
    assert float(terms["box"][0]) == 0.0
    assert float(terms["class"][0]) < 1e-6
    assert float(terms["num_positives"][0]) == 2.0
    assert float(ssd_loss(y_true, exact)) < 1e-6

    off = predictions(y_true[..., :4] + 0.5, confident_logits(class_ids, 2))
    assert float(loss_terms(y_true, off)["box"][0]) == pytest.approx(2 * 4 * 0.125)  # 2 positives x 4 coords
    wrong = predictions(y_true[..., :4], confident_logits((class_ids + 1) % 3, 2))
    assert float(ssd_loss(y_true, wrong)) > 10.0


def test_box_errors_on_background_anchors_are_ignored():
    class_ids = np.array([[0, 1, 0, 0]], np.int32)
    y_true = targets(class_ids)
    noisy = y_true[..., :4].numpy()
    noisy[0, [0, 2, 3]] += 100.0
    assert float(loss_terms(y_true, predictions(noisy, confident_logits(class_ids, 1)))["box"][0]) == 0.0


def test_mined_loss_by_hand():
    # 1 positive with one coordinate off by 0.5, 5 negatives, uniform logits over 2 classes:
    # box 0.125; cross-entropy log 2 on the positive and on 3 (= 3 x 1) mined negatives.
    class_ids = np.array([[1, 0, 0, 0, 0, 0]], np.int32)
    y_true = targets(class_ids, np.zeros((1, 6, 4), np.float32))
    deltas = np.zeros((1, 6, 4), np.float32)
    deltas[0, 0, 2] = 0.5
    y_pred = predictions(deltas, tf.zeros((1, 6, 2)))
    assert float(ssd_loss(y_true, y_pred)) == pytest.approx(0.125 + 4 * math.log(2), rel=1e-5)


def test_focal_loss_by_hand():
    # p_t = 0.5 everywhere: each anchor costs alpha_t * 0.5**2 * log 2, all anchors count.
    class_ids = np.array([[1, 0, 0, 0]], np.int32)
    y_true = targets(class_ids, np.zeros((1, 4, 4), np.float32))
    y_pred = predictions(tf.zeros((1, 4, 4)), tf.zeros((1, 4, 2)))
    expected = (0.25 + 3 * 0.75) * 0.25 * math.log(2)
    assert float(ssd_loss(y_true, y_pred, LossConfig(focal=True))) == pytest.approx(expected, rel=1e-5)


def test_normalized_by_positives_of_the_batch_and_finite_without_any():
    class_ids = np.array([[1, 0, 0, 0], [2, 2, 0, 0]], np.int32)
    y_true = targets(class_ids, np.zeros((2, 4, 4), np.float32))
    y_pred = predictions(tf.ones((2, 4, 4)), tf.zeros((2, 4, 3)))
    t = loss_terms(y_true, y_pred)
    expected = float(tf.reduce_sum(t["box"] + t["class"])) / 3
    assert float(ssd_loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)

    background = targets(np.zeros((2, 4), np.int32))
    for cfg in (LossConfig(), LossConfig(min_negatives=2), LossConfig(focal=True)):
        value = float(ssd_loss(background, y_pred, cfg))
        assert math.isfinite(value)
    assert float(ssd_loss(background, y_pred, LossConfig(min_negatives=2))) == pytest.approx(4 * math.log(3), rel=1e-5)


def test_keras_loss_matches_the_function_and_round_trips_its_config():
    cfg = LossConfig(neg_pos_ratio=2.0, box_weight=2.0)
    class_ids = np.array([[1, 0, 0, 0, 2, 0]], np.int32)
    y_true = targets(class_ids)
    y_pred = tf.random.stateless_normal((1, 6, 7), seed=(1, 2))
    loss = SSDLoss(cfg)
    assert float(loss(y_true, y_pred)) == pytest.approx(float(ssd_loss(y_true, y_pred, cfg)), rel=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(loss), custom_objects={"SSDLoss": SSDLoss})
    assert clone.config == cfg
    assert float(clone(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-6)


def test_gradients_reach_both_outputs():
    class_ids = np.array([[1, 0, 0, 0]], np.int32)
    y_true = targets(class_ids)
    y_pred = tf.Variable(tf.zeros((1, 4, 6)))
    with tf.GradientTape() as tape:
        value = ssd_loss(y_true, y_pred)
    grad = tape.gradient(value, y_pred).numpy()
    assert np.abs(grad[0, 0, :4]).sum() > 0  # box of the positive
    assert np.abs(grad[0, 1:, :4]).sum() == 0  # no box gradient from background
    assert np.abs(grad[..., 4:]).sum() > 0
