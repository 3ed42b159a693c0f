"""`make export` end to end on the tiny run, and the user errors it must give."""
from __future__ import annotations

import json
import shutil

import pytest

from common.errors import UserError
from export.command import add_export_args, export_config
from export.exporter import ExportConfig, parse_modes
from tasks import task_named, task_of
from tasks.classify import load_classifier


def run_export(args):
    """What `cli.py export` does, without the lock."""
    return task_of(args.run).export(args.run, export_config(args), data_dir=args.data_dir, log=lambda *_: None)


@pytest.fixture(scope="module")
def exported(tiny_run, export_data_dir):
    card = task_named("classify").export(tiny_run, ExportConfig(modes=("float32", "int8"), calib=16, min_agreement=0.9,
                                                                latency_runs=5), data_dir=export_data_dir,
                                         log=lambda *_: None)
    return tiny_run / "export", card


def test_export_writes_models_card_and_report(exported):
    out, card = exported
    names = {p.name for p in out.iterdir()}
    assert {"model_float32.tflite", "model_int8.tflite", "labels.txt", "model_card.json", "export_report.md"} <= names
    assert not [n for n in names if ".tmp" in n]
    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk["models"]["int8"]["input"] == {"dtype": "uint8", "quantization": {"scale": 1.0, "zero_point": 0}}
    assert on_disk["input"]["color_order"] == "RGB" and on_disk["labels"] == card["labels"]
    assert on_disk["models"]["int8"]["size_bytes"] == (out / "model_int8.tflite").stat().st_size
    assert on_disk["models"]["int8"]["agreement"] >= 0.9 and on_disk["models"]["int8"]["passed"]
    assert "| int8 | model_int8.tflite |" in (out / "export_report.md").read_text()


def test_predict_runs_the_exported_model(exported, export_data):
    from PIL import Image

    from pipeline.evaluation.predict import predict_file

    out, _ = exported
    image_path = out.parent / "sample.png"
    Image.fromarray(export_data.test_images[0].astype("uint8")).resize((50, 40)).save(image_path)
    rows = predict_file(load_classifier(None, out / "model_int8.tflite"), image_path, k=3)
    assert len(rows) == 3 and rows[0][0] in export_data.labels
    assert rows[0][1] >= rows[1][1] >= rows[2][1]


def _args(run, **changes):
    import argparse

    parser = argparse.ArgumentParser()
    add_export_args(parser)
    argv = ["--run", str(run)] + [x for k, v in changes.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return parser.parse_args(argv)


def test_missing_run_folder(tmp_path):
    with pytest.raises(UserError, match="run folder not found"):
        run_export(_args(tmp_path / "nope"))


def test_missing_model(tiny_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("model.keras", "export"))
    with pytest.raises(UserError, match="model not found"):
        run_export(_args(run))


def test_unknown_quant(tiny_run):
    with pytest.raises(UserError, match="QUANT=int4"):
        run_export(_args(tiny_run, quant="int4"))
    assert parse_modes("all") == ("float32", "float16", "dynamic", "int8", "int8-qat")
    assert parse_modes("int8,float32") == ("float32", "int8")


def test_empty_calibration(tiny_run):
    with pytest.raises(UserError, match="calibration set would be empty"):
        run_export(_args(tiny_run, calib=0))


def test_bad_prune_and_agreement_settings():
    with pytest.raises(UserError, match="PRUNE"):
        ExportConfig(prune=1.5)
    with pytest.raises(UserError, match="MIN_AGREEMENT"):
        ExportConfig(min_agreement=2)
