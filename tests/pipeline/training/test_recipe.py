"""The training recipe's choices from the data (pipeline.training.recipe)."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from pipeline.sources.schema import Source
from pipeline.training.recipe import (MAX_CNN_SIDE, MIN_OBJECT_PX, DataProfile, class_weights, classifier_image_size,
                                      detector_input_size, pooling_floor, profile_source)


def profile(sides=(), counts=(), boxes=None):
    sides = np.asarray(sides, np.int64).reshape(-1, 2)
    return DataProfile(train_images=len(sides), sampled=len(sides), sides=sides, class_counts=tuple(counts),
                       boxes=np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32))


def test_tiny_images_are_not_upsampled_beyond_what_pooling_needs():
    side, why = classifier_image_size(profile([(8, 8)] * 10), model="cnn", num_pools=3, pool_stride=2)
    assert side == pooling_floor(3, 2) == 32  # 4x, not the old fixed 64 px (8x)
    assert "8 px" in why


def test_the_native_side_is_kept_and_large_photos_are_capped():
    assert classifier_image_size(profile([(28, 28)] * 5), model="cnn")[0] == 32  # a multiple of 8
    assert classifier_image_size(profile([(240, 320)] * 5), model="cnn")[0] == MAX_CNN_SIDE
    assert classifier_image_size(profile([(8, 8)] * 5), model="cnn", num_pools=4)[0] == 64
    assert classifier_image_size(profile([(8, 8)] * 5), model="cnn", num_pools=2)[0] == 16


def test_mobilenet_takes_an_imagenet_size():
    assert classifier_image_size(profile([(8, 8)] * 5), model="mobilenetv2")[0] == 96
    assert classifier_image_size(profile([(120, 150)] * 5), model="mobilenetv2")[0] == 128


def test_the_detector_input_makes_small_objects_cover_enough_pixels():
    # Objects of 0.05 of the side in 512 px photos: 16 px of them need a 320 px input.
    boxes = [[0.1, 0.1, 0.15, 0.15]] * 20 + [[0.2, 0.2, 0.6, 0.6]] * 5
    side, why = detector_input_size(profile([(512, 512)] * 25, boxes=boxes))
    assert side == 320 and side * 0.05 >= MIN_OBJECT_PX
    # Large objects keep the smallest input; small photos are never upsampled past their own side.
    assert detector_input_size(profile([(512, 512)] * 5, boxes=[[0, 0, 0.5, 0.5]] * 5))[0] == 128
    assert detector_input_size(profile([(200, 200)] * 20, boxes=[[0.1, 0.1, 0.15, 0.15]] * 20))[0] == 224


def test_a_time_budget_lowers_the_detector_input_to_afford_its_steps_but_keeps_small_objects_visible():
    boxes = [[0.1, 0.1, 0.15, 0.15]] * 20 + [[0.2, 0.2, 0.6, 0.6]] * 5  # the smallest tenth: 0.05 of the side
    data = profile([(512, 512)] * 25, boxes=boxes)

    def slow_machine(side):  # a step costs its pixels: 900 steps at 320 px, 1,836 at 224, 2,500 at 192
        return int(900 * (320 / side) ** 2)

    side, why = detector_input_size(data, slow_machine, wanted_steps=2000)
    assert side == 192 and "lowered to 192 px for the time budget" in why and "900 steps at 320 px" in why
    # a machine that affords the steps keeps the side the objects want
    assert detector_input_size(data, lambda s: 10 ** 6, wanted_steps=2000)[0] == 320
    # however slow the machine, the smallest tenth keeps a stride-8 cell: 0.05 x 160 px = 8 px
    side, why = detector_input_size(data, lambda s: 1, wanted_steps=2000)
    assert side == 160 and side * 0.05 >= 8 and "keeps 8 px" in why
    assert detector_input_size(data)[0] == 320  # no budget to hold to: nothing lowered


def test_class_weights_switch_on_for_imbalanced_classes_only():
    weights, why = class_weights(profile(counts=(400, 100, 50)), "auto")
    assert weights is not None and "8.0x" in why
    # inverse frequency, normalised so a balanced set would get 1.0 each
    assert weights[2] / weights[0] == pytest.approx(8.0)
    assert sum(weights[i] * c for i, c in enumerate((400, 100, 50))) == pytest.approx(550)
    assert class_weights(profile(counts=(100, 90, 40)), "auto")[0] is None  # 2.5x: balanced enough
    assert class_weights(profile(counts=(400, 100, 50)), "none")[0] is None
    with pytest.raises(ValueError):
        class_weights(profile(counts=(1, 2)), "sometimes")


def test_profile_reads_sizes_labels_and_boxes_from_a_source():
    images = [np.zeros((h, w, 3), np.uint8) for h, w in ((8, 10), (12, 12), (20, 16))]

    def split(name):
        return tf.data.Dataset.from_generator(
            lambda: ({"image": im, "label": np.int32(i % 2)} for i, im in enumerate(images)),
            output_signature={"image": tf.TensorSpec([None, None, 3], tf.uint8), "label": tf.TensorSpec([], tf.int32)})

    source = Source(name="x", task="classify", label_names=("a", "b"), split_sizes={"train": 3}, load_split=split)
    p = profile_source(source)
    assert p.sampled == 3 and p.native_side == 12 and p.class_counts == (2, 1)
    counted = Source(name="x", task="classify", label_names=("a", "b"), split_sizes={"train": 3}, load_split=split,
                     train_label_counts=(5, 7))
    assert profile_source(counted).class_counts == (5, 7)  # the source's own counts win over the sample


def test_a_folder_is_profiled_from_its_headers_without_decoding_an_image(tmp_path):
    from PIL import Image

    from pipeline.sources.specs import open_source

    for c, (w, h) in (("a", (30, 20)), ("b", (40, 24))):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (w, h), (i, 0, 0)).save(tmp_path / "f" / c / f"{i}.png")
    source = open_source(f"folder:{tmp_path / 'f'}", data_dir=tmp_path / "data")

    def no_decoding(split):
        raise AssertionError("profile_source decoded images")

    p = profile_source(dataclasses.replace(source, load_split=no_decoding))
    assert p.sampled == p.train_images == sum(p.class_counts) == source.split_sizes["train"]
    assert {tuple(s) for s in p.sides} == {(20, 30), (24, 40)} and p.native_side == 22  # the median
