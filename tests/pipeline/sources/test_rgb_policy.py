"""One transparency policy: tfds images with alpha come out as the same bytes a file source gives.

File sources composite through Pillow (images._to_rgb: alpha_composite over white); tfds sources
through TF ops inside their tf.data map (specs._rgb -> images.composite_on_white). Equality is
exact, not within a tolerance: the tensor version reproduces Pillow's integer rounding.
"""
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from pipeline.sources.images import _to_rgb, composite_on_white, load_rgb
from pipeline.sources.specs import _rgb, open_source


def _in_tf_data(image: np.ndarray) -> np.ndarray:
    """``_rgb`` run as the sources run it: traced inside a tf.data map, static channel count."""
    ds = tf.data.Dataset.from_tensors(tf.constant(image)).map(_rgb)
    return next(iter(ds)).numpy()


def test_every_colour_and_alpha_pair_matches_pillow():
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")  # all 65536 pairs
    rgba = np.stack([colour, 255 - colour, colour, alpha], axis=-1).astype(np.uint8)
    expected = np.asarray(_to_rgb(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(composite_on_white(tf.constant(rgba)).numpy(), expected)


def test_random_rgba_image_matches_the_file_source(tmp_path):
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (37, 23, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0      # fully transparent rows: pure white
    rgba[5:10, :, 3] = 255  # opaque rows: the colour unchanged
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    from_file = load_rgb(tmp_path / "a.png")
    from_tensor = _in_tf_data(rgba)
    assert from_tensor.dtype == np.uint8 and from_tensor.shape == (37, 23, 3)
    np.testing.assert_array_equal(from_tensor, from_file)
    assert (from_tensor[:5] == 255).all()
    np.testing.assert_array_equal(from_tensor[5:10], rgba[5:10, :, :3])


def test_gray_with_alpha_matches_the_file_source(tmp_path):
    rng = np.random.default_rng(8)
    la = rng.integers(0, 256, (19, 31, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    from_file = load_rgb(tmp_path / "la.png")
    np.testing.assert_array_equal(_in_tf_data(la), from_file)


def test_gray_and_rgb_pass_through():
    rng = np.random.default_rng(9)
    gray = rng.integers(0, 256, (4, 5, 1), dtype=np.uint8)
    np.testing.assert_array_equal(_in_tf_data(gray), np.repeat(gray, 3, axis=-1))
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_in_tf_data(rgb), rgb)


def test_tfds_classification_source_composites_rgba(tmp_path):
    """Through open_source: a mocked tfds dataset yielding RGBA images gives the file source's bytes."""
    rgba = np.random.default_rng(10).integers(0, 256, (6, 5, 4), dtype=np.uint8)

    def as_dataset(self, split, **kwargs):
        signature = {"image": tf.TensorSpec([None, None, 4], tf.uint8), "label": tf.TensorSpec([], tf.int64)}
        return tf.data.Dataset.from_generator(lambda: iter([{"image": rgba, "label": np.int64(3)}]),
                                              output_signature=signature)

    Image.fromarray(rgba, "RGBA").save(tmp_path / "same.png")
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        ex = next(iter(open_source("tfds:mnist", data_dir=tmp_path / "tfds").examples("train")))
    np.testing.assert_array_equal(ex["image"].numpy(), load_rgb(tmp_path / "same.png"))
