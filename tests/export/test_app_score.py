"""The figure an app sees (export.app_score): MediaPipe Tasks (Python) on the test split, beside LiteRT's,
in the export card and report; and MediaPipe's refusal of an int8 input, said in words."""
from __future__ import annotations

import pytest

from common.run_folder import read_json
from export.app_score import classifier_accuracy
from export.convert import convert_keras


@pytest.mark.heavy
def test_classifier_card_has_mediapipe_accuracy_equal_to_litert_on_the_same_pixels(classifier_run):
    # the tiny run's images are 32 px, its input size: MediaPipe has no resize to do, so it sees
    # exactly the pixels LiteRT saw, and must score the same
    card = read_json(classifier_run / "export" / "model_card.json")
    for mode, m in card["models"].items():
        app = m["mediapipe"]
        assert app["images"] == card["evaluation"]["examples"] == 48, mode
        assert app["accuracy"] == app["score"] == pytest.approx(m["score"], abs=1e-12), mode
    report = (classifier_run / "export" / "export_report.md").read_text()
    assert "accuracy in MediaPipe" in report and "What an app sees" in report
    assert f"**{card['models']['int8']['mediapipe']['score']:.4f}**" in report


@pytest.mark.heavy
def test_detector_card_has_mediapipe_map(detector_run):
    card = read_json(detector_run / "export" / "model_card.json")
    for mode, m in card["models"].items():
        app = m["mediapipe"]
        assert app["images"] == 8 and app["score"] == app["map50"], mode
        assert 0.0 < app["map50_first_category"] <= app["map50"] <= 1.0, mode
        assert 0.0 < app["map"] <= app["map50"], mode


@pytest.mark.heavy
def test_mediapipe_refuses_an_int8_input_and_the_score_says_why(export_data):
    model = convert_keras(export_data.model, "int8", export_data.calibration[:8], io_dtype="int8")
    app = classifier_accuracy(model, export_data.source, "test", export_data.labels)
    assert "score" not in app
    assert "MediaPipe refused the model" in app["error"] and "got INT8" in app["error"]
