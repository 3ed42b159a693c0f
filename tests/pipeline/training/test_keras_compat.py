"""The Keras multi-worker patch refuses a Keras it was not written for: fast, no training.

When this fails after a Keras upgrade, see pipeline/training/keras_compat.py's docstring: port the
patch (and run tests/pipeline/training/test_multiworker.py), or delete it if the issues are fixed.
"""
import keras
import pytest
import tensorflow as tf

from pipeline.training import keras_compat
from pipeline.training.keras_compat import PATCHED, UPSTREAM_ISSUES, adapt_model, check_keras


def _owner(name: str) -> type:
    """The class in keras.Model's MRO that defines ``name`` (Keras' TF trainer or its base)."""
    return next(c for c in keras.Model.__mro__ if name in vars(c))


def test_the_installed_keras_is_the_tested_one():
    check_keras()


def test_another_keras_version_is_refused_naming_it_and_the_issues(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(RuntimeError, match=r"Keras 3\.99\.0 does not fit: the patch is tested with Keras 3\.15") as e:
        check_keras()
    assert all(issue in str(e.value) for issue in UPSTREAM_ISSUES)


def test_a_minor_version_with_the_same_prefix_is_refused(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.150.0")  # not 3.15.x, though it starts with "3.15"
    with pytest.raises(RuntimeError, match="tested with Keras 3.15"):
        check_keras()


@pytest.mark.parametrize("name", sorted(PATCHED))
def test_a_missing_trainer_method_is_refused(monkeypatch, name):
    monkeypatch.delattr(_owner(name), name)
    with pytest.raises(RuntimeError, match=rf"keras.Model has no {name}\(\)") as e:
        check_keras()
    assert all(issue in str(e.value) for issue in UPSTREAM_ISSUES)


def test_a_changed_trainer_signature_is_refused(monkeypatch):
    monkeypatch.setattr(_owner("_maybe_symbolic_build"), "_maybe_symbolic_build", lambda self, batches=None: None)
    with pytest.raises(RuntimeError, match=r"_maybe_symbolic_build\(\) no longer takes iterator, data_batch"):
        check_keras()


def _model() -> keras.Model:
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_other_strategies_are_left_alone_whatever_the_version(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    model = _model()
    step = model.train_step
    assert adapt_model(model, tf.distribute.get_strategy()) is model
    assert model.train_step == step and "_maybe_symbolic_build" not in vars(model)


def test_multiworker_adaptation_checks_keras_first(monkeypatch):
    monkeypatch.setattr(keras_compat, "is_multiworker", lambda strategy: True)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    model = _model()
    with pytest.raises(RuntimeError, match="Keras 3.99.0"):
        adapt_model(model, tf.distribute.get_strategy())
    assert "_maybe_symbolic_build" not in vars(model)  # refused before anything was patched
