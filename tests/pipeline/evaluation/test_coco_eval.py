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


# One object of each size at a 100 px input: sides 10, 30 and 60 px
SIZED = [{"boxes": np.array([[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.5, 0.5], [0.4, 0.4, 1.0, 1.0]], np.float32),
          "labels": np.array([0, 0, 1])}]


def test_by_size_bins_objects_by_their_side_at_the_input_and_scores_each_bin():
    found_two = [_pred([[0.2, 0.2, 0.5, 0.5], [0.4, 0.4, 1.0, 1.0]], [0, 1], [0.9, 0.8])]  # the small one missed
    m = coco_metrics(SIZED, found_two, NAMES, input_side=100)
    small, medium, large = (m["by_size"][k] for k in ("small", "medium", "large"))
    assert [small["objects"], medium["objects"], large["objects"]] == [1, 1, 1]
    assert small["ap50"] == pytest.approx(0.0) and small["recall50"] == pytest.approx(0.0)
    assert medium["ap50"] == pytest.approx(1.0) and large["ap"] == pytest.approx(1.0) and large["recall50"] == 1.0
    assert (small["max_px"], medium["max_px"], large["max_px"]) == (16, 48, None)
    # the overall figures do not depend on the bins: the cat class found one of two objects
    assert m["map50"] == pytest.approx(coco_metrics(SIZED, found_two, NAMES)["map50"])
    assert "by_size" not in coco_metrics(SIZED, found_two, NAMES)


def test_a_larger_input_moves_the_same_object_to_a_larger_bin():
    # at 400 px the 0.1-wide box is 40 px (medium) and the 0.3-wide one 120 px (large)
    m = coco_metrics(SIZED, [_pred([], [], [])], NAMES, input_side=400)
    assert [m["by_size"][k]["objects"] for k in ("small", "medium", "large")] == [0, 1, 2]
    assert m["by_size"]["small"]["ap50"] is None and m["by_size"]["large"]["recall50"] == pytest.approx(0.0)


def test_a_small_detection_that_is_wrong_costs_only_the_small_bin():
    boxes = [[0.2, 0.2, 0.5, 0.5], [0.4, 0.4, 1.0, 1.0], [0.0, 0.0, 0.1, 0.1], [0.8, 0.0, 0.9, 0.1]]
    preds = [_pred(boxes, [0, 1, 0, 0], [0.9, 0.8, 0.3, 0.95])]  # a confident small false positive
    m = coco_metrics(SIZED, preds, NAMES, input_side=100)["by_size"]
    assert m["medium"]["ap50"] == pytest.approx(1.0) and m["large"]["ap50"] == pytest.approx(1.0)
    # the small cat is found second, after the false positive: precision 1/2 at recall 1
    assert m["small"]["recall50"] == pytest.approx(1.0) and m["small"]["ap50"] == pytest.approx(0.5)


def test_an_object_on_a_bin_boundary_counts_in_one_bin_only():
    # at 100 px a 0.16-wide square is 16 x 16 px and a 0.48-wide one 48 x 48 px: each bin's upper end
    gt = [{"boxes": np.array([[0.0, 0.0, 0.16, 0.16], [0.5, 0.5, 0.98, 0.98]]), "labels": np.array([0, 0])}]
    m = coco_metrics(gt, [_pred(gt[0]["boxes"], [0, 0], [0.9, 0.8])], NAMES, input_side=100)
    assert [m["by_size"][k]["objects"] for k in ("small", "medium", "large")] == [1, 1, 0]
    assert m["by_size"]["small"]["ap50"] == pytest.approx(1.0) and m["by_size"]["medium"]["recall50"] == 1.0
