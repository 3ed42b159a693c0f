"""Predict with a detector: the Label / Score / box table and the PNG, from model.keras and from a .tflite."""
import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from pipeline.evaluation.predict import detection_rows, format_detection_table, predict_detections
from tasks.detect import evaluate_detection_run, load_detector
from pipeline.sources.images import load_rgb


def _iou(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _check_prediction(rows, out_png, label_names, truth):
    """The best detection lies on a true object (IoU > 0.5) and names that object's class."""
    true_boxes, true_labels = truth
    assert rows, "no detections on an image the detector was trained on"
    scores = [s for _, s, _ in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(name in label_names for name, _, _ in rows)
    name, _, box = rows[0]
    ious = [_iou(box, t) for t in true_boxes]
    best = int(np.argmax(ious))
    assert ious[best] > 0.5, (rows[0], true_boxes)
    assert name == label_names[int(true_labels[best])], (rows[0], true_labels)
    with Image.open(out_png) as png:
        assert png.size[0] > 100 and png.mode in ("RGB", "RGBA")


@pytest.fixture(scope="module")
def sample(trained_detector, overfit_source):
    """The run's first sample image and its (true boxes, true labels) (samples are the first test images)."""
    run, _, _ = trained_detector
    path = sorted((run / "samples").glob("*.png"))[0]
    ex = next(iter(overfit_source.examples("test")))
    np.testing.assert_array_equal(load_rgb(path), ex["image"].numpy())
    return path, (ex["boxes"].numpy(), ex["labels"].numpy())


@pytest.mark.heavy
def test_predict_with_the_run_model_prints_a_table_and_writes_a_png(trained_detector, sample, tmp_path):
    run, _, _ = trained_detector
    detector = load_detector(run)
    rows = predict_detections(detector, sample[0], tmp_path / "keras.png")
    _check_prediction(rows, tmp_path / "keras.png", detector.label_names, sample[1])
    table = format_detection_table(rows).splitlines()
    assert table[0].split() == ["Label", "Score", "ymin", "xmin", "ymax", "xmax"]
    assert len(table) == 2 + len(rows) and table[2].split()[0] == rows[0][0]


@pytest.mark.heavy
def test_predict_with_the_exported_tflite(exported, sample, tmp_path):
    run, results = exported
    detector = load_detector(None, results["int8"]["path"])
    assert detector.label_names == (run / "labels.txt").read_text().split()  # from the embedded metadata
    rows = predict_detections(detector, sample[0], tmp_path / "tflite.png")
    _check_prediction(rows, tmp_path / "tflite.png", detector.label_names, sample[1])


def test_table_by_hand_and_empty_table():
    rows = detection_rows({"boxes": np.array([[0.1, 0.2, 0.3, 0.4]]), "classes": np.array([1]),
                           "scores": np.array([0.875])}, ["cat", "dog"])
    assert rows == [("dog", 0.875, pytest.approx((0.1, 0.2, 0.3, 0.4)))]
    assert format_detection_table(rows).splitlines()[2].split() == ["dog", "0.875", "0.100", "0.200", "0.300", "0.400"]
    assert "(no detections)" in format_detection_table([])


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_detector(None, tmp_path / "nope.tflite")
    with pytest.raises(UserError, match="run folder not found"):
        load_detector(tmp_path / "no-run")


@pytest.mark.heavy
def test_evaluate_run_reproduces_training_metrics_for_keras_and_scores_the_tflite(exported, trained_detector, data_dir):
    run, results = exported
    _, metrics, _ = trained_detector
    # The run's DATA= spec, split "train": the 8 images its test metrics were computed on.
    keras = evaluate_detection_run(run, data_dir=data_dir, split="train")
    assert keras["map"] == pytest.approx(metrics["test"]["map"], abs=1e-6)
    assert keras["model"].endswith("model.keras") and keras["images"] == 8
    tflite = evaluate_detection_run(run, model_path=results["float32"]["path"], data_dir=data_dir, split="train")
    assert tflite["map50"] == pytest.approx(keras["map50"], abs=0.05)
