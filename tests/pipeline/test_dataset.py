from dataclasses import replace

import numpy as np
import tensorflow as tf
from PIL import Image

from pipeline.augment import AugmentConfig, augment_batch
from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.preprocess import preprocess_image
from pipeline.sources.specs import open_source


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_have_model_shapes_and_dtypes(tiny_shapes):
    cfg = PipelineConfig(image_size=40, batch_size=16)
    x, y = next(iter(classification_dataset(tiny_shapes, "train", cfg, training=True, seed=0)))
    assert x.shape == (16, 40, 40, 3) and x.dtype == tf.float32
    assert y.shape == (16,) and y.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255.0
    assert float(tf.reduce_max(x)) > 1.5  # raw 0..255 range, not pre-scaled


def test_training_stream_is_deterministic_under_a_seed(tiny_shapes):
    cfg = PipelineConfig(image_size=32, batch_size=32)
    a = _collect(classification_dataset(tiny_shapes, "train", cfg, training=True, seed=7))
    b = _collect(classification_dataset(tiny_shapes, "train", cfg, training=True, seed=7))
    c = _collect(classification_dataset(tiny_shapes, "train", cfg, training=True, seed=8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])  # another seed shuffles differently
    assert sorted(a[1]) == sorted(c[1])  # ... over the same examples


def test_epochs_reshuffle_but_eval_keeps_order(tiny_shapes):
    cfg = PipelineConfig(image_size=32, batch_size=64)
    train = classification_dataset(tiny_shapes, "train", cfg, training=True, seed=1)
    first, second = _collect(train)[1], _collect(train)[1]
    assert not np.array_equal(first, second)
    ev = classification_dataset(tiny_shapes, "test", cfg, training=False)
    np.testing.assert_array_equal(_collect(ev)[0], _collect(ev)[0])
    raw = [int(e["label"]) for e in tiny_shapes.examples("test")]
    np.testing.assert_array_equal(_collect(ev)[1], raw)


def test_eval_pixels_are_exactly_the_shared_preprocessing(tiny_shapes):
    cfg = PipelineConfig(image_size=20, batch_size=8)
    x, _ = next(iter(classification_dataset(tiny_shapes, "test", cfg, training=False)))
    first = next(iter(tiny_shapes.examples("test")))["image"]
    np.testing.assert_array_equal(x[0].numpy(), preprocess_image(first, 20).numpy().astype(np.float32))


def test_preprocess_resizes_and_keeps_range():
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, 15:] = 255
    out = preprocess_image(image, 12).numpy()
    assert out.shape == (12, 12, 3) and out.dtype == np.uint8
    assert out[:, 0].max() == 0 and out[:, -1].min() == 255
    same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(preprocess_image(same, 4).numpy(), same)  # no-op at the right size


def test_augmentation_changes_pixels_within_range_and_is_seeded():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (8, 16, 16, 3)), tf.float32)
    seed = tf.constant([1, 2], tf.int64)
    cfg = AugmentConfig()
    a = augment_batch(images, seed, cfg).numpy()
    b = augment_batch(images, seed, cfg).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 255
    assert np.abs(a - images.numpy()).mean() > 1.0
    off = AugmentConfig(flip=False, zoom=0, brightness=0, contrast=0)
    np.testing.assert_allclose(augment_batch(images, seed, off).numpy(), images.numpy())


def test_flip_only_mirrors_images():
    image = np.zeros((1, 4, 4, 3), np.float32)
    image[0, :, 0] = 200.0
    cfg = AugmentConfig(flip=True, zoom=0, brightness=0, contrast=0)
    outs = [augment_batch(tf.constant(image), tf.constant([s, 0], tf.int64), cfg).numpy() for s in range(20)]
    flipped = [o for o in outs if o[0, :, -1].max() > 199.9]
    assert flipped and len(flipped) < len(outs)  # sometimes, not always
    np.testing.assert_allclose(flipped[0][0], image[0, :, ::-1], atol=1e-3)


def test_contrast_keeps_each_image_mean_and_brightness_shifts_it():
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(100, 150, (6, 8, 8, 3)), tf.float32)  # far from the clip limits
    seed = tf.constant([3, 4], tf.int64)
    contrast = augment_batch(images, seed, AugmentConfig(flip=False, zoom=0, brightness=0, contrast=0.3)).numpy()
    np.testing.assert_allclose(contrast.mean(axis=(1, 2, 3)), images.numpy().mean(axis=(1, 2, 3)), rtol=1e-5)
    assert not np.allclose(contrast, images.numpy())
    bright = augment_batch(images, seed, AugmentConfig(flip=False, zoom=0, brightness=0.1, contrast=0)).numpy()
    shift = bright - images.numpy()
    np.testing.assert_allclose(shift, shift[:, :1, :1, :1] * np.ones_like(shift), atol=1e-3)  # one offset per image
    assert np.abs(shift).max() <= 0.1 * 255 + 1e-3


def test_preprocess_is_the_same_one_by_one_batched_and_at_the_same_size():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 30, 40, 3), dtype=np.uint8)
    batched = preprocess_image(images, 16).numpy()
    for image, out in zip(images, batched):
        np.testing.assert_array_equal(preprocess_image(image, 16).numpy(), out)
    # Inside tf.data the size is unknown when traced: the resize runs, and is an exact identity.
    ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    same = [x.numpy() for x in ds.map(lambda x: preprocess_image(x[:16, :16], 16))]
    np.testing.assert_array_equal(np.stack(same), images[:, :16, :16])


def test_a_split_held_in_memory_batches_like_the_cached_path(tmp_path):
    """folder: with the input size keeps the pixels in memory and batches by gathering shuffled
    indices; the order and pixels are those of the cache -> shuffle -> batch path, seed for seed."""
    rng = np.random.default_rng(4)
    for c in ("a", "b", "c"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(tmp_path / "d" / c / f"{i}.png")
    src = open_source(f"folder:{tmp_path / 'd'}", data_dir=tmp_path / "data", image_size=8)
    assert src.resized_arrays("train", 8)[0].shape == (24, 8, 8, 3)
    assert src.resized_arrays("train", 9)[0].shape == (24, 9, 9, 3)  # another size: prepared when asked
    cached = replace(src, load_arrays=None)
    cfg = PipelineConfig(image_size=8, batch_size=5, shuffle_buffer=7, augment=AugmentConfig(flip=False, zoom=0,
                                                                                             brightness=0, contrast=0))
    for training in (True, False):
        fast = classification_dataset(src, "train", cfg, training=training, seed=3)
        slow = classification_dataset(cached, "train", cfg, training=training, seed=3)
        for _ in range(2):  # two epochs: reshuffled alike
            a, b = _collect(fast), _collect(slow)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
