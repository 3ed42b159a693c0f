"""A 3-trial search on tiny data: every report file, every field filled, the best model retrained."""
from __future__ import annotations

import pytest

import csv
import json

from common.run_folder import RunFolder
import cli
from tuning.objective import ObjectiveConfig, TrialRecord, choose_best
from tuning.report import metric_columns, plot_names
from tuning.search import TuneConfig

pytestmark = pytest.mark.heavy  # real searches: trains, converts and times models


def test_three_trial_search_writes_a_complete_report(tmp_path, tiny_args):
    run = tmp_path / "run"
    assert cli.main(["tune", *tiny_args(run, "--tuner", "random", "--trials", "3", "--objective", "score",
                                        "--latency-weight", "0.1")]) == 0
    tuning = run / "tuning"
    settings = TuneConfig.from_dict(json.loads((tuning / "settings.json").read_text()))
    active = settings.space.hyperparameters()

    rows = list(csv.DictReader((tuning / "trials.csv").open()))
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    for r in rows:
        assert r["status"] == "COMPLETED"
        assert all(r[c] != "" for c in metric_columns()), r
        blocks, layers = int(r["conv_blocks"]), int(r["dense_layers"])
        used = [n for n in active if not n.startswith(("filters_", "units_"))]
        used += [f"filters_{i}" for i in range(1, blocks + 1)] + [f"units_{j}" for j in range(1, layers + 1)]
        assert all(r[n] != "" for n in used), r
        assert all(r[n] == "" for n in active if n not in used), r
        assert 0 <= float(r["val_accuracy"]) <= 1 and int(r["int8_bytes"]) > 1000 and float(r["latency_ms"]) > 0
        assert int(r["steps"]) == settings.fidelity.full_steps  # random search: every trial at the top rung

    # Trial 0 is the model `make train` builds: the default CNN at the default learning rate.
    assert {k: rows[0][k] for k in ("conv_blocks", "filters_1", "filters_2", "filters_3", "kernel_size", "pool_size",
                                    "pool_stride", "dense_layers", "units_1", "dropout", "learning_rate")} == \
        {"conv_blocks": "3", "filters_1": "16", "filters_2": "32", "filters_3": "64", "kernel_size": "3",
         "pool_size": "2", "pool_stride": "2", "dense_layers": "1", "units_1": "128", "dropout": "0.3",
         "learning_rate": "0.002"}

    best = json.loads((tuning / "best_hyperparameters.json").read_text())
    records = [TrialRecord(r["trial_id"], r["status"], {}, float(r["val_accuracy"]), int(r["params"]),
                           int(r["int8_bytes"]), float(r["latency_ms"])) for r in rows]
    cfg = ObjectiveConfig(kind="score", latency_weight=0.1)
    assert best["trial_id"] == choose_best(records, cfg).trial_id
    assert all(v is not None for v in best.values()), best
    assert best["retrained"]["test_accuracy"] >= 0 and best["why"].startswith(f"Trial {best['trial_id']}")

    report = (tuning / "report.md").read_text()
    headline = report.splitlines()[2]  # the first line after the title: default vs shipped
    if best["trial_id"] == "0":
        assert headline.startswith("**The default wins.**") and best["default"]["default_wins"]
    else:
        assert headline.startswith((f"**Trial {best['trial_id']} beats the default**",
                                    "**Warning: the shipped model is worse than the default"))
    assert "| trial | 0 | " + best["trial_id"] + " |" in report
    assert best["default"]["test"] is not None  # the default's test accuracy, from trial 0's weights
    assert f"**Ship trial {best['trial_id']}.**" in report and "test accuracy" in report
    assert "## Search space (as searched" in report and "| learning_rate | choice | 0.002, 0.001, 0.005, 0.0005 |" in report
    for plot in plot_names():
        assert (tuning / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{plot})" in report
    events = list((tuning / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(events) == 1 + 3  # the experiment config, one run per trial

    # The best configuration, retrained with pipeline.training.classifier, is the run folder's model.
    folder = RunFolder(run)
    assert folder.is_complete() and folder.labels.exists()
    assert folder.read_config()["cnn"] == best["cnn"]
    assert folder.read_config()["learning_rate"] == best["learning_rate"]
