"""The Keras 3 <-> tf_keras seam: quantization-aware training and pruning with tfmot.

tensorflow-model-optimization 0.8.1 only wraps tf_keras (Keras 2) models, while
training, tuning and export use Keras 3. Builders take the Keras module as an
argument (``build_cnn(..., keras=tf_keras)``) and give the same layer names and
weight shapes under both, so we rebuild the model in tf_keras, copy weights by
layer name, optimise there, and copy back. This is the only module that imports
tf_keras or tensorflow_model_optimization.

``build`` arguments below are ``keras_module -> model`` callables, so a detector
(or any other model with a keras-parameterised builder) can reuse the seam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

Builder = Callable[[object], object]  # keras module (keras or tf_keras) -> uncompiled model
INPUT_RANGE = (0.0, 255.0)  # raw pixels; the uint8 input then maps bytes 1:1 (scale 1, zero point 0)
FAKE_QUANT_LAYERS = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")  # not all are public in tfmot
PRUNABLE = ("Conv2D", "Dense", "DepthwiseConv2D", "SeparableConv2D")


def copy_weights(src, dst) -> None:
    """Copy weights layer by layer, matched by name; shapes must agree (Keras 3 <-> tf_keras)."""
    src_layers = {layer.name: layer for layer in src.layers}
    for layer in dst.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name not in src_layers:
            raise ValueError(f"layer {layer.name!r} has weights but no counterpart in the source model")
        values = src_layers[layer.name].get_weights()
        if [w.shape for w in values] != [w.shape for w in weights]:
            raise ValueError(f"layer {layer.name!r}: weight shapes differ "
                             f"({[w.shape for w in values]} vs {[w.shape for w in weights]})")
        layer.set_weights(values)


def to_tf_keras(model, build: Builder):
    """A Keras 3 model -> the same model rebuilt in tf_keras, with its weights."""
    twin = build(tf_keras)
    copy_weights(model, twin)
    return twin


def to_keras3(model, build: Builder):
    """A (stripped, plain) tf_keras model -> the Keras 3 model with its weights."""
    twin = build(keras)
    copy_weights(model, twin)
    return twin


def _steps(dataset) -> int:
    n = int(dataset.cardinality())
    return n if n > 0 else sum(1 for _ in dataset)


def _fit(model, train_ds, epochs: int, learning_rate: float, callbacks=()):
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, epochs=epochs, callbacks=list(callbacks), verbose=0)


def _output_quantize_config():
    """QuantizeConfig for weightless layers tfmot does not know (Rescaling): fake-quantize the output.

    Without it quantize_model rejects the model, and leaving the layer
    unquantized would leave its output without a range for the int8 converter.
    """
    qk = tfmot.quantization.keras

    class OutputQuantizeConfig(qk.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                         narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


def quantize_aware(model, *, preserve_sparsity: bool = False):
    """tf_keras model -> QAT model with fake-quant (QuantizeWrapperV2 / QuantizeLayer) layers.

    preserve_sparsity: use tfmot's prune-preserving scheme, so fine-tuning a pruned
    model keeps its zeros (PQAT).
    """
    qk = tfmot.quantization.keras
    config_cls = _output_quantize_config()
    registry = qk.default_8bit.Default8BitQuantizeRegistry()

    def annotate(layer):
        if registry.supports(layer):
            return qk.quantize_annotate_layer(layer)
        return qk.quantize_annotate_layer(layer, quantize_config=config_cls())

    with qk.quantize_scope({"OutputQuantizeConfig": config_cls}):
        annotated = tf_keras.models.clone_model(model, clone_function=annotate)
        if preserve_sparsity:
            scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
            return qk.quantize_apply(annotated, scheme)
        return qk.quantize_apply(annotated)


def pin_input_range(qat_model, low: float = INPUT_RANGE[0], high: float = INPUT_RANGE[1]) -> None:
    """Fix the QAT input quantizer to raw pixel range, so the uint8 input is the camera byte itself."""
    for layer in qat_model.layers:
        if type(layer).__name__ == "QuantizeLayer":
            for weight in layer.weights:
                if weight.name.endswith("_min:0") or weight.name.endswith("min:0"):
                    weight.assign(low)
                elif weight.name.endswith("_max:0") or weight.name.endswith("max:0"):
                    weight.assign(high)


def init_activation_ranges(qat_model, plain_model, batches, max_batches: int = 8) -> int:
    """Start each activation fake-quant range at the float model's observed range.

    tfmot's activation quantizers start at [-6, 6] and move by an EMA with decay
    0.999, so a short fine-tune would keep ~[-6, 6] for a 0..1 tensor (a few
    dozen levels) and QAT would lose to post-training int8. Ranges always
    include 0, as TFLite requires. Returns the number of ranges set.

    plain_model: the tf_keras float model ``qat_model`` was made from (same layer names).
    batches: (float32 [B, S, S, 3] 0..255, labels) batches.
    """
    targets = {}  # float layer name -> (min var, max var, "output" | "pre_activation")
    for wrapper in qat_model.layers:
        if not wrapper.name.startswith("quant_"):
            continue
        name = wrapper.name[len("quant_"):]
        by_kind = {}
        for w in wrapper.non_trainable_weights:
            for kind in ("output", "pre_activation"):
                for end in ("min", "max"):
                    if w.name.endswith(f"/{kind}_{end}:0"):
                        by_kind.setdefault(kind, {})[end] = w
        for kind, pair in by_kind.items():
            if len(pair) == 2 and (kind == "output" or type(plain_model.get_layer(name)).__name__ == "Dense"):
                targets[name] = (pair["min"], pair["max"], kind)
    if not targets:
        return 0
    layers = {name: plain_model.get_layer(name) for name in targets}
    probe = tf_keras.Model(plain_model.inputs, {
        name: (layer.input if targets[name][2] == "pre_activation" else layer.output) for name, layer in layers.items()})
    low = {name: 0.0 for name in targets}
    high = {name: 0.0 for name in targets}
    for images, _ in batches.take(max_batches):
        values = probe(images, training=False)
        for name, value in values.items():
            if targets[name][2] == "pre_activation":  # Dense logits before its activation
                kernel, bias = layers[name].get_weights()[:2]
                value = tf.matmul(value, kernel) + bias
            low[name] = min(low[name], float(tf.reduce_min(value)))
            high[name] = max(high[name], float(tf.reduce_max(value)))
    for name, (min_var, max_var, _) in targets.items():
        min_var.assign(low[name])
        max_var.assign(high[name])
    return len(targets)


def has_fake_quant(model) -> bool:
    """True when the tf_keras model carries tfmot fake-quantization layers."""
    return any(type(layer).__name__ in FAKE_QUANT_LAYERS for layer in model.layers)


def qat_fine_tune(model, build: Builder, train_ds, *, epochs: int = 2, learning_rate: float = 3e-5,
                  preserve_sparsity: bool = False):
    """Keras 3 model -> fine-tuned tf_keras QAT model (convert it with mode "int8-qat").

    train_ds: batches of (float32 [B, S, S, 3] 0..255, int32 [B]).
    """
    plain = to_tf_keras(model, build)
    qat = quantize_aware(plain, preserve_sparsity=preserve_sparsity)
    init_activation_ranges(qat, plain, train_ds)
    pin_input_range(qat)
    _fit(qat, train_ds, epochs, learning_rate)
    pin_input_range(qat)  # the input quantizer tracks the batches' min/max; pixels are 0..255 by definition
    return qat


@dataclass(frozen=True)
class PruneResult:
    """A pruned, stripped Keras 3 model and the sparsity it reached.

    target:    requested fraction of zero weights in each prunable kernel.
    reached:   measured fraction of zeros over all prunable kernels.
    per_layer: layer name -> measured fraction of zeros in its kernel.
    """

    model: object
    target: float
    reached: float
    per_layer: dict


def kernel_sparsity(model) -> tuple[float, dict]:
    """(overall, per-layer) fraction of exactly-zero kernel weights in prunable layers."""
    zeros = total = 0
    per_layer = {}
    for layer in model.layers:
        if type(layer).__name__ not in PRUNABLE:
            continue
        kernel = np.asarray(layer.get_weights()[0])
        per_layer[layer.name] = float(np.mean(kernel == 0))
        zeros += int(np.sum(kernel == 0))
        total += kernel.size
    return (zeros / total if total else 0.0), per_layer


def prune(model, build: Builder, train_ds, sparsity: float, *, epochs: int = 2,
          learning_rate: float = 1e-4) -> PruneResult:
    """Magnitude-prune conv/dense kernels of a Keras 3 model to ``sparsity`` while fine-tuning.

    The polynomial schedule ends on the last step and updates the masks every
    few steps: tfmot's default frequency (100 steps) never fires in a short
    fine-tune and leaves the model dense.
    """
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    sk = tfmot.sparsity.keras
    total_steps = max(1, epochs * _steps(train_ds))
    frequency = max(1, math.ceil(total_steps / 10))
    last = total_steps - 1
    # end_step must be a pruning turn, or the final masks stop short of the target.
    schedule = sk.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
                                  end_step=last - last % frequency, frequency=frequency)

    def wrap(layer):
        if type(layer).__name__ in PRUNABLE:
            return sk.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    plain = to_tf_keras(model, build)
    wrapped = tf_keras.models.clone_model(plain, clone_function=wrap)
    _fit(wrapped, train_ds, epochs, learning_rate, callbacks=[sk.UpdatePruningStep()])
    stripped = sk.strip_pruning(wrapped)
    result = to_keras3(stripped, build)
    reached, per_layer = kernel_sparsity(result)
    return PruneResult(model=result, target=float(sparsity), reached=reached, per_layer=per_layer)
