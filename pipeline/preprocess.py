"""The one preprocessing function: training, evaluation, int8 calibration and serving all use it.

The model itself scales pixels (a Rescaling layer in the graph), so
preprocessing is only geometry: resize to the model's square input, keep the
0..255 range. A phone feeding camera bytes into the exported model, and our
own predict, therefore see exactly the pixels training saw.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


@tf.autograph.experimental.do_not_convert  # plain TF ops: autograph's rewrite only costs tracing time
def preprocess_image(image, size: int) -> tf.Tensor:
    """uint8 [H, W, 3] (or [B, H, W, 3]) -> uint8 [size, size, 3] (or batched), bilinear resize."""
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"preprocess_image expects uint8 pixels, got {image.dtype}")
    static = image.shape
    if static[-3] == size and static[-2] == size:
        return image
    # No branch on the dynamic size (a tf.cond costs more per image than it saves): at the same size
    # the antialiased bilinear filter samples each pixel centre with weight 1, an exact identity.
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    out = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    out.set_shape(static[:-3].as_list() + [size, size, 3])
    return out


def to_model_input(images) -> tf.Tensor:
    """uint8 pixels -> the model's float32 input, still 0..255 (the model rescales in-graph)."""
    return tf.cast(images, tf.float32)


def preprocess_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """Eager convenience for one image: uint8 [H, W, 3] -> float32 [1, size, size, 3]."""
    return to_model_input(preprocess_image(image, size))[None].numpy()
