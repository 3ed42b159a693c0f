"""SSD / SSDLite detector on a MobileNetV2 backbone.

The model maps raw RGB pixels, float32 [B, S, S, 3] in 0..255, to one tensor
``predictions`` float32 [B, A, 4 + C + 1]: per anchor, the box deltas
(``models.box_coding``) then the class logits, background first. A and the
anchor order come from ``SSDConfig.anchors`` (``models.anchors``), the same
config the target encoder and the exporter use. MobileNetV2's pixel scaling
is a layer inside the graph, so every consumer feeds the same 0..255 pixels.

Feature levels: strides 8, 16 and 32 tap the backbone; every stride above 32
is an extra stride-2 block on the level before it. Each level has its own box
and class head.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from types import ModuleType

import keras as keras3

from models.anchors import AnchorConfig

# MobileNetV2 layers that output stride 8, 16 and 32. Stride 16 is block 13's expansion,
# before its stride-2 depthwise conv: the widest stride-16 tensor, as in the TF OD API SSDLite.
_BACKBONE_TAPS = {8: "block_6_expand_relu", 16: "block_13_expand_relu", 32: "out_relu"}
_HEAD_TYPES = ("conv", "ssdlite")


@dataclass(frozen=True)
class SSDConfig:
    """Hyperparameters of the detector.

    anchors:       anchor geometry, and with it the input size and the feature levels
                   (one per stride; see the module docstring).
    alpha:         MobileNetV2 width multiplier.
    weights:       None (random init) or "imagenet" (needs the weights file to be
                   downloadable or cached, and an ImageNet alpha: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4).
    head:          "conv" (3x3 convolutions, SSD) or "ssdlite" (depthwise-separable, SSDLite).
    head_depth:    hidden layers in each head before its prediction layer.
    head_filters:  channels of those hidden layers.
    extra_filters: channels of the extra levels (strides above 32).
    bn_momentum:   momentum of every BatchNormalization layer, backbone included. Measured:
                   trained from scratch, MobileNetV2's default 0.999 left the moving
                   statistics so far behind the weights that validation loss was far worse
                   than training loss; 0.9 fixed it.
    """

    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    alpha: float = 1.0
    weights: str | None = None
    head: str = "ssdlite"
    head_depth: int = 1
    head_filters: int = 128
    extra_filters: int = 256
    bn_momentum: float = 0.9

    def __post_init__(self):
        if isinstance(self.anchors, dict):  # from JSON
            object.__setattr__(self, "anchors", AnchorConfig.from_dict(self.anchors))
        problems = []
        size = self.anchors.input_size
        if size < 32 or size % 32:
            problems.append(f"input size must be a multiple of 32 and >= 32 for MobileNetV2, got {size}")
        previous = None
        for s in self.anchors.strides:
            if s <= 32 and s not in _BACKBONE_TAPS:
                problems.append(f"stride {s} is not a MobileNetV2 feature map; use 8, 16 or 32")
            if s > 32 and s != 2 * (previous or 0):
                problems.append(f"stride {s} must be twice the stride before it (each extra level halves the map)")
            previous = s
        if self.alpha <= 0:
            problems.append(f"alpha must be > 0, got {self.alpha}")
        if self.weights not in (None, "imagenet"):
            problems.append(f"weights must be None or 'imagenet', got {self.weights!r}")
        if self.head not in _HEAD_TYPES:
            problems.append(f"head must be one of {_HEAD_TYPES}, got {self.head!r}")
        if self.head_depth < 0 or self.head_filters < 1 or self.extra_filters < 2:
            problems.append(
                f"need head_depth >= 0, head_filters >= 1, extra_filters >= 2; "
                f"got {self.head_depth}, {self.head_filters}, {self.extra_filters}"
            )
        if not 0.0 <= self.bn_momentum < 1.0:
            problems.append(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if problems:
            raise ValueError("invalid SSDConfig: " + "; ".join(problems))

    @property
    def input_size(self) -> int:
        """Side of the square input; lives in ``anchors`` so it is written once."""
        return self.anchors.input_size

    def to_dict(self) -> dict:
        return {**asdict(self), "anchors": self.anchors.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "SSDConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SSDConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "SSDConfig":
        return replace(self, **changes)


def split_predictions(predictions):
    """The model output float32 [..., A, 4 + C + 1] -> (box deltas [..., A, 4], logits [..., A, C + 1])."""
    return predictions[..., :4], predictions[..., 4:]


def _conv_bn_relu(layers, x, filters, kernel, name, cfg, strides=1, separable=False):
    """Conv (or depthwise 3x3 then 1x1 conv) + BN + ReLU6; ``name`` prefixes every layer."""
    if separable:
        x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"{name}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
        kernel, strides = 1, 1
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _head(layers, x, channels, name, cfg):
    """Prediction head of one level: float [B, H, W, D] -> [B, H, W, channels]."""
    separable = cfg.head == "ssdlite"
    for i in range(cfg.head_depth):
        x = _conv_bn_relu(layers, x, cfg.head_filters, 3, f"{name}_{i}", cfg, separable=separable)
    if separable:  # SSDLite's predictor: depthwise 3x3 + BN + ReLU6, then a 1x1 conv
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_pred_dw")(x)
        x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"{name}_pred_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_pred_dw_relu")(x)
        return layers.Conv2D(channels, 1, name=f"{name}_pred")(x)
    return layers.Conv2D(channels, 3, padding="same", name=f"{name}_pred")(x)


def _extra_level(layers, x, name, cfg):
    """SSD's extra feature layer: 1x1 bottleneck, then a stride-2 3x3 that halves the map."""
    x = _conv_bn_relu(layers, x, cfg.extra_filters // 2, 1, f"{name}_reduce", cfg)
    return _conv_bn_relu(layers, x, cfg.extra_filters, 3, f"{name}_down", cfg, strides=2, separable=cfg.head == "ssdlite")


def _concat(layers, tensors, axis, name):
    return tensors[0] if len(tensors) == 1 else layers.Concatenate(axis=axis, name=name)(tensors)


def build_ssd(cfg: SSDConfig, num_classes: int, keras: ModuleType | None = None):
    """Build the detector.

    Args:
        cfg: the hyperparameters, anchors included.
        num_classes: object classes C, background excluded.
        keras: the Keras module to build with. ``None`` means Keras 3; the exporter
            passes ``tf_keras`` to get the layer-for-layer identical Keras 2 model.

    Returns:
        A model mapping float32 [B, S, S, 3] pixels in 0..255 (S = cfg.input_size) to
        ``predictions`` float32 [B, A, 4 + C + 1] (A = cfg.anchors.num_anchors): box
        deltas, then logits with background at index 0. Layers ``box_deltas`` and
        ``class_logits`` hold the two halves (when there are 2+ levels).
    """
    keras = keras or keras3  # tf_keras for the QAT/pruning seam (export.keras2)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    layers = keras.layers
    anchors = cfg.anchors
    k = anchors.per_location
    size = cfg.input_size

    image = keras.Input(shape=(size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(image)
    # input_tensor keeps the backbone's layers in this model (flat, not nested), which the
    # exporter's quantization-aware training needs.
    backbone = keras.applications.MobileNetV2(input_tensor=x, alpha=cfg.alpha, include_top=False, weights=cfg.weights)
    features = []
    for s in anchors.strides:
        if s in _BACKBONE_TAPS:
            features.append(backbone.get_layer(_BACKBONE_TAPS[s]).output)
        else:
            features.append(_extra_level(layers, features[-1], f"extra_s{s}", cfg))

    box_outputs, class_outputs = [], []
    for s, n, f in zip(anchors.strides, anchors.feature_map_sizes, features):
        if tuple(f.shape[1:3]) != (n, n):  # the anchors would no longer line up with the heads
            raise ValueError(f"stride-{s} feature map is {tuple(f.shape[1:3])}, anchors expect {(n, n)}")
        boxes = _head(layers, f, k * 4, f"box_s{s}", cfg)
        logits = _head(layers, f, k * (num_classes + 1), f"class_s{s}", cfg)
        box_outputs.append(layers.Reshape((n * n * k, 4), name=f"box_s{s}_flat")(boxes))
        class_outputs.append(layers.Reshape((n * n * k, num_classes + 1), name=f"class_s{s}_flat")(logits))
    box_deltas = _concat(layers, box_outputs, 1, "box_deltas")
    class_logits = _concat(layers, class_outputs, 1, "class_logits")
    predictions = layers.Concatenate(axis=-1, name="predictions")([box_deltas, class_logits])
    model = keras.Model(image, predictions, name="ssd_mobilenetv2")

    # MobileNetV2 hard-codes momentum 0.999; BN reads the attribute when it is called,
    # so setting it here takes effect in training (and is saved in the layer config).
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = cfg.bn_momentum
    return model
