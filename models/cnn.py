"""The classic convolutional classifier: [conv -> ReLU -> max-pool] x N -> dense -> softmax.

Every knob lives in one frozen ``CNNConfig``; the tuner samples configs, the
trainer builds them. The input is raw RGB pixels, float32 in 0..255; scaling to
0..1 happens inside the graph, so the Keras model, the exported TFLite model
and a phone all take the same pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from types import ModuleType

import keras as keras3


@dataclass(frozen=True)
class CNNConfig:
    """Hyperparameters of the CNN.

    filters:      output channels of each conv block; its length is the number of blocks.
    kernel_size:  side of every conv kernel (pixels).
    pool_size:    side of the max-pooling window.
    pool_stride:  step of the max-pooling window.
    hidden_units: width of each fully connected layer before the classifier.
    dropout:      dropout rate before each fully connected layer (0 disables it).
    """

    filters: tuple[int, ...] = (16, 32, 64)
    kernel_size: int = 3
    pool_size: int = 2
    pool_stride: int = 2
    hidden_units: tuple[int, ...] = (128,)
    dropout: float = 0.3

    def __post_init__(self):
        # Tuples, not lists: JSON round trips give lists, and the config must stay hashable.
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        object.__setattr__(self, "hidden_units", tuple(int(u) for u in self.hidden_units))
        problems = []
        if not self.filters or min(self.filters) < 1:
            problems.append(f"filters must be one or more positive ints, got {self.filters}")
        if self.kernel_size < 1:
            problems.append(f"kernel_size must be >= 1, got {self.kernel_size}")
        if self.pool_size < 1 or self.pool_stride < 1:
            problems.append(f"pool_size and pool_stride must be >= 1, got {self.pool_size}, {self.pool_stride}")
        if any(u < 1 for u in self.hidden_units):
            problems.append(f"hidden_units must be positive, got {self.hidden_units}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError("invalid CNNConfig: " + "; ".join(problems))

    @property
    def num_blocks(self) -> int:
        return len(self.filters)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filters"] = list(self.filters)
        d["hidden_units"] = list(self.hidden_units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CNNConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CNNConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "CNNConfig":
        return replace(self, **changes)


def feature_map_sizes(cfg: CNNConfig, input_size: int) -> list[int]:
    """Spatial side after each block ("same" conv padding, "valid" pooling)."""
    sizes, side = [], input_size
    for _ in cfg.filters:
        side = (side - cfg.pool_size) // cfg.pool_stride + 1 if side >= cfg.pool_size else 0
        sizes.append(side)
    return sizes


def build_cnn(cfg: CNNConfig, num_classes: int, input_size: int, keras: ModuleType | None = None, *,
              output_dtype: str | None = None):
    """Build the classifier.

    Args:
        cfg: the hyperparameters.
        num_classes: width of the softmax.
        input_size: side of the square RGB input.
        keras: the Keras module to build with. ``None`` means Keras 3; the
            exporter passes ``tf_keras`` to get the layer-for-layer identical
            Keras 2 model that tensorflow-model-optimization needs.
        output_dtype: dtype policy of the softmax layer; None takes the global policy.
            Training under a mixed precision policy passes "float32", so the
            probabilities and the loss are computed in float32.

    Returns:
        A model mapping float32 [B, input_size, input_size, 3] in 0..255 to
        float32 [B, num_classes] class probabilities.
    """
    keras = keras or keras3  # tf_keras for the QAT/pruning seam (export.keras2)
    sizes = feature_map_sizes(cfg, input_size)
    if sizes and sizes[-1] < 1:
        raise ValueError(
            f"{cfg.num_blocks} pooling blocks (pool {cfg.pool_size}, stride {cfg.pool_stride}) "
            f"shrink a {input_size}px input to nothing; use fewer blocks or a larger input"
        )
    layers = keras.layers
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, n in enumerate(cfg.filters, start=1):
        x = layers.Conv2D(n, cfg.kernel_size, padding="same", name=f"block{i}_conv")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        x = layers.MaxPooling2D(cfg.pool_size, strides=cfg.pool_stride, name=f"block{i}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for j, units in enumerate(cfg.hidden_units, start=1):
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"fc{j}_dropout")(x)
        x = layers.Dense(units, name=f"fc{j}")(x)
        x = layers.ReLU(name=f"fc{j}_relu")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="classifier_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities", dtype=output_dtype)(x)
    return keras.Model(inputs, outputs, name="cnn")
