"""A tiny detector trained into a run folder: it learns its 8 images, and the folder is complete."""
import json

import numpy as np
import pytest

from common.errors import ConfigError, UserError
from pipeline.training.detector import DetectTrainConfig, train_detector


@pytest.mark.heavy
def test_overfit_detector_finds_the_boxes_of_its_training_images(trained_detector):
    _, metrics, _ = trained_detector
    test = metrics["test"]
    assert test["images"] == 8 and test["objects"] >= 8
    assert test["map50"] > 0.6, test
    assert test["map"] > 0.25, test
    loss = metrics["history"]["loss"]
    assert np.mean(loss[-3:]) < 0.3 * loss[0]


@pytest.mark.heavy
def test_run_folder_has_every_artifact(trained_detector, overfit_source):
    run, metrics, cfg = trained_detector
    for name in ("model.keras", "labels.txt", "config.json", "metrics.json", "report.md",
                 "plots/training_curves.png", "plots/example_00.png"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "labels.txt").read_text().split() == list(overfit_source.label_names)
    assert DetectTrainConfig.from_dict(json.loads((run / "config.json").read_text())) == cfg
    assert list((run / "samples").glob("*.png"))
    assert not (run / ".resume").exists() and not list(run.rglob(".*.tmp*"))
    report = (run / "report.md").read_text()
    assert f"{metrics['test']['map50']:.3f}" in report and "example_00.png" in report
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved["test"]["per_class"]) == set(overfit_source.label_names)
    by_size = saved["test"]["by_size"]  # binned at the model's input side
    assert sum(m["objects"] for m in by_size.values()) == saved["test"]["objects"]
    assert f"by object size (the object's side at the {cfg.image_size} px input)" in report


@pytest.mark.heavy
def test_rerun_is_a_no_op_and_other_settings_are_refused(trained_detector, overfit_source, capsys):
    run, metrics, cfg = trained_detector
    before = (run / "model.keras").stat().st_mtime_ns
    assert train_detector(cfg, overfit_source, run, verbose=0)["test"] == metrics["test"]
    assert (run / "model.keras").stat().st_mtime_ns == before and "already trained" in capsys.readouterr().out
    with pytest.raises(UserError, match="different settings.*epochs"):
        train_detector(DetectTrainConfig(**{**cfg.__dict__, "epochs": 3}), overfit_source, run, verbose=0)


def test_config_round_trips_and_rejects_bad_values():
    cfg = DetectTrainConfig()
    assert DetectTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.image_size == cfg.ssd.anchors.input_size
    with pytest.raises(ConfigError, match="EPOCHS=0"):
        DetectTrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="optimizer"):
        DetectTrainConfig(optimizer="rmsprop")


def test_a_classification_source_is_refused(tmp_path, tiny_shapes):
    with pytest.raises(ConfigError, match="detection source"):
        train_detector(DetectTrainConfig(), tiny_shapes, tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.heavy
def test_init_starts_a_detector_from_an_earlier_run_and_reports_what_it_loaded(trained_detector, overfit_source,
                                                                               tmp_path):
    """INIT=RUN: the earlier detector's layers load (same classes: all of them), the report says so, and
    one epoch from there is already far better than the earlier run's first epoch from scratch."""
    earlier, earlier_metrics, cfg = trained_detector
    fresh = DetectTrainConfig(**{**cfg.__dict__, "epochs": 1, "init": str(earlier)})
    metrics = train_detector(fresh, overfit_source, tmp_path / "again", verbose=0)
    init = metrics["init"]
    assert init["from"] == str(earlier) and init["not_loaded"] == []
    assert any(name.startswith("class_s") for name in init["loaded"]) and len(init["loaded"]) > 50
    assert metrics["history"]["loss"][0] < 0.5 * earlier_metrics["history"]["loss"][0]
    assert f"INIT={earlier}: loaded {len(init['loaded'])} layers" in (tmp_path / "again" / "report.md").read_text()


def test_a_missing_init_run_is_refused_before_anything_is_written(tmp_path, overfit_source):
    with pytest.raises(UserError, match="not found"):
        train_detector(DetectTrainConfig(init=str(tmp_path / "nowhere")), overfit_source, tmp_path / "r")
    assert not (tmp_path / "r").exists()
