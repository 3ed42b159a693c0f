import numpy as np
import pytest

from pipeline.sources import shapes_render
from pipeline.sources.shapes_builder import make_builder, render_example, shapes_config


def test_same_seed_same_pixels_and_other_seed_differs():
    cfg = shapes_config("classify", seed=3, image_size=32)
    a = render_example(cfg.variant, "train", 5)
    b = render_example(cfg.variant, "train", 5)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["label"] == b["label"]
    other = render_example(shapes_config("classify", seed=4, image_size=32).variant, "train", 5)
    assert not np.array_equal(a["image"], other["image"])
    # splits are different streams under the same seed
    assert not np.array_equal(a["image"], render_example(cfg.variant, "test", 5)["image"])


def test_builder_prepares_offline_with_splits_and_features(data_dir):
    cfg = shapes_config("classify", seed=1, image_size=24, train=30, validation=10, test=12)
    builder = make_builder(cfg, data_dir=str(data_dir))
    builder.download_and_prepare()
    info = builder.info
    assert {s: info.splits[s].num_examples for s in ("train", "validation", "test")} == \
        {"train": 30, "validation": 10, "test": 12}
    assert info.features["label"].names == list(shapes_render.SHAPE_NAMES)
    assert info.supervised_keys == ("image", "label")
    ex = next(iter(builder.as_dataset(split="train").take(1)))
    assert ex["image"].shape == (24, 24, 3) and ex["image"].dtype.name == "uint8"
    # what was stored is exactly what the renderer makes for (seed, split, index)
    stored = sorted(
        (int(e["label"]), e["image"].numpy().tobytes()) for e in builder.as_dataset(split="validation")
    )
    expected = sorted(
        (r["label"], r["image"].tobytes()) for r in (render_example(cfg.variant, "validation", i) for i in range(10))
    )
    assert stored == expected
    # prepared once, then reused: a second builder finds the data without regenerating
    again = make_builder(cfg, data_dir=str(data_dir))
    assert again.is_prepared()


def test_every_class_appears_and_images_vary():
    v = shapes_config("classify", image_size=32).variant
    examples = [render_example(v, "train", i) for i in range(120)]
    labels = {e["label"] for e in examples}
    assert labels == set(range(len(shapes_render.SHAPE_NAMES)))
    means = np.array([e["image"].mean() for e in examples])
    assert means.std() > 10  # colours and backgrounds vary, not one template


def test_detection_variant_boxes_are_tight_normalized_and_inside():
    v = shapes_config("detect", image_size=96).variant
    total = 0
    for i in range(40):
        ex = render_example(v, "train", i)
        boxes, labels = ex["objects"]["bbox"], ex["objects"]["label"]
        assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
        total += len(labels)
        if len(boxes):
            assert (boxes >= 0).all() and (boxes <= 1).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert total > 40  # several objects per image on average


def test_box_is_tight_around_visible_pixels():
    mask = np.zeros((10, 10), np.float32)
    mask[2:6, 3:8] = 1.0
    mask[1, 5] = 0.2  # faint anti-aliased edge: below the visibility threshold
    np.testing.assert_allclose(shapes_render._mask_box(mask), [0.2, 0.3, 0.6, 0.8])


def test_unknown_task_rejected():
    with pytest.raises(ValueError, match="unknown shapes task"):
        shapes_config("segment")
