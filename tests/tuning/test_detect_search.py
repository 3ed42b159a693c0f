"""`make tune TASK=detect` on tiny data: two SSD trials scored by mAP and measured as int8 .tflite,
a report in mAP, and the best detector retrained into the run folder."""
from __future__ import annotations

import csv
import json

import pytest

from common.run_folder import RunFolder
import cli
from tuning.objective import MAP, Constraints, ObjectiveConfig, choose_best
from tuning.report import metric_columns, plot_names
from tuning.search import TuningFolder, load_records

pytestmark = pytest.mark.heavy  # real searches: trains, converts and times models

TINY_DETECT = "shapes:train=16,validation=8,test=8,size=64"
# Two configurations that differ only in their anchors: 2 or 4 anchors per cell.
NARROW = ["input_size=64", "alpha=0.35", "head_depth=0", "head_filters=16", "min_scale=0.25", "max_scale=0.5",
          "learning_rate=0.003", "aspect_ratios=1,1:2:0.5"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_data_dir):
    run = tmp_path_factory.mktemp("detect_tune") / "run"
    args = ["--run", str(run), "--task", "detect", "--data", TINY_DETECT, "--data-dir", str(tiny_data_dir),
            "--tuner", "grid", "--trials", "2", "--epochs", "1", "--final-epochs", "1", "--batch-size", "16",
            "--latency-runs", "5", "--quiet"]
    for item in NARROW:
        args += ["--space-set", item]
    assert cli.main(["tune", *args]) == 0
    return run


def test_every_trial_is_scored_by_map_and_measured_as_shipped(searched):
    rows = list(csv.DictReader((searched / "tuning" / "trials.csv").open()))
    assert sorted(r["aspect_ratios"] for r in rows) == ["1", "1:2:0.5"]  # the grid covered the space
    for r in rows:
        assert r["status"] == "COMPLETED" and all(r[c] != "" for c in metric_columns(MAP)), r
        assert 0.0 <= float(r["val_map"]) <= 1.0
        assert float(r["objective"]) == pytest.approx(float(r["val_map"]))  # objective accuracy: mAP itself
        assert int(r["int8_bytes"]) > 10_000 and float(r["latency_ms"]) > 0
    by_ratios = {r["aspect_ratios"]: r for r in rows}
    # Twice the anchors per cell: wider prediction layers in every head.
    assert int(by_ratios["1:2:0.5"]["params"]) > int(by_ratios["1"]["params"])
    assert int(by_ratios["1:2:0.5"]["int8_bytes"]) > int(by_ratios["1"]["int8_bytes"])
    for trial in (searched / "tuning" / "project").glob("trial_*/trial.json"):
        metrics = json.loads(trial.read_text())["metrics"]["metrics"]
        assert {"val_map", "val_map50", "latency_ms", "int8_bytes"} <= set(metrics)


def test_size_constraint_picks_the_smaller_detector(searched):
    records = load_records(TuningFolder(searched / "tuning"), MAP.metric)
    small, big = sorted(records, key=lambda r: r.int8_bytes)
    limit = (small.int8_bytes + big.int8_bytes) / 2 / 1024
    assert choose_best(records, ObjectiveConfig(quality=MAP, constraints=Constraints(max_size_kb=limit))) == small


def test_best_detector_is_retrained_into_the_run_folder_and_reported(searched):
    tuning = searched / "tuning"
    best = json.loads((tuning / "best_hyperparameters.json").read_text())
    config = json.loads((searched / "config.json").read_text())
    assert config["task"] == "detect" and config["ssd"] == best["ssd"]
    assert config["ssd"]["anchors"]["aspect_ratios"] == [float(v) for v in best["hyperparameters"]["aspect_ratios"]
                                                         .split(":")]
    folder = RunFolder(searched)
    assert folder.is_complete() and folder.labels.exists()
    metrics = json.loads((searched / "metrics.json").read_text())
    assert best["retrained"] == {"steps": metrics["steps"], "test_map": metrics["test"]["map"],
                                 "test_map50": metrics["test"]["map50"]}
    report = (tuning / "report.md").read_text()
    assert f"**Ship trial {best['trial_id']}.**" in report
    assert f"**test mAP@[.5:.95] {metrics['test']['map']:.3f}**" in report
    assert "| trial | status | steps | feasible | accuracy | val mAP | params |" in report
    assert "| aspect_ratios | choice | 1, 1:2:0.5 |" in report
    for plot in plot_names(MAP):
        assert (tuning / "plots" / plot).read_bytes()[:4] == b"\x89PNG" and f"(plots/{plot})" in report
