"""MobileNetV2 image classifier for transfer learning: backbone -> global average pool -> softmax.

Same contract as ``models.cnn.build_cnn``: the input ``image`` is raw RGB pixels,
float32 [B, S, S, 3] in 0..255, and MobileNetV2's own scaling (x / 127.5 - 1) is a
layer inside the graph, so the Keras model, the exported TFLite model and a phone
all take the same pixels. The output ``probabilities`` is float32 [B, C].

The backbone's layers sit directly in the classifier (flattened, not one nested
``Model`` layer), under keras.applications' own names ("Conv1", "block_16_project_BN",
"out_relu", ...), exactly as in ``models.ssd``. Keras 3 and tf_keras give the same
names and weight shapes, so ``export.keras2.copy_weights`` (which walks
``model.layers`` by name) moves every backbone weight, and tfmot, which cannot
quantize a nested model, sees ordinary layers.

Transfer learning runs in two phases:

1. ``set_trainable_top_blocks(model, 0)``: the backbone is frozen and only the head
   (the ``probabilities`` layer) trains.
2. ``set_trainable_top_blocks(model, cfg.fine_tune_blocks)``: the top inverted-residual
   blocks and the final 1x1 conv unfreeze, with a lower learning rate; every
   BatchNormalization layer stays frozen, which in Keras also keeps it in inference
   mode (its ImageNet statistics are not overwritten by small batches).

Recompile the model after each call; Keras reads ``trainable`` when it compiles.
With ``weights="none"`` there is nothing to preserve: train the model as built
(everything trainable, BatchNormalization included).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import ModuleType

import keras as keras3

# WEIGHTS= is imagenet | none | a path to a weights file (see MobileNetConfig.weights).
MOBILENET_WEIGHTS = ("imagenet", "none")
ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # the width multipliers keras.applications has ImageNet weights for
IMAGENET_INPUT_SIZES = (96, 128, 160, 192, 224)  # the sizes keras.applications has ImageNet weights for
MIN_INPUT_SIZE = 32  # five stride-2 stages: 32 px is a 1x1 final feature map
INPUT_STRIDE = 32  # sides must be a multiple of it, so every stage halves the map exactly
WEIGHT_FILE_SUFFIXES = (".keras", ".h5")  # ".weights.h5" (Keras 3) and ".h5" (Keras 2 / keras.applications)
# Inverted-residual blocks, bottom to top: block 0 is named "expanded_conv", blocks 1..16 "block_<i>".
NUM_BLOCKS = 17
_STEM = ("Conv1", "bn_Conv1", "Conv1_relu")  # the first 3x3 conv; unfrozen with block 0
_TOP = ("Conv_1", "Conv_1_bn", "out_relu")  # the final 1x1 conv to 1280 channels; unfrozen with any block
FEATURES_LAYER = "out_relu"  # the backbone's output, float32 [B, S/32, S/32, 1280 * max(1, alpha)]


@dataclass(frozen=True)
class MobileNetConfig:
    """Hyperparameters of the MobileNetV2 classifier.

    alpha:            width multiplier; one of ALPHAS (0.35, 0.5, 0.75, 1.0, 1.3, 1.4).
    weights:          backbone initialisation: "imagenet" (downloaded by keras.applications, or
                      taken from its cache ~/.keras/models), "none" (random), or a path to a file:
                      - ``.weights.h5`` saved by Keras 3 ``save_weights`` from a model whose layers
                        start with this backbone (this classifier with any head, or
                        ``keras.applications.MobileNetV2(include_top=False)``) of the same alpha;
                        such a file holds no layer names, so Keras matches it by layer order;
                      - ``.h5`` in Keras 2 format, matched the same way: the file
                        keras.applications itself downloads
                        (``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_224_no_top.h5``),
                        which is how to get ImageNet weights on a machine without network;
                      - ``.keras`` model file: its layers named like the backbone's are loaded (any
                        model with this backbone, nested or flat: a classifier, ``models.ssd``).
                      Only the backbone is loaded; the head starts fresh. Every backbone weight must
                      load, or building raises ValueError naming the file.
    dropout:          dropout rate before the softmax layer (0 removes the layer).
    fine_tune_blocks: inverted-residual blocks, counted from the top, unfrozen in the fine-tuning
                      phase (``set_trainable_top_blocks``), 0..NUM_BLOCKS (17: "expanded_conv" is
                      block 0, then "block_1".."block_16"). The final 1x1 conv unfreezes with them.
                      The default 4 is blocks 13-16, the whole stride-32 stage: the most
                      task-specific features, about 60% of the backbone's weights at alpha 1.0;
                      the lower blocks keep their generic ImageNet filters.
    bn_momentum:      momentum of every BatchNormalization layer. Only matters when BN trains
                      (weights="none"); MobileNetV2's default 0.999 lags far behind a model
                      trained from scratch (measured on the detector, see models.ssd).
    """

    alpha: float = 0.35
    weights: str = "imagenet"
    dropout: float = 0.2
    fine_tune_blocks: int = 4
    bn_momentum: float = 0.9

    def __post_init__(self):
        problems = []
        try:
            object.__setattr__(self, "alpha", float(self.alpha))  # JSON may give 1 for 1.0
        except (TypeError, ValueError):
            problems.append(f"alpha must be a number, got {self.alpha!r}")
        else:
            if self.alpha not in ALPHAS:
                problems.append(f"alpha must be one of {ALPHAS}, got {self.alpha}")
        if not isinstance(self.weights, str) or not (
                self.weights in MOBILENET_WEIGHTS or self.weights.endswith(WEIGHT_FILE_SUFFIXES)):
            problems.append(f"weights must be 'imagenet', 'none' or a path to a .keras, .weights.h5 or .h5 file, "
                            f"got {self.weights!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.fine_tune_blocks, int) or not 0 <= self.fine_tune_blocks <= NUM_BLOCKS:
            problems.append(f"fine_tune_blocks must be an int in 0..{NUM_BLOCKS}, got {self.fine_tune_blocks!r}")
        if not 0.0 <= self.bn_momentum < 1.0:
            problems.append(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if problems:
            raise ValueError("invalid MobileNetConfig: " + "; ".join(problems))

    @property
    def weights_path(self) -> Path | None:
        """The weights file, or None for "imagenet" and "none"."""
        return None if self.weights in MOBILENET_WEIGHTS else Path(self.weights)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MobileNetConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown MobileNetConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "MobileNetConfig":
        return replace(self, **changes)


def _input_size_problem(size: int, weights: str) -> str | None:
    if weights == "imagenet":
        if size not in IMAGENET_INPUT_SIZES:
            return (f"MobileNetV2 ImageNet weights need an input size in {IMAGENET_INPUT_SIZES}, got {size}; "
                    f"pick one of those, or use weights='none' or a weights file")
        return None
    if size < MIN_INPUT_SIZE or size % INPUT_STRIDE:
        return f"MobileNetV2 needs an input size that is a multiple of {INPUT_STRIDE} and >= {MIN_INPUT_SIZE}, got {size}"
    return None


def valid_input_size(size: int, weights: str) -> bool:
    """True when MobileNetV2 with ``weights`` (a MobileNetConfig.weights value) takes ``size`` px inputs."""
    return _input_size_problem(size, weights) is None


def build_mobilenet_classifier(cfg: MobileNetConfig, num_classes: int, input_size: int,
                               keras: ModuleType | None = None, *, output_dtype: str | None = None):
    """Build the classifier, backbone initialised as ``cfg.weights`` says, every layer trainable.

    Args:
        cfg: the hyperparameters.
        num_classes: width of the softmax.
        input_size: side S of the square RGB input; see ``valid_input_size``.
        keras: the Keras module to build with. ``None`` means Keras 3; the exporter passes
            ``tf_keras`` to get the layer-for-layer identical Keras 2 model. A twin whose
            weights are copied in anyway is best built with ``cfg.replace(weights="none")``
            (no download, no file read).
        output_dtype: dtype policy of the softmax layer; None takes the global policy.
            Training under a mixed precision policy passes "float32".

    Returns:
        A model "mobilenetv2_classifier" mapping ``image`` float32 [B, S, S, 3] in 0..255 to
        ``probabilities`` float32 [B, num_classes].

    Raises:
        ValueError: a bad num_classes or input size, or a weights file that does not fit.
        FileNotFoundError: cfg.weights names a file that does not exist.
    """
    keras = keras or keras3  # tf_keras for the QAT/pruning seam (export.keras2)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    problem = _input_size_problem(input_size, cfg.weights)
    if problem:
        raise ValueError(problem)
    path = cfg.weights_path
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights file {str(path)!r} does not exist")

    layers = keras.layers
    image = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(image)
    # input_tensor puts the backbone's layers in this model (flat, not nested): see the module docstring.
    backbone = keras.applications.MobileNetV2(input_tensor=x, alpha=cfg.alpha, include_top=False,
                                              weights="imagenet" if cfg.weights == "imagenet" else None)
    x = layers.GlobalAveragePooling2D(name="global_pool")(backbone.get_layer(FEATURES_LAYER).output)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="classifier_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities", dtype=output_dtype)(x)
    model = keras.Model(image, outputs, name="mobilenetv2_classifier")

    # MobileNetV2 hard-codes momentum 0.999; BN reads the attribute when it is called,
    # so setting it here takes effect in training (and is saved in the layer config).
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = cfg.bn_momentum
    if path is not None:
        _load_backbone(model, cfg, num_classes, input_size, keras)
    return model


def _short(error: Exception, limit: int = 400) -> str:
    """One line of an exception's message (Keras's mismatch messages print whole tensors)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _load_backbone(model, cfg: MobileNetConfig, num_classes: int, input_size: int, keras: ModuleType) -> None:
    """Load cfg.weights_path into ``model``'s backbone; every backbone weight loads, or ValueError."""
    path = cfg.weights_path
    if path.name.endswith(".keras"):
        try:
            source = keras3.saving.load_model(path, compile=False)
        except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
            raise ValueError(f"MobileNetV2 weights file {str(path)!r}: cannot load it as a Keras model: "
                             f"{_short(error)}") from error
        _copy_backbone(source, model, path)
        return
    # .weights.h5 / .h5 hold no layer names: Keras loads them by layer order, into the
    # backbone-only view of a Keras 3 model (the head is not in the file, or differs).
    source = model if keras is keras3 else build_mobilenet_classifier(cfg.replace(weights="none"), num_classes,
                                                                      input_size)
    features = keras3.Model(source.input, source.get_layer(FEATURES_LAYER).output)
    does_not_fit = f"MobileNetV2 weights file {str(path)!r} does not fit a MobileNetV2 backbone of alpha {cfg.alpha}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            features.load_weights(path)
        except Exception as error:  # noqa: BLE001 - h5py, shape and count errors alike
            raise ValueError(f"{does_not_fit}: {_short(error)}") from error
    # Keras only warns when part of the file has no counterpart ("... will retain their
    # freshly-initialized weights"); a half-loaded backbone is an error here.
    skipped = [w for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise ValueError(f"{does_not_fit}: {_short(skipped[0].message)}")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if source is not model:
        _copy_backbone(source, model, path)


def _named_layers(model) -> dict:
    """Every layer of ``model`` by name, nested models' layers included (first one wins)."""
    found = {}
    for layer in model.layers:
        found.setdefault(layer.name, layer)
        if hasattr(layer, "layers"):
            for name, inner in _named_layers(layer).items():
                found.setdefault(name, inner)
    return found


def _copy_backbone(source, model, path: Path) -> None:
    """Copy the backbone weights of ``source`` into ``model`` by layer name; all or ValueError."""
    available = _named_layers(source)
    problems, pending = [], []
    for layer in backbone_layers(model):
        wanted = layer.get_weights()
        if not wanted:
            continue
        if layer.name not in available:
            problems.append(f"no layer {layer.name!r}")
            continue
        values = available[layer.name].get_weights()
        if [v.shape for v in values] != [w.shape for w in wanted]:
            problems.append(f"layer {layer.name!r} has weights {[v.shape for v in values]}, "
                            f"expected {[w.shape for w in wanted]}")
            continue
        pending.append((layer, values))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"MobileNetV2 weights file {str(path)!r} does not fit the backbone: "
                         + "; ".join(problems[:3]) + more)
    for layer, values in pending:  # nothing is half-loaded when the file does not fit
        layer.set_weights(values)


