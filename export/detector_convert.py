"""SSD detector -> .tflite with the standard ``TFLite_Detection_PostProcess`` op and MediaPipe metadata.

The TF Object Detection API's way: the serving function ends in an empty
``tf.function(experimental_implements="TFLite_Detection_PostProcess ...")``
stub taking (box deltas [1, A, 4], class scores [1, A, C + 1], anchors [A, 4]);
the converter replaces the stub by the TFLite op, which decodes the boxes
against the anchors (baked in as a constant, from the SAME ``AnchorConfig``
as training), applies NMS, and outputs

    boxes   float32 [1, K, 4]  normalized [ymin, xmin, ymax, xmax]
    classes float32 [1, K]     0-based class index (labels.txt order)
    scores  float32 [1, K]
    count   float32 [1]

in that order (the converter orders the signature's outputs arbitrarily;
``order_detection_outputs`` rewrites the subgraph's output list to the op's
order, which MediaPipe and the metadata assume).

The model is exported through ``keras.export.ExportArchive``, which freezes the
Keras 3 variables; a plain tf.Module wrapper leaves them as VAR_HANDLE ops and
int8 calibration crashes. Quantization modes: ``float32`` (reference) and
``int8`` (int8 body, uint8 input, float outputs from the post-processing op),
each configured in exactly one function below.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import flatbuffers
import keras
import numpy as np
import tensorflow as tf

from common.errors import ConfigError, UserError
from export.convert import full_range_image
from export.metadata import (LABELS_FILE, MODEL_FILE_IDENTIFIER, ImageInput, attach_metadata, image_tensor_metadata,
                             schemas)
from models.anchors import AnchorConfig, generate_anchors
from models.box_coding import BOX_VARIANCES
from models.postprocess import MAX_DETECTIONS, NMS_IOU, SCORE_THRESHOLD

DETECTOR_MODES = ("float32", "int8")
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = ("boxes", "classes", "scores", "count")
# Metadata tensor names MediaPipe's ObjectDetector looks the outputs up by.
METADATA_OUTPUT_NAMES = ("location", "category", "score", "number of detections")


@dataclass(frozen=True)
class PostProcess:
    """Attributes of the TFLite_Detection_PostProcess op.

    score_threshold: detections below it are never output (MediaPipe's own threshold filters further).
    iou_threshold:   NMS overlap.
    max_detections:  K, rows of the outputs.
    use_regular_nms: True is per-class NMS, the function the Keras evaluation computes
                     (models.postprocess: every class of every anchor competes within its class).
                     False, the op's "fast" mode, keeps only each anchor's top class and suppresses
                     across classes. Measured on a tuned 96 px shapes detector, 150 test images:
                     fast mode cost 3.4 points of mAP@.5 (0.950 vs Keras 0.984) in float32, per-class
                     NMS matched Keras exactly, for 0.06 ms more (1.34 vs 1.28 ms, 1 thread).
    detections_per_class: per-class NMS keeps at most this many boxes of each class.
    """

    score_threshold: float = SCORE_THRESHOLD
    iou_threshold: float = NMS_IOU
    max_detections: int = MAX_DETECTIONS
    use_regular_nms: bool = True
    detections_per_class: int = MAX_DETECTIONS


def anchors_center_form(anchors: AnchorConfig) -> np.ndarray:
    """The op's anchor input: float32 [A, 4] [ycenter, xcenter, height, width] of ``generate_anchors``."""
    a = generate_anchors(anchors)
    return np.stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2, a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]],
                    axis=1).astype(np.float32)


def implements_signature(num_classes: int, post: PostProcess) -> str:
    """The ``experimental_implements`` text the converter turns into the op with these attributes.

    The op's scales are the reciprocals of the box coder's variances (``models.box_coding``).
    """
    y, x, h, w = (1.0 / v for v in BOX_VARIANCES)
    attrs = [
        ("max_detections", "i", int(post.max_detections)),
        ("max_classes_per_detection", "i", 1),
        ("detections_per_class", "i", int(post.detections_per_class)),
        ("use_regular_nms", "b", str(bool(post.use_regular_nms)).lower()),
        ("nms_score_threshold", "f", float(post.score_threshold)),
        ("nms_iou_threshold", "f", float(post.iou_threshold)),
        ("y_scale", "f", y), ("x_scale", "f", x), ("h_scale", "f", h), ("w_scale", "f", w),
        ("num_classes", "i", int(num_classes)),
    ]
    return " ".join([f'name: "{POSTPROCESS_OP}"'] +
                    [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, t, v in attrs])


def _postprocess_stub(num_classes: int, post: PostProcess):
    @tf.function(experimental_implements=implements_signature(num_classes, post), autograph=False)
    def postprocess(box_encodings, class_predictions, anchors):  # noqa: ARG001 -- replaced by the TFLite op
        k = post.max_detections
        return (tf.zeros([1, k, 4], tf.float32, name="boxes"), tf.zeros([1, k], tf.float32, name="classes"),
                tf.zeros([1, k], tf.float32, name="scores"), tf.zeros([1], tf.float32, name="count"))

    return postprocess


