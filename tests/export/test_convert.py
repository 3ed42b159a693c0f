"""Every quantization mode converts and runs; int8 is integer-only; bad input is a clear error."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from export.convert import QUANT_MODES, convert_keras
from export.classifier_export import predict_probabilities
from export.runtime import TFLiteModel
from tests.export.tolerances import FLOAT32_PROBABILITY_TOLERANCE, quantized_error_budget

pytestmark = pytest.mark.heavy  # every test here uses the session's trained run and its conversions

FLOAT_TYPES = {np.dtype(np.float32), np.dtype(np.float16)}


@pytest.mark.kernel_sensitive
@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic", "int8"])
def test_mode_converts_and_agrees_with_keras(converted, export_data, mode):
    """What a user relies on: the same top-1 on (nearly) every image, and probabilities off by no
    more than the quantization allows. Bounds come from the model's own scales (see
    tests/export/tolerances.py), never from one machine's run: int8 kernels differ between CPUs
    (AVX-512 VNNI or not), and an image near a decision boundary may move by much more than the
    typical error, so the typical (median) error is bounded, not the largest."""
    images = export_data.test_images[:16]
    model = TFLiteModel(converted[mode])
    probs = model.predict_batch(images)
    reference = predict_probabilities(export_data.model, images)
    assert probs.shape == reference.shape
    error = np.abs(probs - reference).max(axis=1)  # per image
    agreement = np.mean(probs.argmax(1) == reference.argmax(1))
    if mode == "float32":
        assert agreement == 1.0
        assert error.max() < FLOAT32_PROBABILITY_TOLERANCE
        return
    budget = quantized_error_budget(converted[mode])
    # uint8 probabilities: each of the C outputs is rounded to half a step
    assert np.allclose(probs.sum(axis=1), 1.0, atol=budget.sum_tolerance(probs.shape[1]))
    assert agreement >= 0.9  # one flip in 16 is a boundary image
    assert np.median(error) <= budget.typical, (np.median(error), budget)


def test_sizes_shrink_as_claimed(converted):
    size = {mode: len(b) for mode, b in converted.items()}
    assert size["float16"] < 0.6 * size["float32"]
    assert size["int8"] < 0.35 * size["float32"]


def test_int8_is_integer_only_with_raw_byte_input(converted):
    model = TFLiteModel(converted["int8"])
    assert not FLOAT_TYPES & set(model.tensor_types().values()), "a float tensor survived int8 conversion"
    assert model.input["dtype"] == np.uint8 and model.outputs[0]["dtype"] == np.uint8
    scale, zero_point = model.input["quantization"]
    assert scale == pytest.approx(1.0, abs=1e-4) and zero_point == 0  # camera byte == pixel value


def test_float32_model_keeps_float_weights(converted):
    assert np.dtype(np.float32) in set(TFLiteModel(converted["float32"]).tensor_types().values())


def test_int8_io_option(export_data):
    model = TFLiteModel(convert_keras(export_data.model, "int8", export_data.calibration[:4], io_dtype="int8"))
    assert model.input["dtype"] == np.int8 and model.outputs[0]["dtype"] == np.int8
    assert model.input["quantization"][1] == -128


@pytest.mark.kernel_sensitive
def test_qat_model_converts_integer_only(qat_model, export_data):
    model_bytes = convert_keras(qat_model, "int8-qat", export_data.calibration[:4])
    model = TFLiteModel(model_bytes)
    assert not FLOAT_TYPES & set(model.tensor_types().values())
    images = export_data.test_images[:16]
    # Probabilities, not top-1: fake-quantized logits of a tiny model often tie exactly. The
    # fake-quant graph runs TensorFlow's float kernels and the .tflite the int8 ones, so they
    # differ by rounding; the typical image stays within the quantization budget.
    error = np.abs(model.predict_batch(images) - predict_probabilities(qat_model, images)).max(axis=1)
    assert np.median(error) <= quantized_error_budget(model_bytes).typical


def test_unknown_mode_is_a_user_error(export_data):
    with pytest.raises(UserError, match="unknown quantization mode"):
        convert_keras(export_data.model, "int4")
    assert "int4" not in QUANT_MODES


def test_empty_calibration_is_a_user_error(export_data):
    with pytest.raises(UserError, match="calibration set is empty"):
        convert_keras(export_data.model, "int8", iter([]))
    with pytest.raises(UserError, match="needs calibration"):
        convert_keras(export_data.model, "int8", None)


def test_wrong_calibration_shape_is_a_user_error(export_data):
    with pytest.raises(UserError, match="calibration image 0"):
        convert_keras(export_data.model, "int8", [np.zeros((1, 8, 8, 3), np.float32)])
