"""The Keras Tuner workarounds check the version they were written for, and say so on a bump."""
from __future__ import annotations

import keras_tuner as kt
import pytest

from tuning import tuner_compat
from tuning.tuner_compat import TESTED_VERSION, check_keras_tuner, oracle_classes


def test_installed_keras_tuner_is_the_tested_one():
    assert kt.__version__ == TESTED_VERSION
    check_keras_tuner()


def test_a_version_bump_fails_fast_naming_both_versions(monkeypatch):
    monkeypatch.setattr(kt, "__version__", "1.5.0")
    with pytest.raises(RuntimeError, match=r"keras-tuner 1\.5\.0 is installed.*1\.4\.8"):
        check_keras_tuner()


def test_a_missing_private_name_fails_fast(monkeypatch):
    monkeypatch.delattr(kt.Oracle, "_duplicate")
    with pytest.raises(RuntimeError, match=r"gone: Oracle\._duplicate\. "):
        check_keras_tuner()


def test_every_tuner_has_a_resume_safe_oracle():
    classes = oracle_classes()
    assert set(classes) == {"random", "bayesian", "hyperband", "grid"}
    assert all(issubclass(c, tuner_compat.ResumeSafeOracle) for c in classes.values())