def prediction_halves(model):
    """The SSD up to its last layer: float32 [B, S, S, 3] -> [box deltas [B, A, 4], logits [B, A, C + 1]].

    ``models.ssd`` ends by concatenating the two halves into ``predictions`` (layer "predictions");
    the export takes them from that layer's inputs rather than slicing its output. In int8 a
    concatenation shares one scale among its inputs, so slicing the concatenated tensor would
    quantize the box deltas on the logits' wider range (measured on a trained 128 px detector:
    deltas about +-6 and logits +-14 shared a 0.099 step; kept apart, the deltas get 0.042);
    it also saves a concatenation and two slices. The same variables; the model is not copied.
    """
    return keras.Model(model.inputs, list(model.get_layer("predictions").input), name=f"{model.name}_halves")


def write_saved_model(model, anchors: AnchorConfig, num_classes: int, post: PostProcess, path: Path) -> None:
    """A SavedModel whose ``serving_default`` maps float32 [1, S, S, 3] 0..255 to the four detection outputs."""
    size = anchors.input_size
    anchor_const = anchors_center_form(anchors)
    postprocess = _postprocess_stub(num_classes, post)
    halves = prediction_halves(model)

    def serve(image):
        deltas, logits = halves(image, training=False)
        scores = tf.nn.softmax(logits, axis=-1)  # the op takes scores, background in column 0
        boxes, classes, det_scores, count = postprocess(deltas, scores, tf.constant(anchor_const))
        return dict(zip(OUTPUT_NAMES, (boxes, classes, det_scores, count)))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve,
                         input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])
    archive.write_out(str(path), verbose=False)


def _configure_float32(converter, calibration, io_dtype) -> None:
    """No optimisation: float32 weights and activations (the reference export)."""


