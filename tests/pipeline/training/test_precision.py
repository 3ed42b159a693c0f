"""Mixed precision: which policy "auto" means, float32 where it matters, and a float32 model.keras."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import ConfigError, UserError
from models.cnn import CNNConfig
from pipeline.training import distribute
from pipeline.training.classifier import TrainConfig, build_model, compile_model, train_classifier
from tests.export.tolerances import FLOAT32_PROBABILITY_TOLERANCE

DATA = "shapes:train=200,validation=40,test=40,size=32"  # the variant test_multiworker uses
TINY_CNN = CNNConfig(filters=(8, 16), hidden_units=(32,), dropout=0.0)


@pytest.mark.parametrize("caps,expected", [
    ([], "float32"),                      # CPU only
    ([(6, 1)], "float32"),                # Pascal: no tensor cores, float16 is slower
    ([(7, 0)], "mixed_float16"),
    ([(8, 0), (9, 0)], "mixed_float16"),
    ([(8, 0), (6, 1)], "float32"),        # the slowest GPU decides
])
def test_auto_precision(monkeypatch, caps, expected):
    monkeypatch.setattr(distribute, "gpu_compute_capabilities", lambda: caps)
    assert distribute.resolve_precision("auto") == expected


def test_named_precisions_and_errors():
    assert [distribute.resolve_precision(p) for p in distribute.PRECISIONS] == list(distribute.PRECISIONS)
    with pytest.raises(ConfigError, match="PRECISION=float8"):
        distribute.resolve_precision("float8")
    with pytest.raises(ConfigError, match="PRECISION=auto"):
        TrainConfig(precision="auto")  # the config holds what was trained, never "auto"


def test_mixed_model_computes_in_float16_but_keeps_float32_variables_outputs_and_policy():
    cfg = TrainConfig(image_size=32, cnn=TINY_CNN, precision="mixed_float16")
    strategy = tf.distribute.get_strategy()
    model = compile_model(build_model(cfg, 4, strategy), cfg, strategy, 1e-3)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    conv = model.get_layer("block1_conv")
    assert conv.compute_dtype == "float16" and conv.kernel.dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    assert out.dtype == "float32"


def test_float32_config_is_unchanged_on_disk():
    assert "precision" not in TrainConfig().to_dict()  # runs from before mixed precision still resume
    d = TrainConfig(precision="mixed_bfloat16").to_dict()
    assert d["precision"] == "mixed_bfloat16" and TrainConfig.from_dict(d).precision == "mixed_bfloat16"


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, data_dir):
    from pipeline.sources.specs import open_source

    source = open_source(DATA, data_dir=data_dir)
    cfg = TrainConfig(data=DATA, image_size=32, batch_size=32, epochs=2, learning_rate=3e-3, cnn=TINY_CNN,
                      precision="mixed_float16")
    run = tmp_path_factory.mktemp("mixed") / "run"
    metrics = train_classifier(cfg, source, run, verbose=0)
    return run, metrics, cfg, source


@pytest.mark.heavy
@pytest.mark.kernel_sensitive
def test_mixed_run_saves_a_float32_model_that_exports_to_a_float32_tflite(mixed_run):
    run, metrics, cfg, _ = mixed_run
    assert json.loads((run / "config.json").read_text())["precision"] == "mixed_float16"
    model = keras.models.load_model(run / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert all(w.dtype == "float32" for w in model.weights)
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)

    from ai_edge_litert.interpreter import Interpreter

    from export.convert import convert_keras

    tflite = convert_keras(model, "float32")

    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    assert not [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float16]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(lite, model.predict_on_batch(x), atol=FLOAT32_PROBABILITY_TOLERANCE)
    assert metrics["epochs_run"] == 2 and np.isfinite(metrics["history"]["loss"]).all()


@pytest.mark.heavy
def test_a_run_is_not_resumed_under_another_precision(mixed_run):
    run, _, cfg, source = mixed_run
    from dataclasses import replace

    with pytest.raises(UserError, match="different settings.*precision"):
        train_classifier(replace(cfg, precision="float32"), source, run, verbose=0)
