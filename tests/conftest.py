"""Shared fixtures: tiny data the tests make themselves, offline."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

TINY_SHAPES = "shapes:train=280,validation=70,test=70,size=32"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data dir shared by the session; the built-in shapes variants are prepared into it."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_shapes(data_dir):
    """A small classification variant of the built-in data (32x32 images)."""
    from pipeline.sources.specs import open_source

    return open_source(TINY_SHAPES, "classify", data_dir=data_dir)
