"""The seeded split every file source uses to carve the splits it does not provide.

    seeded_split(items, fractions, seed, strata=None) -> [rest, part_1, ...]
    carve_splits(items, given, seed, strata=None)      -> {"train", "validation", "test"}

``folder:`` stratifies by class (each class is cut on its own); ``voc:`` and ``coco:`` cut the
whole list. For a given seed both always send the same items to the same split: the order of
random draws (one permutation per stratum, strata in sorted order) is part of the contract, since a
resumed or compared run must see the split it saw before.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HOLDOUT = 0.1  # fraction carved for validation, and for test, when a source does not provide them
HELD_OUT = ("validation", "test")  # the splits that may be carved, in the order they are cut


def _cut(order: np.ndarray, fractions: Sequence[float]) -> list[list[int]]:
    """Cut the shuffled indices ``order`` into [rest, part_1, ...]: part k takes ``fractions[k]`` of them,
    at least one when there are more indices than parts (none otherwise)."""
    parts, start = [], 0
    for frac in fractions:
        n = max(1, int(round(frac * len(order)))) if len(order) > len(fractions) else 0
        parts.append(order[start:start + n].tolist())
        start += n
    return [order[start:].tolist(), *parts]


def seeded_split(items: list, fractions: tuple[float, ...], seed: int, strata: Sequence[int] | None = None) -> list[list]:
    """Shuffle ``items`` with ``seed`` and cut off ``fractions`` of them. Returns [rest, part_1, ...],
    each in the original order; every part gets at least one item when there are more items than parts.

    ``strata`` (one int per item, e.g. class labels): cut each stratum on its own, so every part keeps
    the classes' proportions; strata are drawn in sorted order from one generator.
    """
    rng = np.random.default_rng(seed)
    if strata is None:
        indices = _cut(rng.permutation(len(items)), fractions)
    else:
        strata = np.asarray(strata)
        indices = [[] for _ in range(len(fractions) + 1)]
        for stratum in np.unique(strata):
            for k, part in enumerate(_cut(rng.permutation(np.flatnonzero(strata == stratum)), fractions)):
                indices[k] += part
    return [[items[i] for i in sorted(idx)] for idx in indices]


def carve_splits(items: list, given: dict[str, list], seed: int,
                 strata: Sequence[int] | None = None) -> dict[str, list]:
    """train, validation and test: each split in ``given`` (validation and/or test) as it is, each
    missing one carved from ``items`` (``HOLDOUT`` of them, validation before test); train is the rest."""
    missing = [s for s in HELD_OUT if s not in given]
    rest, *carved = seeded_split(items, (HOLDOUT,) * len(missing), seed, strata)
    splits = {"train": rest, **given, **dict(zip(missing, carved))}
    return {s: splits[s] for s in ("train", *HELD_OUT)}
