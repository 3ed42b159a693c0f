"""Box coding and anchor matching: hand-computed values, round trips, graph mode."""
import math

import numpy as np
import pytest
import tensorflow as tf

from models.anchors import AnchorConfig, generate_anchors
from models.box_coding import BOX_VARIANCES, centers_to_corners, corners_to_centers, decode_boxes, encode_boxes
from models.matching import encode_targets, match_anchors, pairwise_iou

# The four quadrants of the image, in anchor order: top-left, top-right, bottom-left, bottom-right.
QUADRANTS = generate_anchors(
    AnchorConfig(input_size=64, strides=(32,), min_scale=0.5, max_scale=0.5, aspect_ratios=(1.0,), extra_scale=False)
)


def random_boxes(rng, shape):
    """Valid corners float32 [*shape, 4] with sides in 0.05..0.6."""
    lo = rng.uniform(0.0, 0.5, shape + (2,))
    return np.concatenate([lo, lo + rng.uniform(0.05, 0.6, shape + (2,))], axis=-1).astype(np.float32)


# --- box coding ---------------------------------------------------------------------------


def test_corners_centers_conversions_by_hand():
    corners = np.array([[0.1, 0.2, 0.5, 0.8]], np.float32)
    centers = np.array([[0.3, 0.5, 0.4, 0.6]], np.float32)
    np.testing.assert_allclose(corners_to_centers(corners), centers, atol=1e-7)
    np.testing.assert_allclose(centers_to_corners(centers), corners, atol=1e-7)


def test_encode_by_hand():
    anchor = QUADRANTS[:1]  # centre (0.25, 0.25), side 0.5
    box = np.array([[0.1, 0.1, 0.5, 0.7]], np.float32)  # centre (0.3, 0.4), h 0.4, w 0.6
    expected = [[0.05 / 0.5 / 0.1, 0.15 / 0.5 / 0.1, math.log(0.8) / 0.2, math.log(1.2) / 0.2]]
    np.testing.assert_allclose(encode_boxes(box, anchor), expected, rtol=1e-5)
    assert BOX_VARIANCES == (0.1, 0.1, 0.2, 0.2)


def test_decode_inverts_encode_with_batch_dims():
    rng = np.random.default_rng(0)
    anchors = random_boxes(rng, (50,))
    boxes = random_boxes(rng, (3, 50))  # [B, A, 4] against [A, 4] anchors
    deltas = encode_boxes(boxes, anchors)
    assert deltas.shape == (3, 50, 4) and deltas.dtype == tf.float32
    np.testing.assert_allclose(decode_boxes(deltas, anchors), boxes, atol=1e-5)


def test_coding_runs_in_graph_mode():
    anchors = QUADRANTS
    fn = tf.function(lambda b: decode_boxes(encode_boxes(b, anchors), anchors))
    boxes = random_boxes(np.random.default_rng(1), (4,))
    np.testing.assert_allclose(fn(tf.constant(boxes)), boxes, atol=1e-5)


# --- IoU and matching -----------------------------------------------------------------------


def test_pairwise_iou_by_hand():
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]], np.float32)
    b = np.array([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.5, 1.0], [0.6, 0.6, 0.9, 0.9], [0.2, 0.2, 0.2, 0.2]], np.float32)
    expected = [
        [0.0625 / 0.4375, 0.25 / 0.5, 0.0, 0.0],  # overlap 0.25 x 0.25 of two 0.25-area boxes; half the wide box
        [0.25, 0.5, 0.09, 0.0],  # inner boxes: their own area over 1
    ]
    iou = pairwise_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou, expected, atol=1e-6)
    assert float(pairwise_iou(b[3:], b[3:])[0, 0]) == 0.0  # empty union: 0, not NaN


def test_threshold_decides_which_anchors_match():
    gt = np.array([[0.0, 0.0, 0.5, 0.8]], np.float32)  # IoU 0.625 with top-left, 0.3 with top-right
    np.testing.assert_array_equal(match_anchors(gt, QUADRANTS), [0, -1, -1, -1])
    np.testing.assert_array_equal(match_anchors(gt, QUADRANTS, iou_threshold=0.25), [0, 0, -1, -1])
    np.testing.assert_array_equal(match_anchors(gt, QUADRANTS, iou_threshold=0.7), [0, -1, -1, -1])  # forced


