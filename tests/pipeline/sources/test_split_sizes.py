"""tfds split sizes are the number of examples a split yields, or a ConfigError; never a -1.

The sizes become steps per epoch, trial subsets and metrics.json, so a wrong one is a silent bug.
"""
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from common.errors import ConfigError
from pipeline.sources.shapes_builder import make_builder, shapes_config
from pipeline.sources.schema import SPLITS
from pipeline.sources.specs import _split_sizes, open_source


def _count(ds: tf.data.Dataset) -> int:
    return sum(1 for _ in ds)


def test_mocked_sliced_splits_have_the_sizes_they_yield(tmp_path):
    # mock_data without metadata files lists no splits; mnist's train is sliced into train[:90%] and
    # train[90%:]. These sizes used to be -1.
    with tfds.testing.mock_data(num_examples=12):
        src = open_source("tfds:mnist", data_dir=tmp_path)
        yielded = {split: _count(src.examples(split)) for split in SPLITS}
    assert src.split_sizes == yielded
    assert all(n == 12 for n in yielded.values())  # the mock ignores slicing: every split yields 12


def test_mocked_detection_splits_have_the_sizes_they_yield(tmp_path):
    with tfds.testing.mock_data(num_examples=3):
        src = open_source("tfds:coco/2017", "detect", data_dir=tmp_path)  # test carved: train[90%:]
        assert src.split_sizes == {split: _count(src.examples(split)) for split in SPLITS}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A real prepared tfds builder (the built-in shapes): 20 train, 4 validation, 4 test examples."""
    config = shapes_config("classify", seed=3, image_size=16, train=20, validation=4, test=4)
    builder = make_builder(config, data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return builder


def test_sliced_split_sizes_come_from_the_metadata(prepared):
    splits = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
    sizes = _split_sizes("tfds:shapes", prepared, splits)
    assert sizes == {"train": 18, "validation": 2, "test": 4}
    assert sizes == {ours: _count(prepared.as_dataset(split=theirs)) for ours, theirs in splits.items()}


def test_an_unresolvable_split_is_an_error_naming_it(prepared):
    with pytest.raises(ConfigError, match=r"DATA=tfds:shapes: the size of split 'train\[:abc\]' \(our train\)"):
        _split_sizes("tfds:shapes", prepared, {"train": "train[:abc]"})


def test_a_split_that_never_ends_is_an_error_naming_it(tmp_path):
    def endless(self, split, **kwargs):
        one = {"image": tf.zeros([28, 28, 1], tf.uint8), "label": tf.constant(1, tf.int64)}
        return tf.data.Dataset.from_tensors(one).repeat()

    with tfds.testing.mock_data(as_dataset_fn=endless):
        with pytest.raises(ConfigError, match=r"DATA=tfds:mnist: the size of split 'train\[:90%\]'.*never ends"):
            open_source("tfds:mnist", data_dir=tmp_path)
