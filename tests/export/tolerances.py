"""Numeric bounds for comparing an exported model with the Keras model it came from.

Derived from what the conversion is allowed to change, not fitted to one machine's output:
the kernels that run a .tflite (XNNPACK with or without int8 dot-product instructions,
LiteRT's built-in kernels) and the ones that run Keras (TensorFlow with or without oneDNN)
differ between CPUs, so a bound fitted to one CPU fails on the next (issue 15: 0.106 against a
fitted 0.1 on a VNNI CPU, for an image whose top-1 flipped at a decision boundary).
"""
from __future__ import annotations

from dataclasses import dataclass

from export.detector_convert import op_names
from export.runtime import TFLiteModel

# float32 .tflite vs Keras: the same float32 function, summed in another order. Rounding moves a
# probability by a few units of float32's 2**-24 per layer; 1e-4 is far above that and far
# below any real defect (a wrong layer or a missing scale moves probabilities by > 0.01).
FLOAT32_PROBABILITY_TOLERANCE = 1e-4

# Ops whose output is rounded to a new int8 scale (or whose weights are int8/float16): each one
# may move the result by about half of one output step.
REQUANTIZING_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "ADD", "SOFTMAX",
                    "AVERAGE_POOL_2D", "MEAN", "LOGISTIC"}


@dataclass(frozen=True)
class ErrorBudget:
    """How far a quantized classifier's probabilities may move from the float model's.

    output_step: the probability output's quantization step (1/256 for uint8 probabilities;
                 float outputs, as in dynamic-range and float16 models, get the same 1/256 as
                 the unit, which is finer than any user-visible difference).
    layers:      ops that round their outputs (REQUANTIZING_OPS found in the model).
    """

    output_step: float
    layers: int

    @property
    def typical(self) -> float:
        """Bound on the median image's largest probability error: one output step per rounding layer."""
        return self.layers * self.output_step

    def sum_tolerance(self, classes: int) -> float:
        """Bound on |sum(p) - 1|: each of ``classes`` outputs rounded by up to one step."""
        return classes * self.output_step


def quantized_error_budget(model_bytes: bytes) -> ErrorBudget:
    model = TFLiteModel(model_bytes)
    scale = float(model.outputs[0]["quantization"][0]) or 1.0 / 256
    layers = sum(name in REQUANTIZING_OPS for name in op_names(model_bytes))
    return ErrorBudget(output_step=scale, layers=max(1, layers))