def test_every_box_forces_its_best_anchor():
    small = [0.6, 0.6, 0.7, 0.7]  # IoU 0.04 with the bottom-right anchor, far below 0.5
    big = [0.0, 0.0, 0.5, 0.8]
    matched = match_anchors(np.array([big, small], np.float32), QUADRANTS)
    np.testing.assert_array_equal(matched, [0, -1, -1, 1])


def test_an_anchor_claimed_by_two_boxes_goes_to_the_better_overlap():
    weak = [0.55, 0.55, 0.65, 0.65]  # IoU 0.04 with bottom-right
    strong = [0.6, 0.6, 0.9, 0.9]  # IoU 0.36 with bottom-right
    np.testing.assert_array_equal(match_anchors(np.array([weak, strong], np.float32), QUADRANTS), [-1, -1, -1, 1])
    np.testing.assert_array_equal(match_anchors(np.array([strong, weak], np.float32), QUADRANTS), [-1, -1, -1, 0])


def test_zero_area_boxes_never_match():
    padding = np.zeros((2, 4), np.float32)
    np.testing.assert_array_equal(match_anchors(padding, QUADRANTS), [-1, -1, -1, -1])


def test_targets_of_an_image_without_objects_are_all_background():
    class_ids, deltas = encode_targets(np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), QUADRANTS)
    assert class_ids.dtype == tf.int32 and class_ids.shape == (4,)
    assert deltas.dtype == tf.float32 and deltas.shape == (4, 4)
    np.testing.assert_array_equal(class_ids, 0)
    np.testing.assert_array_equal(deltas, 0.0)


def test_targets_hold_shifted_labels_and_decodable_deltas():
    boxes = np.array([[0.0, 0.0, 0.5, 0.8], [0.6, 0.6, 0.7, 0.7]], np.float32)
    class_ids, deltas = encode_targets(boxes, np.array([0, 4]), QUADRANTS)
    np.testing.assert_array_equal(class_ids, [1, 0, 0, 5])  # label + 1; 0 is background
    decoded = decode_boxes(deltas, QUADRANTS).numpy()
    np.testing.assert_allclose(decoded[[0, 3]], boxes, atol=1e-5)
    np.testing.assert_array_equal(deltas.numpy()[[1, 2]], 0.0)


def test_encode_targets_in_a_dataset_map_has_static_shapes():
    anchors = generate_anchors(AnchorConfig(input_size=64, strides=(16, 32)))
    examples = [
        (np.zeros((0, 4), np.float32), np.zeros((0,), np.int32)),
        (np.array([[0.1, 0.1, 0.6, 0.5]], np.float32), np.array([2], np.int32)),
        (np.array([[0.1, 0.1, 0.6, 0.5], [0.5, 0.5, 0.9, 0.95]], np.float32), np.array([0, 1], np.int32)),
    ]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature=(tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)),
    ).map(lambda b, l: encode_targets(b, l, anchors))
    a = len(anchors)
    assert ds.element_spec[0].shape == (a,) and ds.element_spec[1].shape == (a, 4)
    positives = [int(np.sum(c > 0)) for c, _ in ds.as_numpy_iterator()]
    assert positives[0] == 0 and 1 <= positives[1] < positives[2]


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_matched_anchors_meet_the_threshold_or_are_forced(threshold):
    rng = np.random.default_rng(2)
    anchors = generate_anchors(AnchorConfig(input_size=64, strides=(16, 32)))
    boxes = random_boxes(rng, (5,))
    matched = match_anchors(boxes, anchors, threshold).numpy()
    iou = pairwise_iou(boxes, anchors).numpy()
    best_anchor = iou.argmax(axis=1)
    for a in np.flatnonzero(matched >= 0):
        assert iou[matched[a], a] >= threshold or a in best_anchor
    for a in np.flatnonzero(matched < 0):
        assert iou[:, a].max() < threshold
    assert set(best_anchor) <= set(np.flatnonzero(matched >= 0))
