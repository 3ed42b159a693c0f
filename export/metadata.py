"""TFLite Model Metadata: written and read without the official metadata writers.

What a .tflite carries after ``attach_metadata``:

* a ``TFLITE_METADATA`` buffer holding a ``ModelMetadata`` flatbuffer (file
  identifier ``M001``) that describes the input image (RGB, normalization
  mean/std) and the outputs (probabilities, or detector tensors later);
* the associated files (``labels.txt``) in a zip archive appended to the
  model bytes. The interpreter ignores the trailing zip; MediaPipe Tasks and
  ``read_metadata`` open it.

This is byte-for-byte the layout of MediaPipe's ``MetadataPopulator``. We build
it with the pure-Python flatbuffers code MediaPipe ships
(``metadata_schema_py_generated``, and ``schema_py_generated``, identical to
the TF 2.21 converter's) because the writers in mediapipe >= 0.10.30 need a
compiled module that is not in the wheel, and older writers pin numpy < 2 or
protobuf < 4. Only this module touches those schemas.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field

import flatbuffers
from mediapipe.tasks.metadata import metadata_schema_py_generated as meta_fb
from mediapipe.tasks.metadata import schema_py_generated as model_fb

METADATA_FIELD_NAME = "TFLITE_METADATA"
MODEL_FILE_IDENTIFIER = b"TFL3"
METADATA_FILE_IDENTIFIER = b"M001"
# We only use fields that exist since metadata schema 1.0.0 (image properties,
# normalization, tensor-axis label files, stats), so any parser can read us.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
# {"task": "classify" | "detect"}: what the model is, recorded rather than guessed from its outputs.
# A model-level associated file of type DESCRIPTIONS, which every metadata parser accepts.
TASK_FILE = "task.json"


def schemas():
    """(model schema, metadata schema) modules."""
    return model_fb, meta_fb


@dataclass(frozen=True)
class ImageInput:
    """How raw RGB pixels p (0..255) become the float input: (p - mean) / std per channel.

    For quantized (uint8/int8) inputs the tensor's own scale/zero point then
    maps that float value to the integer the model takes.
    """

    size: int
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    name: str = "image"
    description: str = "RGB image, raw 0..255 pixels; the model rescales in-graph."


@dataclass(frozen=True)
class EmbeddedMetadata:
    """What ``read_metadata`` found in a .tflite."""

    name: str
    description: str
    version: str
    input_name: str
    color_space: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    output_names: tuple[str, ...]
    associated_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        raw = self.associated_files.get(LABELS_FILE, b"")
        return [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]

    @property
    def task(self) -> str | None:
        """The task recorded at export ("classify" or "detect"), or None for a model without it."""
        raw = self.associated_files.get(TASK_FILE)
        if raw is None:
            return None
        try:
            return json.loads(raw.decode("utf-8")).get("task")
        except (ValueError, AttributeError):
            return None


def image_tensor_metadata(image: ImageInput):
    _, meta = schemas()
    props = meta.ImagePropertiesT()
    props.colorSpace = meta.ColorSpaceType.RGB
    content = meta.ContentT()
    content.contentPropertiesType = meta.ContentProperties.ImageProperties
    content.contentProperties = props
    norm = meta.NormalizationOptionsT()
    norm.mean, norm.std = list(image.mean), list(image.std)
    unit = meta.ProcessUnitT()
    unit.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    unit.options = norm
    stats = meta.StatsT()
    stats.min = [(0.0 - m) / s for m, s in zip(image.mean, image.std)]
    stats.max = [(255.0 - m) / s for m, s in zip(image.mean, image.std)]
    tensor = meta.TensorMetadataT()
    tensor.name, tensor.description = image.name, image.description
    tensor.content, tensor.processUnits, tensor.stats = content, [unit], stats
    return tensor


def _labelled_tensor_metadata(name: str, description: str, labels_file: str, value_range=(0.0, 1.0)):
    """Metadata of a [1, C] score tensor whose axis is named by ``labels_file``."""
    _, meta = schemas()
    content = meta.ContentT()
    content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    content.contentProperties = meta.FeaturePropertiesT()
    labels = meta.AssociatedFileT()
    labels.name = labels_file
    labels.description = "Class names, one per line, in output index order."
    labels.type = meta.AssociatedFileType.TENSOR_AXIS_LABELS
    stats = meta.StatsT()
    stats.min, stats.max = [value_range[0]], [value_range[1]]
    tensor = meta.TensorMetadataT()
    tensor.name, tensor.description = name, description
    tensor.content, tensor.stats, tensor.associatedFiles = content, stats, [labels]
    return tensor


def classifier_metadata(image: ImageInput, *, name: str, description: str, version: str):
    """A ModelMetadataT for an image classifier: image in, probabilities [1, C] out (labels.txt)."""
    _, meta = schemas()
    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image_tensor_metadata(image)]
    subgraph.outputTensorMetadata = [_labelled_tensor_metadata(
        "probability", "Softmax probabilities, one per class in labels.txt order.", LABELS_FILE)]
    model = meta.ModelMetadataT()
    model.name, model.description, model.version = name, description, version
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    return model


def attach_metadata(model_bytes: bytes, metadata, associated_files: dict[str, bytes], *, task: str) -> bytes:
    """Return ``model_bytes`` with ``metadata`` (a ModelMetadataT), the files and the task record zipped on.

    Replaces metadata and associated files a model already had, so attaching is
    idempotent. Every associated file named in the metadata must be given.
    """
    model_fb, meta = schemas()
    record = meta.AssociatedFileT()
    record.name, record.description = TASK_FILE, "What the model is: {\"task\": \"classify\" | \"detect\"}."
    record.type = meta.AssociatedFileType.DESCRIPTIONS
    metadata.associatedFiles = [f for f in metadata.associatedFiles or [] if f.name not in (TASK_FILE, TASK_FILE.encode())]
    metadata.associatedFiles.append(record)
    associated_files = {**associated_files, TASK_FILE: json.dumps({"task": task}).encode("utf-8")}
    builder = flatbuffers.Builder(0)
    builder.Finish(metadata.Pack(builder), METADATA_FILE_IDENTIFIER)
    metadata_buf = bytes(builder.Output())

    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(model_bytes, 0))
    model.buffers = model.buffers or []
    model.metadata = model.metadata or []
    buffer = model_fb.BufferT()
    buffer.data = metadata_buf
    existing = [m for m in model.metadata if m.name.decode("utf-8") == METADATA_FIELD_NAME]
    if existing:
        model.buffers[existing[0].buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = model_fb.MetadataT()
        entry.name = METADATA_FIELD_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), MODEL_FILE_IDENTIFIER)

    missing = sorted(set(_named_files(read_metadata_buffer(metadata_buf))) - set(associated_files))
    if missing:
        raise ValueError(f"associated files named in the metadata but not given: {missing}")
    out = io.BytesIO(bytes(builder.Output()))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        for file_name, data in associated_files.items():
            zf.writestr(file_name, data)
    return out.getvalue()


def _named_files(metadata) -> list[str]:
    names = [f.name for f in metadata.associatedFiles or []]
    for subgraph in metadata.subgraphMetadata or []:
        names += [f.name for f in subgraph.associatedFiles or []]
        for tensor in (subgraph.inputTensorMetadata or []) + (subgraph.outputTensorMetadata or []):
            names += [f.name for f in tensor.associatedFiles or []]
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def read_metadata_buffer(buf: bytes):
    """A ``M001`` metadata flatbuffer -> ModelMetadataT."""
    _, meta = schemas()
    return meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAsModelMetadata(buf, 0))


def metadata_buffer(model_bytes: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` flatbuffer inside a .tflite, or None when there is none."""
    model_fb, _ = schemas()
    model = model_fb.Model.GetRootAsModel(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode("utf-8") == METADATA_FIELD_NAME:
            data = model.Buffers(entry.Buffer())
            if data.DataLength():
                return data.DataAsNumpy().tobytes()
    return None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")


def read_metadata(model_bytes: bytes) -> EmbeddedMetadata | None:
    """Metadata and associated files of a .tflite, or None when it carries no metadata."""
    _, meta = schemas()
    buf = metadata_buffer(model_bytes)
    if buf is None:
        return None
    md = read_metadata_buffer(buf)
    subgraph = md.subgraphMetadata[0]
    tensor = subgraph.inputTensorMetadata[0]
    mean, std = (), ()
    for unit in tensor.processUnits or []:
        if unit.optionsType == meta.ProcessUnitOptions.NormalizationOptions:
            mean, std = tuple(float(v) for v in unit.options.mean), tuple(float(v) for v in unit.options.std)
    color = "unknown"
    if tensor.content and tensor.content.contentPropertiesType == meta.ContentProperties.ImageProperties:
        color = {meta.ColorSpaceType.RGB: "RGB", meta.ColorSpaceType.GRAYSCALE: "GRAYSCALE"}.get(
            tensor.content.contentProperties.colorSpace, "unknown")
    files = {}
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            files = {name: zf.read(name) for name in zf.namelist()}
    except zipfile.BadZipFile:
        pass
    return EmbeddedMetadata(
        name=_text(md.name), description=_text(md.description), version=_text(md.version),
        input_name=_text(tensor.name), color_space=color, mean=mean, std=std,
        output_names=tuple(_text(t.name) for t in subgraph.outputTensorMetadata or []),
        associated_files=files,
    )


def with_classifier_metadata(model_bytes: bytes, labels: list[str], image: ImageInput, *,
                             name: str, description: str, version: str) -> bytes:
    """Embed classifier metadata and labels.txt so the .tflite works stand-alone (MediaPipe, predict)."""
    metadata = classifier_metadata(image, name=name, description=description, version=version)
    labels_txt = "".join(f"{label}\n" for label in labels).encode("utf-8")
    return attach_metadata(model_bytes, metadata, {LABELS_FILE: labels_txt}, task="classify")
