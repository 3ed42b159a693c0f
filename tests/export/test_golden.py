"""Golden vectors (export.golden): written by `make export`, the exact pixels the model sees, and
outputs that LiteRT reproduces and MediaPipe Tasks (Python) agree with, as an app's test would."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from common.run_folder import read_json
from export.golden import (BOX_IOU, classification_agrees, detections_agree, pick_images, pixel_box,
                           read_pixels)
from export.runtime import TFLiteClassifier


def test_pixel_box_truncates_like_mediapipe_worked_by_hand():
    # xmin 0.5 * 64 = 32, ymin 0.25 * 64 = 16, width 0.5 * 64 = 32, height 0.5 * 64 = 32
    assert pixel_box([0.25, 0.5, 0.75, 1.0], 64, 64) == ([32, 16, 32, 32], True)  # whole pixels: near an edge
    # xmin 0.3 * 64 = 19.2 -> 19; ymin -0.01 * 64 = -0.64 -> 0 (toward zero); width 0.45 * 64 = 28.8 -> 28
    box, near = pixel_box([-0.01, 0.3, 0.4, 0.75], 64, 64)
    assert box == [19, 0, 28, 26] and not near  # height 0.41 * 64 = 26.24 -> 26


def test_detections_agree_needs_same_class_and_iou_both_ways():
    a = {"label": "cat", "score": 0.9, "box": [0.1, 0.1, 0.5, 0.5], "pixel_box": [6, 6, 26, 26]}
    shifted = {**a, "box": [0.1, 0.15, 0.5, 0.55]}  # IoU 0.78 with a
    faint = {**a, "label": "dog", "score": 0.1, "box": [0.6, 0.6, 0.9, 0.9]}
    assert detections_agree({"detections": [a]}, {"detections": [dict(a), faint]})  # faint is not shown
    assert not detections_agree({"detections": [a]}, {"detections": [shifted]})
    assert not detections_agree({"detections": [a]}, {"detections": [{**a, "label": "dog"}]})
    assert not detections_agree({"detections": []}, {"detections": [{**faint, "score": 0.9}]})  # an extra one shown
    # shown on one side, found below the threshold on the other: the same detection, scored differently
    assert detections_agree({"detections": [faint]}, {"detections": [{**faint, "score": 0.9}]})
    assert detections_agree({"detections": [a]}, {"detections": [{**a, "pixel_box": [6, 6, 26, 25]}]},
                            key="pixel_box")  # IoU 25/26 >= 0.9
    assert not detections_agree({"detections": [a]}, {"detections": [{**a, "pixel_box": [6, 6, 26, 22]}]},
                                key="pixel_box")  # IoU 22/26 < 0.9
    assert BOX_IOU == 0.9


def test_classification_agrees_on_top1_and_ambiguous_images_are_passed_over():
    assert classification_agrees({"top_k": [{"label": "a"}, {"label": "b"}]}, {"top_k": [{"label": "a"}]})
    assert not classification_agrees({"top_k": [{"label": "a"}]}, {"top_k": [{"label": "b"}]})
    outputs = {"m1": [{"ambiguous": False}, {"ambiguous": True}, {"ambiguous": False}, {"ambiguous": False}],
               "m2": [{"ambiguous": False}, {"ambiguous": False}, {"ambiguous": True}, {"ambiguous": False}]}
    assert pick_images(outputs, n=2) == [0, 3]


@pytest.mark.heavy
def test_classifier_golden_pixels_are_test_images_and_litert_reproduces_the_outputs(classifier_run, export_data):
    golden_dir = classifier_run / "export" / "golden"
    golden = read_json(golden_dir / "golden.json")
    assert golden["task"] == "classify" and golden["input"] == {
        "height": 32, "width": 32, "channels": 3, "dtype": "uint8", "color_order": "RGB", "layout": "HWC row-major"}
    assert len(golden["images"]) == 8 and set(golden["models"]) == {"model_float32.tflite", "model_int8.tflite"}
    test_pixels = export_data.test_images.astype(np.uint8)
    for entry in golden["images"]:
        pixels = read_pixels(golden_dir, entry, golden)
        with Image.open(golden_dir / entry["png"]) as png:
            np.testing.assert_array_equal(np.asarray(png.convert("RGB")), pixels)
        match = [i for i in range(len(test_pixels)) if np.array_equal(test_pixels[i], pixels)]
        assert match, f"{entry['name']} is not a test-split image as the model sees it"
        assert entry["truth"] == [export_data.labels[export_data.test_labels[match[0]]]]
    for name, outputs in golden["models"].items():
        model = TFLiteClassifier(classifier_run / "export" / name)
        for entry, expected in zip(golden["images"], outputs):
            probs = model.predict_batch(read_pixels(golden_dir, entry, golden)[None].astype(np.float32))[0]
            top = expected["top_k"]
            assert [t["index"] for t in top] == list(np.argsort(-probs, kind="stable")[:len(top)])
            np.testing.assert_array_equal([t["score"] for t in top], probs[[t["index"] for t in top]])
            assert top[0]["score"] > top[1]["score"]  # unambiguous: no tie at the top


@pytest.mark.heavy
def test_altered_golden_pixels_are_refused(classifier_run, tmp_path):
    golden_dir = classifier_run / "export" / "golden"
    golden = read_json(golden_dir / "golden.json")
    entry = golden["images"][0]
    raw = bytearray((golden_dir / entry["rgb"]).read_bytes())
    raw[0] ^= 1
    (tmp_path / entry["rgb"]).write_bytes(bytes(raw))
    assert hashlib.sha256(raw).hexdigest() != entry["sha256"]
    with pytest.raises(UserError, match="sha256"):
        read_pixels(tmp_path, entry, golden)


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["int8", "float32"])
def test_mediapipe_python_reproduces_the_golden_outputs(classifier_run, detector_run, mode):
    """What an Android or iOS test does (README, "Golden vectors"), with MediaPipe Tasks for Python."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    name = f"model_{mode}.tflite"
    golden_dir = classifier_run / "export" / "golden"
    golden = read_json(golden_dir / "golden.json")
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(classifier_run / "export" / name)),
                                            max_results=golden["top_k"])
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for entry, expected in zip(golden["images"], golden["models"][name]):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=read_pixels(golden_dir, entry, golden).copy())
            top = classifier.classify(image).classifications[0].categories[0]
            assert top.category_name == expected["top_k"][0]["label"], entry["name"]

    golden_dir = detector_run / "export" / "golden"
    golden = read_json(golden_dir / "golden.json")
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=str(detector_run / "export" / name)),
                                           score_threshold=0.0)
    shown = 0
    with vision.ObjectDetector.create_from_options(options) as detector:
        for entry, expected in zip(golden["images"], golden["models"][name]):
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=read_pixels(golden_dir, entry, golden).copy())
            found = [{"label": d.categories[0].category_name, "score": d.categories[0].score,
                      "pixel_box": [d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.width,
                                    d.bounding_box.height]} for d in detector.detect(image).detections]
            assert detections_agree(expected, {"detections": found}, key="pixel_box"), entry["name"]
            boxes = {(d["label"], tuple(d["pixel_box"])) for d in found}
            for d in expected["detections"]:
                if d["score"] >= golden["show_threshold"]:
                    shown += 1
                    assert (d["label"], tuple(d["pixel_box"])) in boxes, (entry["name"], d, boxes)
    assert shown > 0
