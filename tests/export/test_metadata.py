"""Metadata round-trips, the interpreter ignores it, and MediaPipe's ImageClassifier runs our models."""
from __future__ import annotations

import numpy as np
import pytest

from export.metadata import ImageInput, read_metadata, with_classifier_metadata
from export.runtime import TFLiteClassifier, TFLiteModel

pytestmark = pytest.mark.heavy  # every test here uses the session's trained run and its conversions


def _annotate(model_bytes, labels, size=32):
    return with_classifier_metadata(model_bytes, labels, ImageInput(size=size), name="tiny", description="test",
                                    version="t")


def test_round_trip(converted, export_data):
    labels = export_data.labels
    md = read_metadata(_annotate(converted["int8"], labels))
    assert md.labels == labels
    assert md.mean == (0.0, 0.0, 0.0) and md.std == (1.0, 1.0, 1.0)
    assert md.color_space == "RGB"
    assert md.name == "tiny" and md.version == "t"
    assert md.output_names == ("probability",)


def test_no_metadata_reads_as_none(converted):
    assert read_metadata(converted["float32"]) is None


def test_attaching_twice_replaces(converted):
    once = _annotate(converted["float16"], ["a", "b"])
    twice = _annotate(once, ["c", "d", "e"])
    assert read_metadata(twice).labels == ["c", "d", "e"]


def test_interpreter_output_unchanged_by_metadata(converted, export_data):
    images = export_data.test_images[:4]
    plain = TFLiteModel(converted["int8"]).predict_batch(images)
    annotated = TFLiteModel(_annotate(converted["int8"], export_data.labels)).predict_batch(images)
    np.testing.assert_array_equal(plain, annotated)


def test_classifier_reads_embedded_labels_without_labels_file(converted, export_data, tmp_path):
    path = tmp_path / "alone" / "m.tflite"
    path.parent.mkdir()
    path.write_bytes(_annotate(converted["int8"], export_data.labels))
    classifier = TFLiteClassifier(path)
    assert classifier.label_names == export_data.labels and classifier.image_size == 32


def test_classifier_falls_back_to_labels_file(converted, tmp_path):
    (tmp_path / "labels.txt").write_text("x\ny\n")
    path = tmp_path / "m.tflite"
    path.write_bytes(converted["float32"])
    assert TFLiteClassifier(path).label_names == ["x", "y"]


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_mediapipe_image_classifier_agrees_with_predict(converted, export_data, tmp_path, mode):
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    path = tmp_path / f"model_{mode}.tflite"
    path.write_bytes(_annotate(converted[mode], export_data.labels))
    ours = TFLiteClassifier(path)
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    images = export_data.test_images[:12].astype(np.uint8)  # already 32x32: no resize differences
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            top = result.classifications[0].categories[0]
            probs = ours.predict_image(image)
            assert top.category_name == ours.label_names[int(probs.argmax())]
            assert top.score == pytest.approx(float(probs.max()), abs=0.02)