def _configure_int8(converter, calibration, io_dtype) -> None:
    """int8 weights and activations from calibration, uint8 (or int8) input; the post-processing
    op's outputs stay float32 (they are boxes, ids and scores, not activations)."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image] for image in calibration)
    # BUILTINS alongside BUILTINS_INT8 only for the float tail of the post-processing op.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.uint8 if io_dtype == "uint8" else tf.int8


_CONFIGURE = {"float32": _configure_float32, "int8": _configure_int8}


def calibration_samples(images: Iterable[np.ndarray], size: int) -> list[np.ndarray]:
    """float32 [1, S, S, 3] 0..255 calibration images, plus one full-range image so the uint8
    input scale stays camera-like (exactly 0..255)."""
    samples = []
    for i, image in enumerate(images):
        image = np.asarray(image, np.float32).reshape((-1, size, size, 3))
        samples += [image[j:j + 1] for j in range(len(image))]
    if not samples:
        raise UserError("int8 export needs calibration images (the validation split is empty)")
    return [full_range_image(size)] + samples


def convert_detector(model, anchors: AnchorConfig, num_classes: int, mode: str, *,
                     calibration: Iterable[np.ndarray] | None = None, post: PostProcess = PostProcess(),
                     io_dtype: str = "uint8") -> bytes:
    """Keras 3 SSD -> .tflite bytes (no metadata), outputs boxes, classes, scores, count.

    Args:
        model: maps float32 [B, S, S, 3] 0..255 to predictions [B, A, 4 + C + 1] (models.ssd).
        anchors: the model's AnchorConfig (baked into the graph).
        mode: "float32" or "int8".
        calibration: for int8, float32 [1, S, S, 3] 0..255 images made by pipeline.preprocess.
        io_dtype: the int8 model's input type, "uint8" (camera bytes; MediaPipe) or "int8".
    """
    if mode not in DETECTOR_MODES:
        raise ConfigError(f"QUANT={mode}: detector export supports {', '.join(DETECTOR_MODES)} (or all)")
    samples = calibration_samples(calibration or [], anchors.input_size) if mode == "int8" else None
    with tempfile.TemporaryDirectory(prefix="detector-savedmodel-") as tmp:
        write_saved_model(model, anchors, num_classes, post, Path(tmp) / "saved_model")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "saved_model"))
        _CONFIGURE[mode](converter, samples, io_dtype)
        tflite = bytes(converter.convert())
    return order_detection_outputs(tflite)


# ---------------------------------------------------------------------------------------------
# Flatbuffer surgery and inspection (the TFLite schema that MediaPipe ships; see export.metadata)


def _model_t(model_bytes: bytes):
    model_fb, _ = schemas()
    return model_fb, model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(model_bytes, 0))


def op_names(model_bytes: bytes) -> list[str]:
    """Every operator of subgraph 0, by builtin name or custom code, in execution order."""
    model_fb, model = _model_t(model_bytes)
    builtin = {v: k for k, v in vars(model_fb.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        if code.customCode:
            names.append(code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode)
        else:
            names.append(builtin.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"))
    return names


def order_detection_outputs(model_bytes: bytes) -> bytes:
    """Make the model's outputs exactly the post-processing op's outputs, in its order
    (boxes, classes, scores, count), and name those tensors accordingly."""
    model_fb, model = _model_t(model_bytes)
    graph = model.subgraphs[0]
    ops = [op for op in graph.operators
           if (model.operatorCodes[op.opcodeIndex].customCode or b"") in (POSTPROCESS_OP, POSTPROCESS_OP.encode())]
    if len(ops) != 1:
        raise RuntimeError(f"expected one {POSTPROCESS_OP} op in the converted model, found {len(ops)}")
    outputs = [int(i) for i in ops[0].outputs]
    if sorted(outputs) != sorted(int(i) for i in graph.outputs):
        raise RuntimeError(f"the model's outputs {list(graph.outputs)} are not the {POSTPROCESS_OP} outputs {outputs}")
    graph.outputs = outputs
    for name, index in zip(OUTPUT_NAMES, outputs):
        graph.tensors[index].name = name
    for sig in model.signatureDefs or []:
        by_index = {int(t.tensorIndex): t for t in sig.outputs}
        sig.outputs = [by_index[i] for i in outputs if i in by_index]
        for t, name in zip(sig.outputs, OUTPUT_NAMES):
            t.name = name
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), MODEL_FILE_IDENTIFIER)
    return bytes(builder.Output())


# ---------------------------------------------------------------------------------------------
# Metadata for MediaPipe Tasks' ObjectDetector


def detector_metadata(image, *, name: str, description: str, version: str, labels_file: str):
    """A ModelMetadataT: image in; location, category (labels_file), score, number of detections out.

    Mirrors MediaPipe's ``MetadataWriter.add_detection_output``: bounding-box properties
    (order top, left, bottom, right; ratio coordinates), a value-label file on the
    category tensor, and the three per-detection tensors grouped.
    """
    _, meta = schemas()

    def tensor(name, description, content_type, properties, content_range=True):
        content = meta.ContentT()
        content.contentPropertiesType, content.contentProperties = content_type, properties
        if content_range:
            rng = meta.ValueRangeT()
            rng.min, rng.max = 2, 2
            content.range = rng
        t = meta.TensorMetadataT()
        t.name, t.description, t.content = name, description, content
        t.stats = meta.StatsT()
        return t

    box = meta.BoundingBoxPropertiesT()
    box.index = [1, 0, 3, 2]
    box.type = meta.BoundingBoxType.BOUNDARIES
    box.coordinateType = meta.CoordinateType.RATIO
    loc_name, cat_name, score_name, number_name = METADATA_OUTPUT_NAMES
    location = tensor(loc_name, "Boxes [ymin, xmin, ymax, xmax], normalized.",
                      meta.ContentProperties.BoundingBoxProperties, box)
    category = tensor(cat_name, "Class index of each box (labels.txt line).",
                      meta.ContentProperties.FeatureProperties, meta.FeaturePropertiesT())
    labels = meta.AssociatedFileT()
    labels.name, labels.description = labels_file, "Class names, one per line, in class index order."
    labels.type = meta.AssociatedFileType.TENSOR_VALUE_LABELS
    category.associatedFiles = [labels]
    score = tensor(score_name, "Score of each box.", meta.ContentProperties.FeatureProperties,
                   meta.FeaturePropertiesT())
    number = tensor(number_name, "Number of valid boxes.", meta.ContentProperties.FeatureProperties,
                    meta.FeaturePropertiesT(), content_range=False)
    group = meta.TensorGroupT()
    group.name, group.tensorNames = "detection_result", [loc_name, cat_name, score_name]

    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image_tensor_metadata(image)]
    subgraph.outputTensorMetadata = [location, category, score, number]
    subgraph.outputTensorGroups = [group]
    model = meta.ModelMetadataT()
    model.name, model.description, model.version = name, description, version
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = "1.2.0"  # tensor groups
    return model


def with_detector_metadata(model_bytes: bytes, labels: list[str], *, name: str, description: str,
                           version: str = "1") -> bytes:
    """Embed detector metadata and labels.txt, so MediaPipe's ObjectDetector (and our predict) can use
    the .tflite on its own. The input is raw RGB 0..255 (mean 0, std 1): the model rescales in-graph."""
    size = _input_size(model_bytes)
    metadata = detector_metadata(ImageInput(size=size), name=name, description=description, version=version,
                                 labels_file=LABELS_FILE)
    labels_txt = "".join(f"{label}\n" for label in labels).encode("utf-8")
    return attach_metadata(model_bytes, metadata, {LABELS_FILE: labels_txt}, task="detect")


def _input_size(model_bytes: bytes) -> int:
    _, model = _model_t(model_bytes)
    graph = model.subgraphs[0]
    return int(graph.tensors[graph.inputs[0]].shape[1])
