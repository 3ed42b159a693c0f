"""`make export` end to end on the tiny run, and the user errors it must give."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from common.errors import UserError
from export.classifier_export import predict_probabilities
from export.command import add_export_args, export_config
from export.exporter import ExportConfig, parse_modes
from export.runtime import TFLiteModel
from pipeline.evaluation.predict import predict_file
from pipeline.preprocess import preprocess_for_model
from pipeline.sources.images import load_rgb
from tasks import task_named, task_of
from tasks.classify import load_classifier


def run_export(args):
    """What `cli.py export` does, without the lock."""
    return task_of(args.run).export(args.run, export_config(args), data_dir=args.data_dir, log=lambda *_: None)


@pytest.fixture(scope="module")
def classifier_exported(tiny_run, export_data_dir):
    card = task_named("classify").export(tiny_run, ExportConfig(modes=("float32", "int8"), calib=16, min_agreement=0.9,
                                                                latency_runs=5), data_dir=export_data_dir,
                                         log=lambda *_: None)
    return tiny_run / "export", card


@pytest.mark.heavy
def test_export_writes_models_card_and_report(classifier_exported):
    out, card = classifier_exported
    names = {p.name for p in out.iterdir()}
    assert {"model_float32.tflite", "model_int8.tflite", "labels.txt", "model_card.json", "export_report.md"} <= names
    assert not [n for n in names if ".tmp" in n]
    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk["models"]["int8"]["input"] == {"dtype": "uint8", "quantization": {"scale": 1.0, "zero_point": 0}}
    assert on_disk["input"]["color_order"] == "RGB" and on_disk["labels"] == card["labels"]
    assert on_disk["models"]["int8"]["size_bytes"] == (out / "model_int8.tflite").stat().st_size
    assert "| int8 | model_int8.tflite |" in (out / "export_report.md").read_text()


@pytest.mark.heavy
def test_card_figures_are_those_of_the_written_models(classifier_exported, export_data):
    """The card's agreement and accuracy, recomputed here by running the written .tflite files on
    the test split: a card that reported another model's figures, or none, fails."""
    out, _ = classifier_exported
    on_disk = json.loads((out / "model_card.json").read_text())
    reference = predict_probabilities(export_data.model, export_data.test_images).argmax(1)
    for mode in ("float32", "int8"):
        entry = on_disk["models"][mode]
        top1 = TFLiteModel((out / entry["file"]).read_bytes()).predict_batch(export_data.test_images).argmax(1)
        assert entry["verification"]["examples"] == len(export_data.test_labels), mode
        assert entry["agreement"] == pytest.approx(np.mean(top1 == reference)), mode
        assert entry["score"] == pytest.approx(np.mean(top1 == export_data.test_labels)), mode
        assert entry["verification"]["reference_score"] == pytest.approx(np.mean(reference == export_data.test_labels))
    assert on_disk["models"]["float32"]["agreement"] == 1.0  # the same float32 function


@pytest.mark.heavy
def test_predict_runs_the_exported_model(classifier_exported, export_data):
    from PIL import Image

    out, _ = classifier_exported
    image_path = out.parent / "sample.png"
    Image.fromarray(export_data.test_images[0].astype("uint8")).resize((50, 40)).save(image_path)
    rows = predict_file(load_classifier(None, out / "model_int8.tflite"), image_path, k=3)
    # the same model run here on the same pixels (load_rgb + preprocess_for_model: what predict promises)
    probs = TFLiteModel(out / "model_int8.tflite").predict_batch(
        preprocess_for_model(load_rgb(image_path), export_data.image_size))[0]
    expected = [(export_data.labels[i], probs[i]) for i in np.argsort(-probs, kind="stable")[:3]]
    assert [name for name, _ in rows] == [name for name, _ in expected]
    assert [p for _, p in rows] == pytest.approx([p for _, p in expected], abs=1e-6)


def _args(run, **changes):
    import argparse

    parser = argparse.ArgumentParser()
    add_export_args(parser)
    argv = ["--run", str(run)] + [x for k, v in changes.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return parser.parse_args(argv)


def test_missing_run_folder(tmp_path):
    with pytest.raises(UserError, match="run folder not found"):
        run_export(_args(tmp_path / "nope"))


@pytest.mark.heavy
def test_missing_model(tiny_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("model.keras", "export"))
    with pytest.raises(UserError, match="model not found"):
        run_export(_args(run))


@pytest.mark.heavy
def test_unknown_quant(tiny_run):
    with pytest.raises(UserError, match="QUANT=int4"):
        run_export(_args(tiny_run, quant="int4"))
    assert parse_modes("all") == ("float32", "float16", "dynamic", "int8", "int8-qat")
    assert parse_modes("int8,float32") == ("float32", "int8")


@pytest.mark.heavy
def test_empty_calibration(tiny_run):
    with pytest.raises(UserError, match="calibration set would be empty"):
        run_export(_args(tiny_run, calib=0))


def test_bad_prune_and_agreement_settings():
    with pytest.raises(UserError, match="PRUNE"):
        ExportConfig(prune=1.5)
    with pytest.raises(UserError, match="MIN_AGREEMENT"):
        ExportConfig(min_agreement=2)
