import pytest
import tensorflow_datasets as tfds

from common.errors import ConfigError, DataError
from pipeline.sources.specs import _tfds_splits, open_source


def test_tfds_by_name_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        src = open_source("tfds:mnist", data_dir=tmp_path)
        assert src.label_names == tuple(str(i) for i in range(10))
        ex = next(iter(src.examples("train")))
        # grayscale is converted to the schema's RGB
        assert ex["image"].shape == (28, 28, 3) and ex["image"].dtype.name == "uint8"
        assert ex["label"].dtype.name == "int32"
        assert len(list(src.examples("test"))) > 0


def test_missing_tfds_splits_are_carved_from_train():
    assert _tfds_splits(["train"]) == {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}
    assert _tfds_splits(["train", "test"]) == {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
    assert _tfds_splits(["test", "train", "validation"]) == {"train": "train", "validation": "validation", "test": "test"}
    with pytest.raises(ConfigError, match="no 'train' split"):
        _tfds_splits(["test"])


def test_tfds_flowers_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        src = open_source("tfds:tf_flowers", data_dir=tmp_path)
        assert src.label_names == ("dandelion", "daisy", "tulips", "sunflowers", "roses")
        ex = next(iter(src.examples("validation")))
        assert ex["image"].shape[-1] == 3


def test_tfds_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no dataset 'no_such_dataset_xyz'"):
        open_source("tfds:no_such_dataset_xyz", data_dir=tmp_path)


def test_shapes_spec_options(data_dir):
    src = open_source("shapes:train=14,validation=7,test=7,size=20,seed=2", data_dir=data_dir)
    assert src.split_sizes == {"train": 14, "validation": 7, "test": 7}
    assert next(iter(src.examples("train")))["image"].shape == (20, 20, 3)
    with pytest.raises(ConfigError, match="unknown option 'colour=red'"):
        open_source("shapes:colour=red", data_dir=data_dir)
    with pytest.raises(ConfigError, match="needs a int"):
        open_source("shapes:seed=abc", data_dir=data_dir)


def test_detection_schema_from_shapes(data_dir):
    src = open_source("shapes:train=6,validation=2,test=2,size=64", "detect", data_dir=data_dir)
    ex = next(iter(src.examples("train")))
    assert set(ex) == {"image", "boxes", "labels"}
    assert ex["boxes"].dtype.name == "float32" and ex["boxes"].shape[-1] == 4
    assert ex["labels"].dtype.name == "int32" and ex["labels"].shape[0] == ex["boxes"].shape[0]


@pytest.mark.parametrize("spec", ["imagenet", "ftp:foo", "tfds", "folderx:/tmp"])
def test_unknown_forms_list_the_valid_ones(spec):
    with pytest.raises(ConfigError, match="unknown data source.*folder:PATH"):
        open_source(spec)


def test_unknown_task_and_missing_annotation_paths(tmp_path):
    with pytest.raises(ConfigError, match="TASK=segment"):
        open_source("shapes", "segment")
    with pytest.raises(DataError, match="not found"):
        open_source(f"voc:{tmp_path / 'missing'}", "detect")
