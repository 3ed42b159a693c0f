"""Keras model -> .tflite bytes, one named function per quantization mode.

Every mode converts the same graph: a fixed [1, S, S, 3] float32 input of raw
0..255 RGB pixels (the model rescales in-graph), probabilities out. Each
``_configure_<mode>`` function is the only place that sets the converter's
fields for its mode.

Works for Keras 3 and tf_keras models alike (the QAT model is tf_keras): the
model is traced through a ``tf.function`` with a fixed input signature rather
than ``from_keras_model``, whose Keras-version handling differs between the two.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from common.errors import ConfigError, UserError

QUANT_MODES = ("float32", "float16", "dynamic", "int8", "int8-qat")
INT8_IO_TYPES = ("uint8", "int8")
CALIBRATION_IMAGES = 200  # validation images an int8 export is calibrated on (CALIB=)
# Modes whose converter needs calibration images (representative dataset).
# int8-qat takes its ranges from the fake-quant layers, but TF 2.21's converter
# does not recognise a traced QAT function as such and insists on a
# representative dataset; the calibration images then only fill in ranges QAT left open.
CALIBRATED_MODES = ("int8", "int8-qat")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a known quantization mode, else raise ConfigError."""
    if mode not in QUANT_MODES:
        raise ConfigError(f"QUANT={mode}: unknown quantization mode; expected one of {', '.join(QUANT_MODES)} or all")
    return mode


def full_range_image(size: int) -> np.ndarray:
    """float32 [1, size, size, 3] covering every pixel value 0..255 in every channel.

    Calibration data may never reach 0 or 255 (dark photos, pastel shapes);
    without this image the uint8 input scale would differ from 1 and raw camera
    bytes would no longer mean the pixels the model was trained on.
    """
    values = np.arange(size * size * 3, dtype=np.int64) % 256
    return values.reshape(1, size, size, 3).astype(np.float32)


def _calibration_samples(calibration: Iterable[np.ndarray] | None, size: int) -> list[np.ndarray]:
    """The user's calibration images (float32 [1, S, S, 3] 0..255) plus one full-range image."""
    if calibration is None:
        raise UserError("int8 conversion needs calibration images (got none)")
    samples = []
    for i, image in enumerate(calibration):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3:
            image = image[None]
        if image.shape != (1, size, size, 3):
            raise UserError(f"calibration image {i} has shape {image.shape}; expected (1, {size}, {size}, 3)")
        samples.append(image)
    if not samples:
        raise UserError("the calibration set is empty: int8 needs at least one image "
                        "(check the validation split and --calib)")
    return samples + [full_range_image(size)]


def _io_type(io_dtype: str):
    if io_dtype not in INT8_IO_TYPES:
        raise ConfigError(f"INT8_IO={io_dtype}: expected one of {', '.join(INT8_IO_TYPES)}")
    return tf.uint8 if io_dtype == "uint8" else tf.int8


def _configure_float32(converter, calibration, io_dtype) -> None:
    """No optimisation: float32 weights and activations (the reference export)."""


def _configure_float16(converter, calibration, io_dtype) -> None:
    """float16 weights (half the size), float32 compute and I/O."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _configure_dynamic(converter, calibration, io_dtype) -> None:
    """int8 weights, activations quantized on the fly; float32 I/O."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _configure_int8(converter, calibration, io_dtype) -> None:
    """Integer-only: int8 weights and activations, ranges from calibration, uint8/int8 I/O."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = _io_type(io_dtype)
    converter.inference_output_type = _io_type(io_dtype)


def _configure_int8_qat(converter, calibration, io_dtype) -> None:
    """Integer-only from a QAT model: the same converter fields as int8 (TF 2.21 wants the
    calibration set even here), but the ranges come from the model's fake-quant layers."""
    _configure_int8(converter, calibration, io_dtype)


_CONFIGURE: dict[str, Callable] = {
    "float32": _configure_float32,
    "float16": _configure_float16,
    "dynamic": _configure_dynamic,
    "int8": _configure_int8,
    "int8-qat": _configure_int8_qat,
}


def model_input_size(model) -> int:
    """Side S of a model taking [B, S, S, 3] images (Keras 3 or tf_keras)."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"expected a model input [B, S, S, 3], got {shape}")
    return int(shape[1])


def _serving_function(model, size: int):
    """(concrete function float32 [1, S, S, 3] -> {output name: tensor}, trackable holding its variables).

    Keras 3 variables are not tf.Variables, so the converter cannot find them
    through the model and would keep them as READ_VARIABLE ops (unfrozen, and
    failing int8 calibration); a tf.Module holding the underlying tf.Variables
    lets it freeze them into constants.
    """
    holder = tf.Module()
    holder.variables_ = [v if isinstance(v, tf.Variable) else v.value for v in model.variables]

    names = list(getattr(model, "output_names", None) or ["output"])

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    def serve(image):
        outputs = model(image, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(names, outputs))

    holder.serve = serve
    return serve.get_concrete_function(), holder


def convert_keras(model, mode: str, calibration: Iterable[np.ndarray] | None = None, *,
                  io_dtype: str = "uint8") -> bytes:
    """Convert a Keras 3 or tf_keras image model to a .tflite flatbuffer (no metadata).

    Args:
        model: maps float32 [B, S, S, 3] raw 0..255 pixels to float32 [B, C] probabilities.
            For "int8-qat" it must be the quantization-aware model from export.keras2.
        mode: one of QUANT_MODES.
        calibration: for "int8" and "int8-qat": float32 [1, S, S, 3] 0..255 arrays made by
            pipeline.preprocess (a full-range image is added here); ignored otherwise.
        io_dtype: "uint8" or "int8", the input/output type of the integer-only modes.

    Returns:
        The .tflite bytes; input [1, S, S, 3] (float32, or uint8/int8 for the int8 modes),
        output [1, C] probabilities (float32, or uint8/int8 for the int8 modes).
    """
    check_mode(mode)
    size = model_input_size(model)
    if mode in CALIBRATED_MODES:
        calibration = _calibration_samples(calibration, size)
    if mode.startswith("int8"):
        _io_type(io_dtype)

    serve, holder = _serving_function(model, size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve], holder)
    _CONFIGURE[mode](converter, calibration, io_dtype)
    return bytes(converter.convert())
