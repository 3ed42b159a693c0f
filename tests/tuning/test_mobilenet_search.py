"""`make tune MODEL=mobilenetv2`: MobileNetV2's width, dropout, learning rate and fine-tuned blocks
searched like the CNN's hyperparameters, the best retrained as `make train MODEL=mobilenetv2`."""
from __future__ import annotations

import csv
import json

import pytest

import cli
from common.errors import ConfigError
from common.run_folder import RunFolder
from tuning.search import TuneConfig
from tuning.space import MobileNetSearchSpace, load_space
from tuning.tunables import MOBILENET_SEARCH, search_named

pytestmark = pytest.mark.heavy


def test_a_mobilenet_search_ranks_trials_and_retrains_the_best_as_make_train_would(tmp_path, tiny_args):
    run = tmp_path / "run"
    args = tiny_args(run, "--tuner", "random", "--trials", "2", "--model", "mobilenetv2", "--weights", "none",
                     "--space-set", "alpha=0.35,0.5", "--space-set", "fine_tune_blocks=2")
    assert cli.main(["tune", *args]) == 0
    tuning = run / "tuning"
    settings = json.loads((tuning / "settings.json").read_text())
    assert settings["model"] == "mobilenetv2" and settings["weights"] == "none"
    assert TuneConfig.from_dict(settings).search is MOBILENET_SEARCH
    rows = list(csv.DictReader((tuning / "trials.csv").open()))
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert all(float(r["alpha"]) in (0.35, 0.5) and int(r["int8_bytes"]) > 1000 for r in rows)

    best = json.loads((tuning / "best_hyperparameters.json").read_text())
    config = RunFolder(run).read_config()
    assert config["model"] == "mobilenetv2" and config["mobilenet"] == best["mobilenet"]
    assert config["mobilenet"]["weights"] == "none" and config["image_size"] == 32
    assert RunFolder(run).is_complete()


def test_the_search_follows_the_model_and_the_space_is_checked():
    assert search_named("classify").model == "cnn"
    assert search_named("classify", "mobilenetv2") is MOBILENET_SEARCH
    with pytest.raises(ConfigError):
        search_named("detect", "mobilenetv2")
    assert load_space(None, ["alpha=0.5,1.0"], MobileNetSearchSpace).alpha == (0.5, 1.0)
    with pytest.raises(ConfigError, match="alpha"):
        load_space(None, ["alpha=0.6"], MobileNetSearchSpace)
    assert "model" not in TuneConfig().to_dict()  # CNN searches' settings.json is unchanged
