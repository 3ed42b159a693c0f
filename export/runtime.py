"""Running a .tflite the way a phone does: ai_edge_litert's Interpreter (XNNPACK by default).

``TFLiteModel`` is the task-agnostic part (load, quantize inputs, dequantize
outputs, time); ``TFLiteClassifier`` and ``TFLiteDetector`` add labels and the
task's outputs, and fit ``pipeline.evaluation.predict``'s protocols.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from common.errors import UserError
from common.progress import progress as progress_bar
from export.metadata import read_metadata
from pipeline.preprocess import preprocess_image


# LITERT_KERNELS picks the interpreter's kernels, so the suite can be run as it would run on a CPU
# whose fast kernels differ (README, "Testing"): "auto" is what phones run (XNNPACK for what it
# supports), "builtin" the built-in optimized kernels without XNNPACK, "reference" the plain
# reference kernels.
# Timed invocations for a latency figure (export's card, every tuning trial): enough for a stable
# median of a sub-millisecond model on a busy CPU.
LATENCY_RUNS = 100
# CPU flags that decide int8 speed: dot-product instructions (VNNI on x86, dotprod on ARM).
INT8_DOT_FLAGS = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "asimddp": "ARM dotprod"}


def cpu_description() -> str:
    """"Intel(R) Xeon(R) ... (2 cores; int8 dot product: AVX-512 VNNI)": the CPU a latency was
    measured on, and whether it has the instructions int8 kernels gain most from."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Hardware") and name == "unknown CPU":
                name = value.strip()
            elif key in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    dot = [label for flag, label in INT8_DOT_FLAGS.items() if flag in flags]
    return f"{name} ({os.cpu_count()} cores; int8 dot product: {', '.join(dot) if dot else 'none'})"
KERNELS_ENV = "LITERT_KERNELS"
KERNELS = {"auto": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
           "reference": OpResolverType.BUILTIN_REF}


def kernel_choice() -> OpResolverType:
    """The op resolver named by $LITERT_KERNELS (default "auto")."""
    name = os.environ.get(KERNELS_ENV, "auto") or "auto"
    if name not in KERNELS:
        raise UserError(f"{KERNELS_ENV}={name}: expected one of {', '.join(KERNELS)}")
    return KERNELS[name]


