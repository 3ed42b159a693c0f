"""Anchor (default box) geometry of the SSD detector.

``AnchorConfig`` is the single source of truth for the anchors: the SSD heads
take their channel counts from ``per_location``, the target encoder in the
input pipeline matches against ``generate_anchors(cfg)``, and the exporter
bakes the same array into the ``.tflite`` as a constant.

Anchors are returned as boxes in the project's one box format: normalized
[ymin, xmin, ymax, xmax], float32. They are not clipped to the image, so an
anchor's centre and size are exactly what its level and shape say.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np


@dataclass(frozen=True)
class AnchorConfig:
    """Where the anchors sit and what shapes they have.

    input_size:    side of the square model input (pixels).
    strides:       input pixels per feature-map cell of each level, increasing; one SSD head
                   per level. A level's map is ceil(input_size / stride) cells square, which
                   is what a chain of stride-2 "same"-padded convolutions produces.
    min_scale:     anchor side at the first level, as a fraction of the image side.
    max_scale:     anchor side at the last level; the levels between are spaced linearly, as
                   in SSD. Unused with a single level.
    aspect_ratios: width / height of the anchors at every cell (area stays scale**2).
    extra_scale:   add SSD's extra square anchor of side sqrt(s_k * s_k+1) per cell, which
                   fills the gap between one level's scale and the next (1.0 after the last).
    """

    input_size: int = 320
    strides: tuple[int, ...] = (16, 32, 64, 128)
    min_scale: float = 0.2
    max_scale: float = 0.9
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    extra_scale: bool = True

    def __post_init__(self):
        # Tuples, not lists: JSON round trips give lists, and the config must stay hashable.
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "aspect_ratios", tuple(float(r) for r in self.aspect_ratios))
        problems = []
        if self.input_size < 1:
            problems.append(f"input_size must be >= 1, got {self.input_size}")
        if not self.strides or min(self.strides) < 1 or list(self.strides) != sorted(set(self.strides)):
            problems.append(f"strides must be one or more increasing positive ints, got {self.strides}")
        if not 0.0 < self.min_scale <= self.max_scale:
            problems.append(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            problems.append(f"aspect_ratios must be one or more positive numbers, got {self.aspect_ratios}")
        if problems:
            raise ValueError("invalid AnchorConfig: " + "; ".join(problems))

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def per_location(self) -> int:
        """Anchors per feature-map cell; the heads predict this many boxes per cell."""
        return len(self.aspect_ratios) + int(self.extra_scale)

    @property
    def feature_map_sizes(self) -> tuple[int, ...]:
        """Side of each level's square feature map, in cells."""
        return tuple(math.ceil(self.input_size / s) for s in self.strides)

    @property
    def scales(self) -> tuple[float, ...]:
        """Anchor side of each level, as a fraction of the image side."""
        if self.num_levels == 1:
            return (self.min_scale,)
        step = (self.max_scale - self.min_scale) / (self.num_levels - 1)
        return tuple(self.min_scale + step * k for k in range(self.num_levels))

    @property
    def num_anchors(self) -> int:
        """A, the number of anchors (and of rows in the model's outputs)."""
        return sum(n * n * self.per_location for n in self.feature_map_sizes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["strides"] = list(self.strides)
        d["aspect_ratios"] = list(self.aspect_ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AnchorConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown AnchorConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "AnchorConfig":
        return replace(self, **changes)


def anchor_shapes(cfg: AnchorConfig, level: int) -> np.ndarray:
    """Heights and widths of the anchors at one cell of ``level``: float32 [per_location, 2].

    Row k is the anchor k of every cell, in the order the heads' channels use.
    """
    scales = cfg.scales + (1.0,)
    s = scales[level]
    shapes = [(s / math.sqrt(r), s * math.sqrt(r)) for r in cfg.aspect_ratios]
    if cfg.extra_scale:
        side = math.sqrt(s * scales[level + 1])
        shapes.append((side, side))
    return np.asarray(shapes, dtype=np.float32)


def generate_anchors(cfg: AnchorConfig) -> np.ndarray:
    """All anchors: float32 [A, 4], normalized [ymin, xmin, ymax, xmax] (corners).

    A = sum over levels of H * W * per_location. Rows are ordered level, then
    cell row y, then cell column x, then anchor k -- exactly the order of a
    head output [B, H, W, per_location * D] reshaped to [B, H * W * per_location, D]
    and concatenated over levels. Cell (y, x) of an H x W map is centred at
    ((y + 0.5) / H, (x + 0.5) / W).
    """
    levels = []
    for level, n in enumerate(cfg.feature_map_sizes):
        centres = (np.arange(n, dtype=np.float32) + 0.5) / n
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        yx = np.stack([cy, cx], axis=-1)[:, :, None, :]  # [H, W, 1, 2]
        half = anchor_shapes(cfg, level)[None, None, :, :] / 2.0  # [1, 1, K, 2]
        levels.append(np.concatenate([yx - half, yx + half], axis=-1).reshape(-1, 4))
    return np.concatenate(levels, axis=0).astype(np.float32)
