"""The detection input pipeline: shapes, targets made in tf.data, box-aware augmentation."""
import numpy as np
import pytest
import tensorflow as tf

from models.anchors import AnchorConfig, generate_anchors
from models.losses import pack_targets
from models.matching import encode_targets
from pipeline.detection_dataset import (NO_AUGMENT, DetectionAugmentConfig, DetectionPipelineConfig,
                                        augment_example, boxes_in_window, detection_dataset,
                                        detection_eval_dataset, flip_boxes, ground_truth, resample_window)
from tests.detection_data import make_source, rectangle_image

ANCHORS = AnchorConfig(input_size=32, strides=(8, 16), min_scale=0.25, max_scale=0.5)


@pytest.fixture(scope="module")
def small_source():
    rng = np.random.default_rng(0)
    examples = []
    for i in range(5):
        box = [0.1 + 0.1 * i, 0.2, 0.5 + 0.08 * i, 0.7]
        examples.append({"image": rectangle_image(40, box, 200) + rng.integers(0, 30, (40, 40, 3)).astype(np.uint8),
                         "boxes": [box], "labels": [i % 3]})
    examples.append({"image": rng.integers(0, 255, (40, 40, 3)), "boxes": np.zeros((0, 4)), "labels": []})  # background
    return make_source(examples)


def test_training_batches_have_model_shapes_and_dtypes(small_source):
    cfg = DetectionPipelineConfig(batch_size=4)
    x, y = next(iter(detection_dataset(small_source, "train", ANCHORS, cfg, training=True, seed=0)))
    assert x.shape == (4, 32, 32, 3) and x.dtype == tf.float32
    assert y.shape == (4, ANCHORS.num_anchors, 5) and y.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and 1.5 < float(tf.reduce_max(x)) <= 255.0


def test_targets_made_in_the_pipeline_equal_encode_targets(small_source):
    from pipeline.preprocess import preprocess_image

    ds = detection_dataset(small_source, "test", ANCHORS, DetectionPipelineConfig(batch_size=6), training=False)
    x, y = next(iter(ds))
    anchors = generate_anchors(ANCHORS)
    for i, ex in enumerate(small_source.examples("test")):
        expected = pack_targets(*encode_targets(ex["boxes"], ex["labels"], anchors))
        np.testing.assert_allclose(y[i], expected, atol=1e-6)
        np.testing.assert_array_equal(x[i], tf.cast(preprocess_image(ex["image"], 32), tf.float32))
    positives = tf.reduce_sum(tf.cast(y[..., 4] > 0, tf.int32), axis=1).numpy()
    assert (positives[:5] >= 1).all() and positives[5] == 0, positives  # every object has a positive anchor


def test_background_images_are_kept_as_all_background(small_source):
    x, y = next(iter(detection_dataset(small_source, "test", ANCHORS, DetectionPipelineConfig(batch_size=8),
                                       training=True, seed=3)))
    assert len(x) == 6  # 5 with an object + 1 background; nothing dropped
    positives = tf.reduce_sum(tf.cast(y[..., 4] > 0, tf.int32), axis=1).numpy()
    assert (positives == 0).sum() == 1, positives  # the background image, and only it


def test_eval_batches_keep_padded_ground_truth(small_source):
    batch = next(iter(detection_eval_dataset(small_source, "test", 32, batch_size=6)))
    assert batch["image"].shape == (6, 32, 32, 3) and batch["boxes"].shape == (6, 1, 4)
    gts = ground_truth(batch)
    assert [len(g["labels"]) for g in gts] == [1, 1, 1, 1, 1, 0]
    np.testing.assert_allclose(gts[2]["boxes"][0], [0.3, 0.2, 0.66, 0.7], atol=1e-6)
    assert gts[4]["labels"].tolist() == [1] and not gts[0]["difficult"].any()


def test_flip_mirrors_boxes_by_hand():
    np.testing.assert_allclose(flip_boxes([[0.1, 0.2, 0.5, 0.3], [0.0, 0.0, 1.0, 1.0]]),
                               [[0.1, 0.7, 0.5, 0.8], [0.0, 0.0, 1.0, 1.0]], atol=1e-7)