def _model_bytes(model: bytes | str | Path) -> tuple[bytes, str]:
    """(bytes, a name for messages) from .tflite bytes or a path."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "<tflite bytes>"
    path = Path(model)
    if not path.exists():
        raise UserError(f"{path}: model file not found")
    return path.read_bytes(), str(path)


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """float values -> the tensor's dtype, using its (scale, zero_point); float tensors pass through."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    if scale == 0:
        raise ValueError(f"integer tensor {detail['name']!r} has no quantization scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """The tensor's values as float32 (integer tensors mapped back with scale and zero point)."""
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(detail["dtype"], np.integer):
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


class TFLiteModel:
    """One interpreter over a .tflite with a single image input [1, S, S, 3]."""

    def __init__(self, model: bytes | str | Path, threads: int = 1):
        self.model_bytes, self.name = _model_bytes(model)
        try:
            self.interpreter = Interpreter(model_content=self.model_bytes, num_threads=threads,
                                           experimental_op_resolver_type=kernel_choice())
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UserError(f"{self.name}: not a loadable .tflite model ({str(e).splitlines()[0]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input["dtype"])

    @property
    def image_size(self) -> int:
        return int(self.input["shape"][1])

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """float32 [1, S, S, 3] 0..255 -> every output dequantized to float32 (batch 1)."""
        self.interpreter.set_tensor(self.input["index"], quantize(np.asarray(images, np.float32), self.input))
        self.interpreter.invoke()
        return [dequantize(self.interpreter.get_tensor(d["index"]), d) for d in self.outputs]

    def predict_batch(self, images: np.ndarray, *, progress: str | None = None) -> np.ndarray:
        """float32 [B, S, S, 3] 0..255 -> the first output for each image, float32 [B, ...].

        ``progress``: a description to show a progress bar (stderr) under; None shows none.
        """
        images = np.asarray(images, np.float32)
        indices = range(len(images))
        if progress is not None:
            indices = progress_bar(indices, total=len(images), desc=progress, unit="image")
        return np.stack([self.run(images[i:i + 1])[0][0] for i in indices])

    def tensor_types(self) -> dict[str, np.dtype]:
        """name -> dtype of every tensor in the graph (to check a model is integer-only)."""
        return {d["name"]: np.dtype(d["dtype"]) for d in self.interpreter.get_tensor_details()}


def model_labels(path: Path, metadata) -> list[str]:
    """A .tflite's class names: its embedded labels file, else labels.txt beside it (a run folder's)."""
    labels = metadata.labels if metadata else []
    if labels:
        return labels
    labels_file = path.parent / "labels.txt"
    if not labels_file.exists():
        raise UserError(f"{path}: the model has no embedded labels and {labels_file} does not exist")
    return [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]


class TFLiteClassifier:
    """An exported classifier, run exactly as a phone would run it.

    label_names: from the model's embedded labels, else labels.txt beside the file.
    image_size:  side S of the model's [1, S, S, 3] input.
    """

    def __init__(self, path: str | Path, threads: int = 1):
        self.model = TFLiteModel(path, threads=threads)
        self.path = Path(path)
        self.image_size = self.model.image_size
        self.metadata = read_metadata(self.model.model_bytes)
        self.label_names = model_labels(self.path, self.metadata)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """Raw uint8 [H, W, 3] RGB -> float32 [C] probabilities (resized by the shared preprocessing)."""
        pixels = preprocess_image(np.asarray(image), self.image_size).numpy()
        return self.predict_batch(pixels[None].astype(np.float32))[0]

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """float32 [B, S, S, 3] 0..255 (already preprocessed) -> float32 [B, C] probabilities."""
        return self.model.predict_batch(images)


class TFLiteDetector:
    """An exported detector .tflite, run as a phone runs it (ai_edge_litert, XNNPACK).

    Labels come from the model's embedded labels.txt, else labels.txt beside the file.
    Detections below the op's baked-in score threshold never appear; ``score_threshold``
    filters further.
    """

    def __init__(self, model: bytes | str | Path, threads: int = 1, score_threshold: float = 0.0):
        self.model = TFLiteModel(model, threads=threads)
        self.path = Path(self.model.name)
        self.image_size = self.model.image_size
        self.score_threshold = score_threshold
        shapes = [tuple(d["shape"]) for d in self.model.outputs]
        if len(shapes) != 4 or len(shapes[0]) != 3 or shapes[0][-1] != 4 or len(shapes[3]) != 1:
            raise UserError(f"{self.model.name}: not a detector with outputs boxes, classes, scores, count "
                            f"(output shapes {shapes})")
        self.label_names = model_labels(self.path, read_metadata(self.model.model_bytes))

    def detect_batch(self, images: np.ndarray) -> list[dict]:
        out = []
        for image in np.asarray(images, np.float32):
            boxes, classes, scores, count = self.model.run(image[None])
            n = int(round(float(count[0])))
            keep = scores[0, :n] >= self.score_threshold
            out.append({"boxes": np.clip(boxes[0, :n][keep], 0.0, 1.0).astype(np.float32),
                        "classes": np.round(classes[0, :n][keep]).astype(np.int32),
                        "scores": scores[0, :n][keep].astype(np.float32)})
        return out


def measure_latency(model_bytes_or_path: bytes | str | Path, runs: int = LATENCY_RUNS, threads: int = 1,
                    warmup: int = 5) -> dict:
    """Time single-image inference on this CPU.

    Returns {"median_ms", "p90_ms", "mean_ms", "min_ms", "runs", "threads", "pinned_cpu"}; the
    input is a fixed random image of the model's input dtype. With one thread the process is pinned
    to one core while it is timed (Linux; ``pinned_cpu`` None elsewhere), so the scheduler moving it
    between cores does not add to the spread; the p90 beside the median records what spread is left.
    """
    model = TFLiteModel(model_bytes_or_path, threads=threads)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=model.input["shape"]).astype(np.float32)
    interp = model.interpreter
    interp.set_tensor(model.input["index"], quantize(pixels, model.input))
    allowed = os.sched_getaffinity(0) if threads == 1 and hasattr(os, "sched_setaffinity") else None
    pinned = max(allowed) if allowed else None  # the last core: the one least busy with the system's own work
    if pinned is not None:
        os.sched_setaffinity(0, {pinned})
    try:
        for _ in range(warmup):
            interp.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - start) * 1000.0)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, allowed)
    times = np.asarray(times)
    return {
        "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "pinned_cpu": pinned,
        "mean_ms": float(times.mean()), "min_ms": float(times.min()), "runs": int(runs), "threads": int(threads),
    }
