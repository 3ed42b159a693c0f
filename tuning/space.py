"""The search spaces: what `make tune` may vary, and the one place that asks Keras Tuner for values.

Three spaces, one per model:

    SearchSpace           the classifier (TASK=classify): a CNN of conv/ReLU/max-pool blocks and dense layers
    MobileNetSearchSpace  the classifier with MODEL=mobilenetv2: width, dropout, learning rate, fine-tuned blocks
    SSDSearchSpace        the detector (TASK=detect): SSD on MobileNetV2, its heads and its anchors

Each holds two kinds of entries:

    ranges   (min, max), inclusive, for counts: conv_blocks, dense_layers
    choices  a tuple of allowed values, the first is the default (Grid starts there)

Every default space holds the model `make train` builds, and that model is trial 0 of every search
(``SearchSpace.values_of``, ``ChoiceSpace.default_values``), so a search always measures what it
has to beat.

Defaults are small on purpose: on-device models, and a search that finishes on
a laptop CPU. A YAML or JSON file (``SPACE=file``) or ``KEY=V1,V2`` overrides
(``SPACE_SET=``) narrow or widen any entry; unknown keys are errors.

    conv_blocks: [1, 2]        # range: min, max
    filters: [8, 16, 32, 64]   # choices for every block's filters
    learning_rate: 0.001       # one value: not searched
    aspect_ratios: ["1", "1:2:0.5"]   # detector: each choice is a set of ratios joined by ":"
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from common.errors import ConfigError
from models.cnn import CNNConfig, feature_map_sizes
from models.mobilenet import ALPHAS as MOBILENET_ALPHAS, NUM_BLOCKS as MOBILENET_BLOCKS, MobileNetConfig
from models.ssd import SSDConfig

RANGES = ("conv_blocks", "dense_layers")
CHOICES = ("filters", "kernel_size", "pool_size", "pool_stride", "hidden_units", "dropout", "learning_rate",
           "input_scale")


@dataclass(frozen=True)
class SearchSpace:
    """conv_blocks:  number of [conv -> ReLU -> max-pool] blocks, (min, max).
    filters:      output channels, chosen per block (filters_1, filters_2, ...).
    kernel_size:  side of every conv kernel.
    pool_size:    side of every max-pooling window.
    pool_stride:  step of every max-pooling window.
    dense_layers: number of hidden fully connected layers, (min, max).
    hidden_units: width, chosen per dense layer (units_1, units_2, ...).
    dropout:      rate before each dense layer and the classifier.
    learning_rate: Adam's learning rate.
    input_scale:  the input side as a share of `make train`'s (the recipe's, or IMAGE_SIZE=): the
                  strongest lever on latency, since the first convolution runs at full resolution
                  (``scaled_input_size``: a multiple of 8, raised until the trial's blocks fit).
    """

    conv_blocks: tuple[int, int] = (1, 3)
    filters: tuple[int, ...] = (8, 16, 32, 64)
    kernel_size: tuple[int, ...] = (3, 5)
    pool_size: tuple[int, ...] = (2, 3)
    pool_stride: tuple[int, ...] = (2, 3)
    dense_layers: tuple[int, int] = (0, 1)
    hidden_units: tuple[int, ...] = (32, 64, 128)
    dropout: tuple[float, ...] = (0.3, 0.0, 0.5)
    learning_rate: tuple[float, ...] = (2e-3, 1e-3, 5e-3, 5e-4)
    input_scale: tuple[float, ...] = (1.0, 0.75, 0.5)

    def __post_init__(self):
        for name in RANGES:
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("filters", "kernel_size", "pool_size", "pool_stride", "hidden_units"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("dropout", "learning_rate", "input_scale"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        problems = []
        for name in RANGES:
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                problems.append(f"{name} must be [min, max] with min <= max, got {list(lo_hi)}")
        if self.conv_blocks and self.conv_blocks[0] < 1:
            problems.append(f"conv_blocks must start at 1 or more, got {list(self.conv_blocks)}")
        if self.dense_layers and self.dense_layers[0] < 0:
            problems.append(f"dense_layers cannot be negative, got {list(self.dense_layers)}")
        for name in CHOICES:
            values = getattr(self, name)
            if not values:
                problems.append(f"{name} needs at least one value")
            elif len(set(values)) != len(values):
                problems.append(f"{name} lists a value twice: {list(values)}")
        for name in ("filters", "kernel_size", "pool_size", "pool_stride", "hidden_units"):
            if any(v < 1 for v in getattr(self, name)):
                problems.append(f"{name} values must be >= 1, got {list(getattr(self, name))}")
        if any(not 0.0 <= v < 1.0 for v in self.dropout):
            problems.append(f"dropout values must be in [0, 1), got {list(self.dropout)}")
        if any(v <= 0 for v in self.learning_rate):
            problems.append(f"learning_rate values must be positive, got {list(self.learning_rate)}")
        if any(not 0.0 < v <= 1.0 for v in self.input_scale):
            problems.append(f"input_scale values must be in (0, 1], got {list(self.input_scale)}")
        if problems:
            raise ConfigError("search space: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "SearchSpace":
        return replace(cls(), **_parse_entries(d, cls))

    def check_input_size(self, input_size: int) -> None:
        """Raise ConfigError unless every configuration in the space builds at ``input_size``.

        The smallest feature map comes from the most blocks with the largest
        pooling window and stride, so checking that one corner is enough.
        """
        worst = CNNConfig(filters=(1,) * self.conv_blocks[1], pool_size=max(self.pool_size),
                          pool_stride=max(self.pool_stride), hidden_units=())
        if feature_map_sizes(worst, input_size)[-1] < 1:
            raise ConfigError(
                f"search space: {self.conv_blocks[1]} conv blocks with pool_size {max(self.pool_size)} and "
                f"pool_stride {max(self.pool_stride)} shrink a {input_size}px image to nothing; "
                f"lower conv_blocks' max, the pooling choices, or raise the image size"
            )

    def values_of(self, cnn: CNNConfig, learning_rate: float) -> dict | None:
        """The hyperparameter values of ``cnn`` trained at ``learning_rate`` (the product default, for
        trial 0), as ``sample_cnn_config`` reads them; None when the space does not hold that model."""
        values = {"conv_blocks": len(cnn.filters)}
        values.update({filters_name(i + 1): f for i, f in enumerate(cnn.filters)})
        values.update(kernel_size=cnn.kernel_size, pool_size=cnn.pool_size, pool_stride=cnn.pool_stride,
                      dense_layers=len(cnn.hidden_units))
        values.update({units_name(j + 1): u for j, u in enumerate(cnn.hidden_units)})
        values.update(dropout=cnn.dropout, learning_rate=learning_rate, input_scale=1.0)
        domains = self.hyperparameters()
        inside = all(v in domains[k] for k, v in values.items())
        return values if inside else None

    def num_configurations(self) -> int:
        """How many distinct models the space holds (the size of a full grid search)."""
        blocks = sum(len(self.filters) ** n for n in range(self.conv_blocks[0], self.conv_blocks[1] + 1))
        dense = sum(len(self.hidden_units) ** n for n in range(self.dense_layers[0], self.dense_layers[1] + 1))
        shared = math.prod(len(getattr(self, n)) for n in ("kernel_size", "pool_size", "pool_stride",
                                                           "dropout", "learning_rate", "input_scale"))
        return blocks * dense * shared

    def hyperparameters(self) -> dict[str, tuple]:
        """Every hyperparameter Keras Tuner sees, in declaration order, with its possible values.

        filters_i exists for each block up to conv_blocks' max, units_j for each dense layer up
        to dense_layers' max; a trial uses the first conv_blocks / dense_layers of them.
        """
        out: dict[str, tuple] = {"conv_blocks": tuple(range(self.conv_blocks[0], self.conv_blocks[1] + 1))}
        out.update({filters_name(i): self.filters for i in range(1, self.conv_blocks[1] + 1)})
        out.update(kernel_size=self.kernel_size, pool_size=self.pool_size, pool_stride=self.pool_stride,
                   dense_layers=tuple(range(self.dense_layers[0], self.dense_layers[1] + 1)))
        out.update({units_name(j): self.hidden_units for j in range(1, self.dense_layers[1] + 1)})
        out.update(dropout=self.dropout, learning_rate=self.learning_rate, input_scale=self.input_scale)
        return out

    def describe(self) -> list[tuple[str, str, str]]:
        """(hyperparameter, kind, values) rows for the report: the space as searched."""
        rows = []
        for f in fields(self):
            values = getattr(self, f.name)
            if f.name in RANGES:
                rows.append((f.name, "int range", f"{values[0]} .. {values[1]}"))
            else:
                label = {"filters": "filters_i (each conv block)", "hidden_units": "units_j (each dense layer)"}
                rows.append((label.get(f.name, f.name), "choice", ", ".join(f"{v:g}" for v in values)))
        return rows


def _parse_entries(d: dict, space_cls) -> dict:
    """{name: value or list} from a file or overrides -> {name: tuple}; names and types are checked."""
    if not isinstance(d, dict):
        raise ConfigError(f"search space must be a mapping of names to values, got {type(d).__name__}")
    known = {f.name for f in fields(space_cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"search space: unknown entries {unknown}; known: {sorted(known)}")
    texts = getattr(space_cls, "TEXT_ENTRIES", ())
    out = {}
    for name, value in d.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if name in RANGES and len(values) == 1:
            values = values * 2  # a single count is a range of one
        if name == "aspect_ratios":
            values = [ratios_text(v) for v in values]
        elif name in texts:
            if not all(isinstance(v, str) for v in values):
                raise ConfigError(f"search space: {name} needs names, got {value!r}")
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"search space: {name} needs numbers, got {value!r}")
        out[name] = tuple(values)
    return out


def _override_values(space_cls, key: str, text: str) -> list:
    """The values of one ``KEY=V1,V2`` override: names stay text, everything else is a number."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if key in getattr(space_cls, "TEXT_ENTRIES", ()):
        return items
    return [float(t) if any(c in t for c in ".e") else int(t) for t in items]


def load_space(path: Path | None = None, overrides: list[str] | tuple[str, ...] = (),
               space_cls: type = None):
    """``space_cls``'s default space (SearchSpace unless given), changed by a YAML/JSON file, then by
    ``KEY=V1,V2`` overrides."""
    space_cls = space_cls or SearchSpace
    space = space_cls()
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
            space = replace(space, **_parse_entries(loaded or {}, space_cls))
        except FileNotFoundError:
            raise ConfigError(f"SPACE={path}: file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"SPACE={path}: not valid YAML or JSON ({e})") from None
        except ConfigError as e:
            raise ConfigError(f"SPACE={path}: {e}") from None
    for item in overrides:
        key, sep, text = item.partition("=")
        try:
            values = _override_values(space_cls, key.strip(), text)
        except ValueError:
            values = None
        if not sep or not values:
            raise ConfigError(f"SPACE_SET: expected KEY=V1,V2,... with numbers, got {item!r}")
        try:
            space = replace(space, **_parse_entries({key.strip(): values}, space_cls))
        except ConfigError as e:
            raise ConfigError(f"SPACE_SET {item}: {e}") from None
    return space


def filters_name(block: int) -> str:
    return f"filters_{block}"


def units_name(layer: int) -> str:
    return f"units_{layer}"


def _int_range(hp, name: str, lo_hi: tuple[int, int]) -> int:
    lo, hi = lo_hi
    return hp.Fixed(name, lo) if lo == hi else hp.Int(name, lo, hi)


def _choice(hp, name: str, values: tuple):
    return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, list(values))


def _per_item_choices(hp, count: str, count_range: tuple[int, int], name, choices) -> list:
    """Sample a count in ``count_range``, then one value per item (block or layer).

    Item i's value is conditional on ``count >= i``, so an unused item never makes two
    trials differ. Returns the values of the items in use.
    """
    n = _int_range(hp, count, count_range)
    lo, hi = count_range
    values = []
    for i in range(1, hi + 1):
        with hp.conditional_scope(count, list(range(max(i, lo), hi + 1))):
            value = _choice(hp, name(i), choices)
        if i <= n:
            values.append(value)
    return values


def sample_cnn_config(hp, space: SearchSpace) -> tuple[CNNConfig, float]:
    """Ask ``hp`` (a keras_tuner HyperParameters) for one point of ``space``.

    Per-block filters and per-layer units are conditional on the block and
    layer counts, so an unused block's filters never count as a different trial.

    Returns:
        (the CNN's config, the learning rate).
    """
    filters = _per_item_choices(hp, "conv_blocks", space.conv_blocks, filters_name, space.filters)
    kernel_size = _choice(hp, "kernel_size", space.kernel_size)
    pool_size = _choice(hp, "pool_size", space.pool_size)
    pool_stride = _choice(hp, "pool_stride", space.pool_stride)
    units = _per_item_choices(hp, "dense_layers", space.dense_layers, units_name, space.hidden_units)
    dropout = _choice(hp, "dropout", space.dropout)
    learning_rate = _choice(hp, "learning_rate", space.learning_rate)
    cfg = CNNConfig(filters=tuple(filters), kernel_size=kernel_size, pool_size=pool_size,
                    pool_stride=pool_stride, hidden_units=tuple(units), dropout=dropout)
    return cfg, float(learning_rate)


def scaled_input_size(base: int, scale: float, cnn: CNNConfig) -> int:
    """The input side of a trial: ``base`` (`make train`'s) at ``scale``, a multiple of 8 (at least 8),
    raised in steps of 8 (up to ``base``) until ``cnn``'s poolings leave at least one pixel."""
    if scale >= 1.0:
        return base
    side = max(8, int(round(base * scale / 8)) * 8)
    while side < base and feature_map_sizes(cnn, side)[-1] < 1:
        side += 8
    return min(side, base)


def trial_input_size(hp, space: SearchSpace, base: int, cnn: CNNConfig) -> int:
    """Ask ``hp`` for the trial's input_scale; its input side (``scaled_input_size``)."""
    return scaled_input_size(base, float(_choice(hp, "input_scale", space.input_scale)), cnn)


# --- the detector ----------------------------------------------------------------------------------

def ratios_text(value) -> str:
    """One anchor aspect-ratio set as a Keras Tuner choice: "1:2:0.5" (from that text, a number or a list)."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(":")
    try:
        ratios = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ConfigError(f"search space: aspect_ratios needs sets of numbers like 1:2:0.5, got {value!r}") from None
    if not ratios or min(ratios) <= 0:
        raise ConfigError(f"search space: aspect ratios must be positive, got {value!r}")
    return ":".join(f"{r:g}" for r in ratios)


def parse_ratios(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(":"))


class ChoiceSpace:
    """What a space made only of choices (every field a tuple of allowed values, the first the default)
    has in common: serialisation, its size, the hyperparameters Keras Tuner sees, the report's rows."""

    def choice_problems(self) -> list[str]:
        """Every entry needs at least one value, and no value twice."""
        problems = []
        for f in fields(self):
            values = getattr(self, f.name)
            if not values:
                problems.append(f"{f.name} needs at least one value")
            elif len(set(values)) != len(values):
                problems.append(f"{f.name} lists a value twice: {list(values)}")
        return problems

    def to_dict(self) -> dict:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict):
        return replace(cls(), **_parse_entries(d, cls))

    def num_configurations(self) -> int:
        return math.prod(len(getattr(self, f.name)) for f in fields(self))

    def hyperparameters(self) -> dict[str, tuple]:
        """Every hyperparameter Keras Tuner sees, in declaration order, with its possible values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def default_values(self) -> dict:
        """The first value of every entry: the product default (trial 0)."""
        return {f.name: getattr(self, f.name)[0] for f in fields(self)}

    def describe(self) -> list[tuple[str, str, str]]:
        return [(f.name, "choice", ", ".join(v if isinstance(v, str) else f"{v:g}" for v in getattr(self, f.name)))
                for f in fields(self)]


@dataclass(frozen=True)
class SSDSearchSpace(ChoiceSpace):
    """alpha:         MobileNetV2 width multiplier.
    input_size:    side of the model input, pixels (a multiple of 32); the feature levels stay
                   at strides 8, 16 and 32, so the anchor grids grow with it.
    head:          "ssdlite" (depthwise-separable) or "conv" (3x3) box and class heads.
    head_depth:    hidden layers in each head before its prediction layer.
    head_filters:  channels of those hidden layers.
    min_scale:     anchor side at the finest level, as a fraction of the image side.
    max_scale:     anchor side at the coarsest level.
    aspect_ratios: sets of anchor width/height ratios, each written "1:2:0.5".
    learning_rate: Adam's peak learning rate (one warm-up epoch, then cosine decay).

    The first value of each entry is the default detector of `make train TASK=detect`.
    """

    TEXT_ENTRIES = ("head", "aspect_ratios")

    alpha: tuple[float, ...] = (0.35, 0.5, 0.75)
    input_size: tuple[int, ...] = (128, 96, 160)
    head: tuple[str, ...] = ("ssdlite",)
    head_depth: tuple[int, ...] = (1, 0, 2)
    head_filters: tuple[int, ...] = (64, 32, 128)
    min_scale: tuple[float, ...] = (0.15, 0.1, 0.2)
    max_scale: tuple[float, ...] = (0.45, 0.6, 0.8)
    aspect_ratios: tuple[str, ...] = ("1:2:0.5", "1", "1:2:0.5:3:0.333")
    learning_rate: tuple[float, ...] = (3e-3, 1e-3, 6e-3)

    def __post_init__(self):
        for name in ("input_size", "head_depth", "head_filters"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("alpha", "min_scale", "max_scale", "learning_rate"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "head", tuple(str(v) for v in self.head))
        object.__setattr__(self, "aspect_ratios", tuple(ratios_text(v) for v in self.aspect_ratios))
        problems = self.choice_problems()
        if any(v < 32 or v % 32 for v in self.input_size):
            problems.append(f"input_size values must be multiples of 32 (MobileNetV2), got {list(self.input_size)}")
        if any(v not in ("ssdlite", "conv") for v in self.head):
            problems.append(f"head values must be ssdlite or conv, got {list(self.head)}")
        if any(v < 0 for v in self.head_depth) or any(v < 1 for v in self.head_filters):
            problems.append("head_depth values must be >= 0 and head_filters values >= 1")
        if any(v <= 0 for v in self.alpha + self.learning_rate):
            problems.append("alpha and learning_rate values must be positive")
        if self.min_scale and self.max_scale and not 0 < max(self.min_scale) <= min(self.max_scale):
            problems.append(f"every min_scale must be > 0 and <= every max_scale, got {list(self.min_scale)} and "
                            f"{list(self.max_scale)}")
        if problems:
            raise ConfigError("search space: " + "; ".join(problems))


def sample_ssd_config(hp, space: SSDSearchSpace, base: SSDConfig) -> tuple[SSDConfig, float]:
    """Ask ``hp`` for one point of ``space``; what the space does not search comes from ``base``.

    Returns:
        (the detector's config, the learning rate).
    """
    alpha = _choice(hp, "alpha", space.alpha)
    input_size = _choice(hp, "input_size", space.input_size)
    head = _choice(hp, "head", space.head)
    head_depth = _choice(hp, "head_depth", space.head_depth)
    head_filters = _choice(hp, "head_filters", space.head_filters)
    min_scale = _choice(hp, "min_scale", space.min_scale)
    max_scale = _choice(hp, "max_scale", space.max_scale)
    ratios = _choice(hp, "aspect_ratios", space.aspect_ratios)
    learning_rate = _choice(hp, "learning_rate", space.learning_rate)
    anchors = base.anchors.replace(input_size=int(input_size), min_scale=float(min_scale), max_scale=float(max_scale),
                                   aspect_ratios=parse_ratios(ratios))
    cfg = replace(base, anchors=anchors, alpha=float(alpha), head=head, head_depth=int(head_depth),
                  head_filters=int(head_filters))
    return cfg, float(learning_rate)


# --- the MobileNetV2 classifier -----------------------------------------------------------------

@dataclass(frozen=True)
class MobileNetSearchSpace(ChoiceSpace):
    """alpha:            MobileNetV2 width multiplier.
    dropout:          rate before the classifier.
    learning_rate:    Adam's peak learning rate (the head's; fine-tuning runs at a tenth of it).
    fine_tune_blocks: top blocks unfrozen after the head has trained (the retrain's second phase).

    Trials train the whole network from WEIGHTS= for the search's epochs; the retrain of the best
    runs `make train MODEL=mobilenetv2`'s two phases. The first value of each entry is the default.
    """

    alpha: tuple[float, ...] = (0.35, 0.5, 0.75, 1.0)
    dropout: tuple[float, ...] = (0.2, 0.0, 0.4)
    learning_rate: tuple[float, ...] = (2e-3, 5e-4, 5e-3)
    fine_tune_blocks: tuple[int, ...] = (4, 2, 8)

    def __post_init__(self):
        for name in ("alpha", "dropout", "learning_rate"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "fine_tune_blocks", tuple(int(v) for v in self.fine_tune_blocks))
        problems = self.choice_problems()
        if any(v not in MOBILENET_ALPHAS for v in self.alpha):
            problems.append(f"alpha values must be among {list(MOBILENET_ALPHAS)}, got {list(self.alpha)}")
        if any(not 0.0 <= v < 1.0 for v in self.dropout):
            problems.append(f"dropout values must be in [0, 1), got {list(self.dropout)}")
        if any(v <= 0 for v in self.learning_rate):
            problems.append(f"learning_rate values must be positive, got {list(self.learning_rate)}")
        if any(not 0 <= v <= MOBILENET_BLOCKS for v in self.fine_tune_blocks):
            problems.append(f"fine_tune_blocks values must be in 0..{MOBILENET_BLOCKS}, got {list(self.fine_tune_blocks)}")
        if problems:
            raise ConfigError("search space: " + "; ".join(problems))


def sample_mobilenet_config(hp, space: MobileNetSearchSpace, base: MobileNetConfig) -> tuple[MobileNetConfig, float]:
    """Ask ``hp`` for one point of ``space``; the weights come from ``base``.

    Returns:
        (the MobileNetV2 classifier's config, the learning rate).
    """
    alpha = _choice(hp, "alpha", space.alpha)
    dropout = _choice(hp, "dropout", space.dropout)
    learning_rate = _choice(hp, "learning_rate", space.learning_rate)
    blocks = _choice(hp, "fine_tune_blocks", space.fine_tune_blocks)
    cfg = base.replace(alpha=float(alpha), dropout=float(dropout), fine_tune_blocks=int(blocks))
    return cfg, float(learning_rate)
