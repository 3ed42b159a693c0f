"""Verification passes a faithful model and catches corrupted ones."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from export.convert import convert_keras
from export.classifier_export import predict_probabilities
from export.runtime import TFLiteModel
from export.verify import verify_classifier

pytestmark = pytest.mark.heavy  # every test here uses the session's trained run and its conversions


@pytest.fixture
def reference(export_data):
    return predict_probabilities(export_data.model, export_data.test_images)


def test_faithful_model_passes(converted, export_data, reference):
    result = verify_classifier(converted["float32"], export_data.test_images, export_data.test_labels, reference,
                               min_agreement=0.98)
    assert result.agreement == 1.0 and result.examples == len(export_data.test_labels)
    assert result.score == pytest.approx(result.reference_score)
    assert result.passed and not result.problem


def test_model_with_corrupted_weights_fails(export_data, reference):
    import keras

    broken = keras.models.clone_model(export_data.model)
    broken.set_weights(export_data.model.get_weights())
    layer = broken.get_layer("probabilities")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])  # class i now scores as i+1
    result = verify_classifier(convert_keras(broken, "float32"), export_data.test_images, export_data.test_labels,
                               reference, min_agreement=0.98)
    assert result.agreement < 0.5
    assert not result.passed and "MIN_AGREEMENT" in result.problem


def test_truncated_model_is_a_user_error(converted):
    with pytest.raises(UserError, match="not a loadable"):
        TFLiteModel(converted["int8"][: len(converted["int8"]) // 2])
