"""The training recipe's data-derived choices: what `make train` picks from the user's data.

    profile_source(source)               -> DataProfile   (a sample of the train split)
    classifier_image_size(profile, ...)  -> (side, why)
    detector_input_size(profile, ...)    -> (side, why)
    class_weights(profile, mode)         -> ({class: weight} or None, why)

The rules, also in the README ("How `make train` chooses"):

* classifier input: the native side (median of the sampled images' shorter sides) rounded up to a
  multiple of 8, never below what the CNN's pooling needs (``pooling_floor``: 4 px left after the
  last pool; measured on sklearn's 8 px digits: 2 px left gave 98.5 %, 4 px 99.5 %) and never above ``MAX_CNN_SIDE`` (2-core training cost). MobileNetV2 takes one of its
  ImageNet sizes (``MOBILENET_SIDES``), the smallest at or above the native side, capped at
  ``MAX_MOBILENET_SIDE``.
* detector input: the 10th percentile of object sides must cover ``MIN_OBJECT_PX`` input pixels
  (two cells of the finest, stride-8 feature map), rounded up to a multiple of 32, between
  ``DETECTOR_SIDES`` and never more than the native image side (no upsampling of whole images).
  Then, when the run is held to a time budget, the side is lowered 32 px at a time while the budget
  affords fewer than ``wanted_steps`` optimizer steps at it (the detector's ``SIDE_STEPS``), as long
  as the smallest tenth of objects keeps ``MIN_SMALL_OBJECT_PX`` (one stride-8 cell). Calibrated on the benchmark's 600-photo VOC set on a 2-core CPU, batches of 16: the 30
  minutes afford about 2,600 steps at 256 px, 3,400 at 224 and 4,500 at 192; 192 px trained 3,960
  and reached mAP@.5 0.832 (at batch 32: 256 px, 1,020 steps, 0.773; 192 px, 2,415, 0.801). On a
  fast machine the budget affords the steps at the wanted side, and nothing is lowered.
* class weights: inverse class frequency when the largest class has more than ``IMBALANCE``
  times the images of the smallest (CLASS_WEIGHTS=auto); CLASS_WEIGHTS=none never.

Every choice comes with its reason, which the report prints; explicit variables win.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.sources.schema import Source

PROFILE_IMAGES = 2000  # train images sampled for sizes (and labels, when the source has no counts)
MAX_CNN_SIDE = 64
MOBILENET_SIDES = (96, 128, 160, 192, 224)  # the sizes keras.applications has ImageNet weights for
MAX_MOBILENET_SIDE = 160
MIN_OBJECT_PX = 16
MIN_SMALL_OBJECT_PX = 8  # the least a time budget may leave the smallest tenth of objects
DETECTOR_SIDES = (128, 320)  # min, max
IMBALANCE = 3.0
CLASS_WEIGHT_MODES = ("auto", "none")


@dataclass(frozen=True)
class DataProfile:
    """What the recipe knows of the training data.

    train_images: size of the train split; sampled: images looked at.
    sides:        int [n, 2] (height, width) of the sampled images.
    class_counts: images per class in the train split (classification; counted by the source, or
                  from the sample); () for detection.
    boxes:        float32 [m, 4] normalized [ymin, xmin, ymax, xmax] of the sampled images'
                  objects (detection); empty for classification.
    """

    train_images: int
    sampled: int
    sides: np.ndarray
    class_counts: tuple[int, ...] = ()
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    @property
    def native_side(self) -> int:
        """Median of the sampled images' shorter sides (pixels)."""
        return int(np.median(self.sides.min(axis=1))) if len(self.sides) else 0

    def to_dict(self) -> dict:
        return {"train_images": self.train_images, "sampled": self.sampled, "native_side": self.native_side,
                "class_counts": list(self.class_counts), "objects_sampled": int(len(self.boxes))}


def profile_source(source: Source, limit: int = PROFILE_IMAGES) -> DataProfile:
    """Look at up to ``limit`` train images: their sizes, labels and boxes. A classification source
    that knows its images' sizes from their headers and counts its labels (folder:) is profiled
    whole, without decoding an image."""
    if source.task == "classify" and source.train_sides is not None and source.train_label_counts:
        return DataProfile(train_images=int(source.split_sizes.get("train", 0)), sampled=len(source.train_sides),
                           sides=np.asarray(source.train_sides, np.int64).reshape(-1, 2),
                           class_counts=tuple(source.train_label_counts))
    sides, labels, boxes = [], [], []
    for ex in source.examples("train").take(limit):
        sides.append(ex["image"].shape[:2])
        if "label" in ex:
            labels.append(int(ex["label"]))
        if "boxes" in ex:
            boxes.append(np.asarray(ex["boxes"], np.float32).reshape(-1, 4))
    counts: tuple[int, ...] = ()
    if source.task == "classify":
        counts = tuple(source.train_label_counts) if source.train_label_counts else \
            tuple(int(c) for c in np.bincount(np.asarray(labels, np.int64), minlength=source.num_classes))
    return DataProfile(
        train_images=int(source.split_sizes.get("train", 0)), sampled=len(sides),
        sides=np.asarray(sides, np.int64).reshape(-1, 2), class_counts=counts,
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32))