def test_window_keeps_boxes_whose_centre_is_inside_and_clips_them():
    boxes = [[0.3, 0.3, 0.5, 0.5],   # inside -> moved and scaled 2x
             [0.0, 0.0, 0.3, 0.3],   # centre (0.15, 0.15) outside -> dropped
             [0.4, 0.6, 0.6, 0.8],   # centre x 0.7 inside, right edge cut -> clipped to 1
             [0.4, 0.6, 0.6, 0.9]]   # centre x 0.75 on the window edge -> dropped
    kept, labels = boxes_in_window(boxes, [0, 1, 2, 3], [0.25, 0.25, 0.75, 0.75])
    np.testing.assert_allclose(kept, [[0.1, 0.1, 0.5, 0.5], [0.3, 0.7, 0.7, 1.0]], atol=1e-6)
    assert labels.numpy().tolist() == [0, 2]
    kept, labels = boxes_in_window(boxes[:1], [0], [-0.5, -0.5, 1.5, 1.5])  # zoom-out: 2x smaller
    np.testing.assert_allclose(kept, [[0.4, 0.4, 0.5, 0.5]], atol=1e-6)


def _bright_box(image: np.ndarray, size: int) -> list[float]:
    """Normalized box of the pixels brighter than mid-grey."""
    rows = np.where((np.asarray(image)[..., 0] > 127).any(axis=1))[0]
    cols = np.where((np.asarray(image)[..., 0] > 127).any(axis=0))[0]
    return [rows[0] / size, cols[0] / size, (rows[-1] + 1) / size, (cols[-1] + 1) / size]


def test_crop_moves_pixels_exactly_as_the_boxes():
    box = [6 / 16, 4 / 16, 10 / 16, 8 / 16]
    image = rectangle_image(16, box)
    window = [0.25, 0.25, 0.75, 0.75]
    out = resample_window(image, window, 16)
    moved, _ = boxes_in_window([box], [0], window)
    np.testing.assert_allclose(moved[0], [0.25, 0.0, 0.75, 0.5], atol=1e-6)  # worked out by hand
    assert _bright_box(out, 16) == pytest.approx(moved[0].numpy().tolist())


def test_zoom_out_fills_with_the_mean_colour_and_keeps_boxes_consistent():
    box = [0.25, 0.25, 0.75, 0.75]
    image = rectangle_image(16, box)
    out = resample_window(image, [-0.5, -0.5, 1.5, 1.5], 16).numpy()
    np.testing.assert_allclose(out[0, 0], image.reshape(-1, 3).mean(axis=0), atol=1e-3)  # border: mean colour
    moved, _ = boxes_in_window([box], [0], [-0.5, -0.5, 1.5, 1.5])
    np.testing.assert_allclose(moved[0], [0.375, 0.375, 0.625, 0.625], atol=1e-6)
    assert _bright_box(out, 16) == pytest.approx(moved[0].numpy().tolist())


@pytest.mark.parametrize("seed", range(6))
def test_random_augmentation_keeps_pixels_and_boxes_together(seed):
    box = [0.25, 0.125, 0.625, 0.5]
    image = rectangle_image(32, box)
    cfg = DetectionAugmentConfig(crop_prob=0.5, min_crop=0.7, zoom_out_prob=0.5, max_zoom_out=1.5,
                                 brightness=0.0, contrast=0.0, saturation=0.0)
    out, boxes, labels = augment_example(image, [box], [1], tf.constant([seed, 7], tf.int64), cfg)
    if len(labels):  # the centre stayed inside: the kept box bounds the bright pixels (up to a pixel)
        assert labels.numpy().tolist() == [1]
        np.testing.assert_allclose(_bright_box(out.numpy(), 32), boxes[0], atol=1.5 / 32)


def test_no_augment_config_is_disabled():
    assert not NO_AUGMENT.enabled and DetectionAugmentConfig().enabled
    with pytest.raises(ValueError, match="min_crop"):
        DetectionAugmentConfig(min_crop=0.0)
