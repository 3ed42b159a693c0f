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
MIN_HELD_OUT = 200  # ...but at least this many images each, so a split can tell models apart
MAX_HOLDOUT = 0.15  # ...and never more than this fraction each, so training keeps most of a small dataset
HELD_OUT = ("validation", "test")  # the splits that may be carved, in the order they are cut


def small_held_out(images: int) -> bool:
    """A held-out split too small to decide much: under MIN_HELD_OUT, with a margin for the per-class
    rounding of a stratified cut (a split asked for 200 images may get 199)."""
    return images < 0.9 * MIN_HELD_OUT


def held_out_fraction(total: int) -> float:
    """The fraction carved for each held-out split of ``total`` items: HOLDOUT, raised so the split
    holds MIN_HELD_OUT items, but never above MAX_HOLDOUT (a small dataset keeps its training data;
    the report then says the validation split is small)."""
    if total <= 0:
        return HOLDOUT
    return min(max(HOLDOUT, MIN_HELD_OUT / total), MAX_HOLDOUT)


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
    missing one carved from ``items`` (``held_out_fraction`` of them, validation before test); train is the rest."""
    missing = [s for s in HELD_OUT if s not in given]
    rest, *carved = seeded_split(items, (held_out_fraction(len(items)),) * len(missing), seed, strata)
    splits = {"train": rest, **given, **dict(zip(missing, carved))}
    return {s: splits[s] for s in ("train", *HELD_OUT)}
