"""COCO metrics from normalized boxes, with numbers worked out by hand."""
import numpy as np
import pytest

from pipeline.evaluation.coco_eval import coco_metrics

NAMES = ("cat", "dog")
GT = [{"boxes": np.array([[0.0, 0.0, 0.4, 0.4]], np.float32), "labels": np.array([0])},
      {"boxes": np.array([[0.5, 0.5, 0.9, 0.8], [0.1, 0.1, 0.3, 0.3]], np.float32), "labels": np.array([1, 0])}]


def _pred(boxes, classes, scores):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "classes": np.asarray(classes),
            "scores": np.asarray(scores, np.float32)}


def _perfect():
    return [_pred(g["boxes"], g["labels"], np.full(len(g["labels"]), 0.9)) for g in GT]


def test_predictions_equal_to_ground_truth_score_one():
    m = coco_metrics(GT, _perfect(), NAMES)
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0) and m["map75"] == pytest.approx(1.0)
    assert m["per_class"]["cat"] == {"ap": pytest.approx(1.0), "ap50": pytest.approx(1.0), "objects": 2}
    assert m["images"] == 2 and m["objects"] == 3 and m["detections"] == 3


def test_a_shifted_box_matches_only_the_low_iou_thresholds():
    # One 0.4-wide square moved right by 0.09: IoU = 0.31 / 0.49 = 0.633, a match at
    # IoU thresholds .50, .55, .60 and a miss at .65 ... .95 -> AP = 3/10.
    gt = [{"boxes": np.array([[0.0, 0.0, 0.4, 0.4]]), "labels": np.array([0])}]
    m = coco_metrics(gt, [_pred([[0.0, 0.09, 0.4, 0.49]], [0], [0.8])], NAMES)
    assert m["map50"] == pytest.approx(1.0) and m["map75"] == pytest.approx(0.0)
    assert m["map"] == pytest.approx(0.3)
    assert m["per_class"]["dog"]["ap"] is None  # no dog in the ground truth: left out of the mean


def test_a_false_positive_ranked_first_halves_precision():
    # Detections: a wrong box (score .9), then the right one (.5). At recall 1 precision is 1/2;
    # COCO's interpolated precision is 0.5 at every recall point -> AP 0.5.
    gt = [{"boxes": np.array([[0.0, 0.0, 0.4, 0.4]]), "labels": np.array([0])}]
    m = coco_metrics(gt, [_pred([[0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 0.4, 0.4]], [0, 0], [0.9, 0.5])], NAMES)
    assert m["map"] == pytest.approx(0.5) and m["map50"] == pytest.approx(0.5)


def test_wrong_class_and_no_predictions_score_zero():
    wrong = [_pred(g["boxes"], 1 - g["labels"], np.full(len(g["labels"]), 0.9)) for g in GT]
    assert coco_metrics(GT, wrong, NAMES)["map50"] == pytest.approx(0.0)
    empty = [_pred(np.zeros((0, 4)), [], []) for _ in GT]
    m = coco_metrics(GT, empty, NAMES)
    assert m["map"] == 0.0 and m["per_class"]["cat"]["ap"] == 0.0 and m["detections"] == 0


def test_difficult_objects_are_ignored_not_missed():
    gt = [{"boxes": np.array([[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]), "labels": np.array([0, 0]),
           "difficult": np.array([False, True])}]
    found_easy = [_pred([[0.0, 0.0, 0.4, 0.4]], [0], [0.9])]
    found_both = [_pred([[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], [0, 0], [0.9, 0.95])]
    assert coco_metrics(gt, found_easy, NAMES)["map"] == pytest.approx(1.0)  # missing it costs nothing
    assert coco_metrics(gt, found_both, NAMES)["map"] == pytest.approx(1.0)  # finding it is no false positive
    plain = [{**gt[0], "difficult": np.array([False, False])}]
    assert coco_metrics(plain, found_easy, NAMES)["map"] < 0.6  # without the flag it is a miss
