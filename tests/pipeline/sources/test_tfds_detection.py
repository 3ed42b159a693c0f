"""tfds detection datasets (voc, coco) through ``tfds.testing.mock_data``: offline, nothing downloaded."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from common.errors import ConfigError
from pipeline.sources.specs import open_source

BOXES = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], np.float32)


def _fixed_examples(flag: str, requested: list):
    """A mocked ``_as_dataset`` yielding two known examples (one a background image), recording splits."""

    def as_dataset(self, split, **kwargs):
        requested.append(str(split))
        examples = [
            {"image": np.full((8, 6, 3), 7, np.uint8),
             "objects": {"bbox": BOXES, "label": np.array([3, 0], np.int64), flag: np.array([False, True])}},
            {"image": np.zeros((5, 4, 3), np.uint8),
             "objects": {"bbox": np.zeros((0, 4), np.float32), "label": np.zeros(0, np.int64), flag: np.zeros(0, bool)}},
        ]
        signature = {"image": tf.TensorSpec([None, None, 3], tf.uint8),
                     "objects": {"bbox": tf.TensorSpec([None, 4], tf.float32),
                                 "label": tf.TensorSpec([None], tf.int64), flag: tf.TensorSpec([None], tf.bool)}}
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)

    return as_dataset


@pytest.mark.parametrize("name,flag,first_names", [
    ("voc/2007", "is_difficult", ("aeroplane", "bicycle", "bird", "boat")),
    ("coco/2017", "is_crowd", None),  # coco's names are written at generation; mocked metadata has ids
])
def test_tfds_detection_known_examples(tmp_path, name, flag, first_names):
    requested = []
    with tfds.testing.mock_data(as_dataset_fn=_fixed_examples(flag, requested)):
        src = open_source(f"tfds:{name}", "detect", data_dir=tmp_path)
        assert src.task == "detect"
        assert len(src.label_names) == (20 if name.startswith("voc") else 80)
        if first_names:
            assert src.label_names[:4] == first_names
        obj, background = list(src.examples("train"))
        assert set(obj) == {"image", "boxes", "labels", "difficult"}
        assert obj["image"].dtype.name == "uint8" and tuple(obj["image"].shape) == (8, 6, 3)
        np.testing.assert_array_equal(obj["boxes"].numpy(), BOXES)  # tfds boxes are already normalized
        assert obj["boxes"].dtype.name == "float32"
        assert obj["labels"].dtype.name == "int32" and obj["labels"].numpy().tolist() == [3, 0]
        assert obj["difficult"].numpy().tolist() == [False, True]
        assert tuple(background["boxes"].shape) == (0, 4) and tuple(background["labels"].shape) == (0,)
        list(src.examples("test"))
    # coco/2017's test images have no boxes, so its test split is carved from train
    assert requested[-1] == ("test" if name.startswith("voc") else "train[90%:]")


@pytest.mark.parametrize("name", ["voc/2007", "coco/2017"])
def test_tfds_detection_random_mock_has_schema_dtypes(tmp_path, name):
    with tfds.testing.mock_data(num_examples=2):
        src = open_source(f"tfds:{name}", "detect", data_dir=tmp_path)
        spec = src.examples("validation").element_spec
    assert spec["image"] == tf.TensorSpec([None, None, 3], tf.uint8)
    assert spec["boxes"] == tf.TensorSpec([None, 4], tf.float32)
    assert spec["labels"] == tf.TensorSpec([None], tf.int32)
    assert spec["difficult"] == tf.TensorSpec([None], tf.bool)


def test_tfds_classification_dataset_is_not_a_detection_source(tmp_path):
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ConfigError, match="mnist is not an object-detection dataset"):
            open_source("tfds:mnist", "detect", data_dir=tmp_path)