def _block_of(name: str) -> int | None:
    """The inverted-residual block a backbone layer belongs to (0..16; the top conv is NUM_BLOCKS),
    or None for a layer outside the backbone."""
    if name in _TOP:
        return NUM_BLOCKS
    if name in _STEM or name.startswith("expanded_conv_"):
        return 0
    if name.startswith("block_"):
        index = name.split("_")[1]
        return int(index) if index.isdigit() else None
    return None


def backbone_layers(model) -> list:
    """The MobileNetV2 layers of a model built by ``build_mobilenet_classifier``, bottom to top."""
    found = [layer for layer in model.layers if _block_of(layer.name) is not None]
    if not found:
        raise ValueError(f"model {model.name!r} has no MobileNetV2 backbone layers")
    return found


def set_trainable_top_blocks(model, blocks: int) -> None:
    """Freeze the backbone except its top ``blocks`` inverted-residual blocks; the head trains.

    blocks: 0 (phase 1: only the head trains) to NUM_BLOCKS (the whole backbone). With
    blocks >= 1 the final 1x1 conv ("Conv_1") unfreezes too, and with NUM_BLOCKS the stem.
    BatchNormalization layers stay frozen (and so in inference mode) whatever ``blocks`` is.
    Works on Keras 3 and tf_keras models; recompile afterwards.
    """
    if not isinstance(blocks, int) or not 0 <= blocks <= NUM_BLOCKS:
        raise ValueError(f"blocks must be an int in 0..{NUM_BLOCKS}, got {blocks!r}")
    layers = backbone_layers(model)
    model.trainable = True  # the head, and a clean slate for the backbone
    for layer in layers:
        is_bn = type(layer).__name__ == "BatchNormalization"
        layer.trainable = blocks > 0 and _block_of(layer.name) >= NUM_BLOCKS - blocks and not is_bn
