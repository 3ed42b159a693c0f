"""The Keras 3 <-> tf_keras seam: weights copy exactly; QAT adds fake quant; pruning reaches its sparsity."""
from __future__ import annotations

import numpy as np
import pytest

from export import keras2
from export.classifier_export import predict_probabilities
from tests.export.tolerances import FLOAT32_PROBABILITY_TOLERANCE

pytestmark = pytest.mark.heavy  # every test here uses the session's trained run and its conversions


def test_round_trip_through_tf_keras_is_exact(export_data):
    build = export_data.builder()
    twin = keras2.to_tf_keras(export_data.model, build)
    back = keras2.to_keras3(twin, build)
    images = export_data.test_images[:8]
    reference = predict_probabilities(export_data.model, images)
    # tf_keras and Keras 3 run the same TensorFlow kernels on the same float32 weights; only the
    # graph around them differs, so any difference is float32 rounding
    assert np.max(np.abs(predict_probabilities(twin, images) - reference)) < FLOAT32_PROBABILITY_TOLERANCE
    np.testing.assert_array_equal(predict_probabilities(back, images), reference)


def test_qat_model_has_fake_quant_and_pinned_input_range(qat_model, export_data):
    assert keras2.has_fake_quant(qat_model)
    assert not keras2.has_fake_quant(keras2.to_tf_keras(export_data.model, export_data.builder()))
    ranges = {w.name: float(w.numpy()) for w in qat_model.non_trainable_weights if w.shape == ()}
    assert ranges["quantize_layer/quantize_layer_min:0"] == 0.0
    assert ranges["quantize_layer/quantize_layer_max:0"] == 255.0
    # activation ranges start from the float model's, not tfmot's [-6, 6]
    assert 0.9 < ranges["quant_rescale/output_max:0"] <= 1.01


def test_pruning_reaches_target_sparsity(export_data):
    before, _ = keras2.kernel_sparsity(export_data.model)
    result = keras2.prune(export_data.model, export_data.builder(), export_data.train_batches(), 0.5, epochs=1)
    assert before < 0.01
    assert 0.45 <= result.reached <= 0.55
    assert set(result.per_layer) == {"block1_conv", "block2_conv", "fc1", "probabilities"}
    assert all(0.4 <= s <= 0.6 for s in result.per_layer.values())
    assert type(result.model.layers[0]).__module__.startswith("keras")  # back in Keras 3