def describe_choices(choices: list[dict]) -> str:
    """The lines printed before training: one per choice, "SETTING=value: why"."""
    return "\n".join(f"  {c['setting']}={c['value']}: {c['why']}" for c in choices)


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def pooling_floor(num_pools: int, pool_stride: int) -> int:
    """The smallest input side that leaves 4 px after ``num_pools`` poolings of ``pool_stride``."""
    return 4 * pool_stride ** num_pools


def classifier_image_size(profile: DataProfile, *, model: str, num_pools: int = 3, pool_stride: int = 2) -> tuple[int, str]:
    """The classifier's input side for this data, and why."""
    native = profile.native_side
    if model == "mobilenetv2":
        side = next((s for s in MOBILENET_SIDES if s >= native), MOBILENET_SIDES[-1])
        side = min(side, MAX_MOBILENET_SIDE)
        return side, (f"MobileNetV2 input: the smallest ImageNet size at or above the native {native} px "
                      f"(at most {MAX_MOBILENET_SIDE})")
    floor = pooling_floor(num_pools, pool_stride)
    side = min(max(_round_up(max(native, 1), 8), floor), MAX_CNN_SIDE)
    if side > native:
        why = f"native {native} px, raised to {side} px so {num_pools} poolings leave 4 px"
    elif side < native:
        why = f"native {native} px, capped at {MAX_CNN_SIDE} px (training cost)"
    else:
        why = f"the native {native} px"
    return side, why


def detector_input_size(profile: DataProfile, afforded_steps: Callable[[int], int] | None = None,
                        wanted_steps: int = 0) -> tuple[int, str]:
    """The detector's input side: the small objects must cover MIN_OBJECT_PX pixels; with
    ``afforded_steps`` (side -> the optimizer steps the time budget affords at it), lowered while they
    fall short of ``wanted_steps``, down to MIN_SMALL_OBJECT_PX for the small objects (module docstring)."""
    lo, hi = DETECTOR_SIDES
    boxes = profile.boxes
    sides = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, 1) * np.clip(boxes[:, 3] - boxes[:, 1], 0, 1))
    sides = sides[sides > 0]
    if not len(sides):
        return lo, f"no boxes in the sampled images; the smallest input, {lo} px"
    small = float(np.quantile(sides, 0.1))
    native = profile.native_side or hi
    wanted = _round_up(MIN_OBJECT_PX / small, 32)
    cap = max(lo, min(hi, _round_up(native, 32)))
    side = min(max(wanted, lo), cap)
    why = (f"the smallest tenth of objects is {small:.3f} of the image side; {MIN_OBJECT_PX} px of it need "
           f"{wanted} px")
    if side != wanted:
        why += f", kept within {lo}..{cap} px (native side {native} px)"
    if afforded_steps is None:
        return side, why
    floor = max(lo, _round_up(MIN_SMALL_OBJECT_PX / small, 32))
    lowered = side
    while lowered - 32 >= floor and afforded_steps(lowered) < wanted_steps:
        lowered -= 32
    if lowered != side:
        why += (f"; lowered to {lowered} px for the time budget: it affords {afforded_steps(side)} steps at "
                f"{side} px, {afforded_steps(lowered)} at {lowered} px (wanted {wanted_steps}); the smallest "
                f"tenth keeps {small * lowered:.0f} px")
    return lowered, why


def class_weights(profile: DataProfile, mode: str) -> tuple[dict[int, float] | None, str]:
    """Keras ``class_weight`` for this data (None: unweighted), and why."""
    if mode not in CLASS_WEIGHT_MODES:
        raise ValueError(f"CLASS_WEIGHTS={mode}: expected one of {', '.join(CLASS_WEIGHT_MODES)}")
    counts = np.asarray(profile.class_counts, np.float64)
    if mode == "none" or not len(counts):
        return None, "CLASS_WEIGHTS=none"
    present = counts[counts > 0]
    ratio = float(present.max() / present.min()) if len(present) else 1.0
    if ratio <= IMBALANCE:
        return None, f"classes balanced within {ratio:.1f}x (weights from {IMBALANCE:g}x)"
    weights = {i: float(counts.sum() / (len(present) * c)) for i, c in enumerate(counts) if c > 0}
    return weights, f"largest class {ratio:.1f}x the smallest: inverse-frequency weights"
