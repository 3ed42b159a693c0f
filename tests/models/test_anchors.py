"""Anchor geometry, checked against boxes worked out by hand."""
import json
import math

import numpy as np
import pytest

from models.anchors import AnchorConfig, generate_anchors

# One 2x2 level (64 px input, stride 32), one square anchor of side 0.5 per cell.
TINY = AnchorConfig(input_size=64, strides=(32,), min_scale=0.5, max_scale=0.5, aspect_ratios=(1.0,), extra_scale=False)


def test_tiny_config_gives_the_four_quadrants_in_row_major_order():
    expected = [
        [0.0, 0.0, 0.5, 0.5],
        [0.0, 0.5, 0.5, 1.0],
        [0.5, 0.0, 1.0, 0.5],
        [0.5, 0.5, 1.0, 1.0],
    ]
    anchors = generate_anchors(TINY)
    assert anchors.dtype == np.float32
    np.testing.assert_allclose(anchors, expected, atol=1e-7)


def test_aspect_ratios_and_extra_scale_at_one_cell():
    cfg = TINY.replace(aspect_ratios=(1.0, 2.0), extra_scale=True)
    assert cfg.per_location == 3
    first_cell = generate_anchors(cfg)[:3]  # cell (0, 0), centre (0.25, 0.25)
    h2, w2 = 0.5 / math.sqrt(2), 0.5 * math.sqrt(2)  # ratio 2 = width / height, area 0.25
    extra = math.sqrt(0.5 * 1.0)  # sqrt(s_k * s_k+1), with 1.0 after the last level
    expected = [
        [0.0, 0.0, 0.5, 0.5],
        [0.25 - h2 / 2, 0.25 - w2 / 2, 0.25 + h2 / 2, 0.25 + w2 / 2],
        [0.25 - extra / 2, 0.25 - extra / 2, 0.25 + extra / 2, 0.25 + extra / 2],
    ]
    np.testing.assert_allclose(first_cell, expected, atol=1e-6)


def test_counts_sizes_and_scales_of_a_multi_level_config():
    cfg = AnchorConfig(input_size=320, strides=(16, 32, 64, 128), min_scale=0.2, max_scale=0.8, aspect_ratios=(1.0, 2.0, 0.5))
    assert cfg.per_location == 4
    assert cfg.feature_map_sizes == (20, 10, 5, 3)  # 320 / 128 rounds up, as stride-2 "same" convs do
    np.testing.assert_allclose(cfg.scales, (0.2, 0.4, 0.6, 0.8))
    assert cfg.num_anchors == (400 + 100 + 25 + 9) * 4
    assert generate_anchors(cfg).shape == (cfg.num_anchors, 4)


def test_order_matches_a_reshaped_head_output():
    cfg = AnchorConfig(input_size=96, strides=(32, 64), aspect_ratios=(1.0, 3.0), extra_scale=True)
    anchors = generate_anchors(cfg)
    k = cfg.per_location
    offset = 0
    for level, n in enumerate(cfg.feature_map_sizes):
        grid = anchors[offset : offset + n * n * k].reshape(n, n, k, 4)  # as a [H, W, k*4] head reshapes
        offset += n * n * k
        centres = (grid[..., :2] + grid[..., 2:]) / 2
        np.testing.assert_allclose(centres[..., 0], np.broadcast_to(((np.arange(n) + 0.5) / n)[:, None, None], (n, n, k)), atol=1e-6)
        np.testing.assert_allclose(centres[..., 1], np.broadcast_to(((np.arange(n) + 0.5) / n)[None, :, None], (n, n, k)), atol=1e-6)
        sides = grid[..., 2:] - grid[..., :2]
        assert np.allclose(sides, sides[:1, :1])  # the same k shapes at every cell
        assert sides[0, 0, 1, 1] / sides[0, 0, 1, 0] == pytest.approx(3.0, rel=1e-5)  # anchor 1 is the 3:1 one
    assert offset == len(anchors)


@pytest.mark.parametrize(
    "changes",
    [dict(strides=()), dict(strides=(32, 16)), dict(min_scale=0.0), dict(min_scale=0.9, max_scale=0.5), dict(aspect_ratios=(1.0, -2.0))],
)
def test_invalid_config_is_rejected(changes):
    with pytest.raises(ValueError, match="invalid AnchorConfig"):
        AnchorConfig(**changes)


def test_dict_round_trip_through_json():
    cfg = AnchorConfig(input_size=128, strides=(16, 32), aspect_ratios=(1.0, 0.5))
    assert AnchorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        AnchorConfig.from_dict({"input_size": 64, "stride": 32})
