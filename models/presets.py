"""The defaults, in one place: what `make train` trains and what the search spaces start from.

The search spaces (tuning.space) take their first choices from these, so "trial 0" of a
search is the model `make train` would give.
"""
from __future__ import annotations

from models.anchors import AnchorConfig
from models.cnn import CNNConfig
from models.ssd import SSDConfig


def default_cnn() -> CNNConfig:
    """The classifier: three conv/ReLU/max-pool blocks and one dense layer (CNNConfig's defaults)."""
    return CNNConfig()


def default_ssd() -> SSDConfig:
    """The detector for the built-in 128 px shapes: objects are 16..44 % of the image side."""
    return SSDConfig(
        anchors=AnchorConfig(input_size=128, strides=(8, 16, 32), min_scale=0.15, max_scale=0.45,
                             aspect_ratios=(1.0, 2.0, 0.5)),
        alpha=0.35, head="ssdlite", head_depth=1, head_filters=64, extra_filters=128,
    )
