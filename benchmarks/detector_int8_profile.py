"""Where the int8 SSD detector's time goes, op by op, next to its float32 twin.

    python -m benchmarks.detector_int8_profile OUT_DIR [--rounds N]

The detector benchmark measures int8 slower than float32 on this CPU, while the
target is int8 <= 0.5x. Whole-model latency cannot say whether the int8 kernels,
the quantize/dequantize glue, the float TFLite_Detection_PostProcess op or our
export settings are to blame, so this probe measures each part separately, on
the default detector (``pipeline.training.detector.default_ssd``, untrained: weights
do not change how long an op takes; its class heads are biased to background so
that the post-processing op sees a trained model's few candidates) converted by
``export.detector_convert``:

1. whole models, float32 vs int8, at 1 and 2 threads: the detector as exported,
   and its body alone (``export.convert.convert_keras``, no post-processing op);
2. per op: ai_edge_litert 2.3 has no profiler reachable from Python (the
   Interpreter only lists ops; ``experimental_force_delegate_node_profiling``
   feeds a C++ profiler Python cannot attach), so every operator of the .tflite
   is cut out into a one-op model (same tensors, weights and quantization),
   fed the values it sees in the whole model, and timed on its own. That also
   tells which ops XNNPACK takes (a one-op model either has a DELEGATE node or not);
3. the post-processing op alone against the number of anchors that pass its
   score threshold: it decodes and NMS-sorts every passing anchor, in float32
   for both modes, so its cost depends on the scores and not on the quantization;
4. converter settings that could change int8 speed: per-tensor instead of
   per-channel weights, and an int8 instead of a uint8 input (no QUANTIZE op).

Timings interleave the models round by round and keep the least disturbed
round (the minimum over rounds of each round's median latency, or of a one-op
model's mean), as ``int8_kernels`` does: the machine may be shared. Each one-op time includes the interpreter's
call overhead (about 1.5 us per op here).

No data is read: the model is untrained and fed random images. ``smoke=True`` profiles the
detection benchmark's tiny 64 px detector with one round of a few runs: it checks the
probe works, and measures nothing.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.detection_bench import SMOKE_SSD
from common.run_folder import write_json, write_text
from models.ssd import SSDConfig

NUM_CLASSES = 7
# Added to the background logit of the untrained model (see _untrained_detector): e^8 / 7 ~ 400:1.
BACKGROUND_LOGIT = 8.0
CALIBRATION_IMAGES = 8
# Anchors above the post-processing op's score threshold, for its cost curve.
CANDIDATES = (0, 10, 100, 300, 1000)
# Ops that are the quantization glue of an int8 model; the rest pair one to one with float32's.
_GLUE = ("QUANTIZE", "DEQUANTIZE")


@dataclass(frozen=True)
class ProfileSize:
    """How large the probe is.

    ssd: the detector profiled (None: the default, ``pipeline.training.detector.default_ssd``).
    rounds, runs: whole-model timing (interleaved rounds, invocations per median).
    op_rounds, op_runs: one-op model timing; postprocess_rounds, postprocess_runs: the
    post-processing cost curve. calibration_images: of the int8 conversions.
    """

    ssd: SSDConfig | None = None
    rounds: int = 15
    runs: int = 30
    op_rounds: int = 7
    op_runs: int = 30
    postprocess_rounds: int = 7
    postprocess_runs: int = 20
    calibration_images: int = CALIBRATION_IMAGES


FULL = ProfileSize()
SMOKE = ProfileSize(ssd=SMOKE_SSD, rounds=1, runs=3, op_rounds=1, op_runs=2, postprocess_rounds=1,
                    postprocess_runs=2, calibration_images=2)


# ---------------------------------------------------------------------------------------------
# The models


def _untrained_detector(ssd: SSDConfig | None = None):
    """(Keras SSD, its DetectTrainConfig): the detector ``ssd`` (None: the default), freshly
    initialised, except that its class heads are biased to background.

    Op times do not depend on the weights, but the post-processing op's does on the scores:
    untrained, every class scores 1 / (C + 1), every anchor passes the 0.01 threshold and NMS
    sorts them all (over 1 ms here). A trained detector is confident about the background, so
    few anchors pass (18 detections on a test image, for one trained 4 epochs); the bias gives
    the untrained model that cost. ``postprocess_cost`` measures the op against the count.
    """
    from pipeline.training.detector import DetectTrainConfig, build_detector, compile_detector

    cfg = DetectTrainConfig() if ssd is None else DetectTrainConfig(ssd=ssd)
    model = compile_detector(build_detector(cfg, num_classes=NUM_CLASSES), cfg, total_steps=10)
    for s in cfg.ssd.anchors.strides:
        layer = model.get_layer(f"class_s{s}_pred")  # channels: anchor-major, background first
        kernel, bias = layer.get_weights()
        bias[::NUM_CLASSES + 1] += BACKGROUND_LOGIT
        layer.set_weights([kernel, bias])
    return model, cfg


def _calibration(size: int, count: int = CALIBRATION_IMAGES, seed: int = 0) -> list[np.ndarray]:
    """float32 [1, S, S, 3] random 0..255 images; the converters add the full-range image themselves."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (1, size, size, 3)).astype(np.float32) for _ in range(count)]


def _convert_int8_with(model, cfg, calibration, tweak) -> bytes:
    """The int8 detector export with one converter field changed by ``tweak(converter)``.

    Mirrors ``convert_detector``; kept here because these settings are experiments, not a mode.
    """
    import tensorflow as tf

    from export import detector_convert as de

    post = de.PostProcess(score_threshold=cfg.score_threshold, iou_threshold=cfg.nms_iou,
                          max_detections=cfg.max_detections)
    anchors = cfg.ssd.anchors
    with tempfile.TemporaryDirectory(prefix="detector-profile-") as tmp:
        de.write_saved_model(model, anchors, NUM_CLASSES, post, Path(tmp) / "saved_model")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "saved_model"))
        de._configure_int8(converter, de.calibration_samples(calibration, anchors.input_size), "uint8")
        tweak(converter)
        return de.order_detection_outputs(bytes(converter.convert()))


def _per_tensor(converter) -> None:
    converter._experimental_disable_per_channel = True


def export_models(model, cfg, calibration) -> dict[str, bytes]:
    """name -> .tflite bytes: the detector and its body (no post-processing op), float32 and int8,
    and the int8 detector under two other converter settings (per-tensor weights; an int8 input,
    INT8_IO=int8, which needs no QUANTIZE op)."""
    from export.convert import convert_keras
    from export.detector_convert import PostProcess, convert_detector

    post = PostProcess(score_threshold=cfg.score_threshold, iou_threshold=cfg.nms_iou,
                       max_detections=cfg.max_detections)
    anchors = cfg.ssd.anchors
    return {
        "detector float32": convert_detector(model, anchors, NUM_CLASSES, "float32", post=post),
        "detector int8": convert_detector(model, anchors, NUM_CLASSES, "int8", calibration=calibration, post=post),
        "body float32": convert_keras(model, "float32"),
        "body int8": convert_keras(model, "int8", calibration),
        "detector int8, per-tensor weights": _convert_int8_with(model, cfg, calibration, _per_tensor),
        "detector int8, int8 input": convert_detector(model, anchors, NUM_CLASSES, "int8", calibration=calibration,
                                                      post=post, io_dtype="int8"),
    }


# ---------------------------------------------------------------------------------------------
# Whole-model latency


def whole_model_latency(models: dict[str, bytes], threads: int, rounds: int, runs: int) -> dict[str, dict]:
    """name -> {"best_ms", "median_ms"}: per round, each model's median single-image latency
    (``export.runtime.measure_latency``), models interleaved; best and median over rounds."""
    from export.runtime import measure_latency

    medians = defaultdict(list)
    for _ in range(rounds):
        for name, blob in models.items():
            medians[name].append(measure_latency(blob, runs=runs, threads=threads)["median_ms"])
    return {name: {"best_ms": float(min(m)), "median_ms": float(np.median(m))} for name, m in medians.items()}


# ---------------------------------------------------------------------------------------------
# One-op models


def _model_t(model_bytes: bytes):
    from export.metadata import schemas

    model_fb, _ = schemas()
    return model_fb, model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(model_bytes, 0))


def _op_type(model_fb, model, op) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
    builtin = {v: k for k, v in vars(model_fb.BuiltinOperator).items() if not k.startswith("_")}
    return builtin.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")


def one_op_models(model_bytes: bytes) -> list[dict]:
    """Every operator of subgraph 0 as a model of its own, in execution order.

    Each is the whole flatbuffer (tensors, weights, quantization) with one operator; its inputs are
    that op's non-constant inputs, its outputs the op's outputs. Returns dicts {"index", "op",
    "kernel" (filter [kh, kw] for convolutions, else None), "in_shape", "out_shape", "bytes"}.
    """
    import flatbuffers

    from export.metadata import MODEL_FILE_IDENTIFIER

    model_fb, model = _model_t(model_bytes)
    graph = model.subgraphs[0]
    model.signatureDefs, model.metadata = None, None  # they name the whole model's inputs and outputs

    def constant(t: int) -> bool:
        data = model.buffers[graph.tensors[t].buffer].data
        return data is not None and len(data) > 0

    def shape(t: int) -> tuple:
        return tuple(int(d) for d in graph.tensors[t].shape)

    ops, out = list(graph.operators), []
    for index, op in enumerate(ops):
        inputs = [int(t) for t in op.inputs if t >= 0]
        name = _op_type(model_fb, model, op)
        graph.operators = [op]
        graph.inputs = [t for t in inputs if not constant(t)]
        graph.outputs = [int(t) for t in op.outputs]
        builder = flatbuffers.Builder(0)
        builder.Finish(model.Pack(builder), MODEL_FILE_IDENTIFIER)
        kernel = list(shape(inputs[1])[1:3]) if name in ("CONV_2D", "DEPTHWISE_CONV_2D") else None
        out.append({"index": index, "op": name, "kernel": kernel, "in_shape": list(shape(inputs[0])),
                    "out_shape": list(shape(graph.outputs[0])), "bytes": bytes(builder.Output())})
    return out


def _tensor_values(model_bytes: bytes) -> dict[int, np.ndarray]:
    """Every tensor's value for one random image. Without XNNPACK: the delegate keeps its
    intermediate tensors to itself, the built-in kernels write each one."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model_bytes, num_threads=1, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    image = interp.get_input_details()[0]
    pixels = np.random.default_rng(0).integers(0, 256, image["shape"])
    interp.set_tensor(image["index"], pixels.astype(image["dtype"]))
    interp.invoke()
    values = {}
    for detail in interp.get_tensor_details():
        try:
            values[detail["index"]] = interp.get_tensor(detail["index"]).copy()
        except ValueError:  # constants folded away, scratch tensors
            pass
    return values


def _ready(model_bytes: bytes, values: dict[int, np.ndarray] | None = None, threads: int = 1):
    """(interpreter with its inputs set, whether XNNPACK took the op)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes, num_threads=threads)
    interp.allocate_tensors()
    for detail in interp.get_input_details():
        value = values[detail["index"]] if values else np.zeros(detail["shape"], detail["dtype"])
        interp.set_tensor(detail["index"], value)
    delegated = any(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
    return interp, delegated


def _time_interleaved(interpreters: list, rounds: int, runs: int) -> list[float]:
    """Microseconds per invoke of each interpreter: best over rounds of the mean of ``runs`` calls."""
    best = [float("inf")] * len(interpreters)
    for interp in interpreters:
        for _ in range(3):
            interp.invoke()
    for _ in range(rounds):
        for k, interp in enumerate(interpreters):
            start = time.perf_counter()
            for _ in range(runs):
                interp.invoke()
            best[k] = min(best[k], (time.perf_counter() - start) / runs * 1e6)
    return best


def op_profile(model_bytes: bytes, rounds: int = 7, runs: int = 30) -> list[dict]:
    """one_op_models' rows (without the bytes) plus "us" (time alone, 1 thread) and "xnnpack"."""
    values = _tensor_values(model_bytes)
    rows, interpreters = [], []
    for row in one_op_models(model_bytes):
        interp, delegated = _ready(row.pop("bytes"), values)
        rows.append({**row, "xnnpack": delegated})
        interpreters.append(interp)
    for row, us in zip(rows, _time_interleaved(interpreters, rounds, runs)):
        row["us"] = us
    return rows


def category(row: dict) -> str:
    """The kind of work an op does, for the per-category table."""
    op = row["op"]
    if op == "CONV_2D":
        if row["kernel"] != [1, 1]:
            return "conv kxk (stem)"
        return "conv 1x1, expand" if row["out_shape"][-1] > row["in_shape"][-1] else "conv 1x1, project/head"
    if op == "DEPTHWISE_CONV_2D":
        return "depthwise 3x3"
    if op in ("ADD", "MUL"):
        return "elementwise (rescale, residual add)"
    if op in ("RESHAPE", "CONCATENATION", "STRIDED_SLICE"):
        return "reshape / concat / slice"
    return op


def by_category(rows_float: list[dict], rows_int8: list[dict]) -> list[dict]:
    """Per category: op count and summed one-op time of each mode."""
    out = {}
    for mode, rows in (("float32", rows_float), ("int8", rows_int8)):
        for row in rows:
            c = out.setdefault(category(row), {"category": category(row), "float32_ops": 0, "int8_ops": 0,
                                               "float32_us": 0.0, "int8_us": 0.0, "int8_on_xnnpack": True})
            c[f"{mode}_ops"] += 1
            c[f"{mode}_us"] += row["us"]
            if mode == "int8":
                c["int8_on_xnnpack"] &= row["xnnpack"]
    return sorted(out.values(), key=lambda c: -c["int8_us"])


def paired_ops(rows_float: list[dict], rows_int8: list[dict]) -> list[dict]:
    """The ops both models share, in order (int8's quantization glue left out), with both times.
    Empty if the two graphs do not line up op for op."""
    body = [r for r in rows_int8 if r["op"] not in _GLUE]
    if [(r["op"], r["out_shape"]) for r in rows_float] != [(r["op"], r["out_shape"]) for r in body]:
        return []
    return [{"op": f["op"], "category": category(f), "kernel": f["kernel"], "in_shape": f["in_shape"],
             "out_shape": f["out_shape"], "float32_us": f["us"], "int8_us": i["us"], "ratio": i["us"] / f["us"]}
            for f, i in zip(rows_float, body)]


def delegate_partitions(model_bytes: bytes) -> int:
    """How many DELEGATE nodes (XNNPACK partitions) the whole model is cut into."""
    interp, _ = _ready(model_bytes)
    return sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())


# ---------------------------------------------------------------------------------------------
# The post-processing op against its input


def postprocess_cost(detector_bytes: bytes, candidates=CANDIDATES, rounds: int = 7, runs: int = 20,
                     threshold: float = 0.01) -> list[dict]:
    """Microseconds of the TFLite_Detection_PostProcess op alone, fed random box deltas and
    scores where exactly ``n`` anchors have a class score above ``threshold`` (the rest are background)."""
    from export.detector_convert import POSTPROCESS_OP

    row = next(r for r in one_op_models(detector_bytes) if r["op"] == POSTPROCESS_OP)
    interp, _ = _ready(row["bytes"])
    boxes_in, scores_in = interp.get_input_details()
    _, num_anchors, num_scores = scores_in["shape"]
    rng = np.random.default_rng(0)
    out = []
    for n in candidates:
        n = min(n, num_anchors)
        scores = np.zeros((1, num_anchors, num_scores), np.float32)
        scores[..., 0] = 1.0 - threshold / 2  # background; each class far below the threshold
        scores[..., 1:] = threshold / 2 / (num_scores - 1)
        picked = rng.choice(num_anchors, n, replace=False)
        scores[0, picked, rng.integers(1, num_scores, n)] = rng.uniform(2 * threshold, 1.0, n)
        interp.set_tensor(boxes_in["index"], rng.normal(0.0, 1.0, boxes_in["shape"]).astype(np.float32))
        interp.set_tensor(scores_in["index"], scores)
        out.append({"candidates": int(n), "us": _time_interleaved([interp], rounds, runs)[0]})
    return out


# ---------------------------------------------------------------------------------------------
# The probe


def run_detector_int8_profile(out_dir: Path, *, rounds: int | None = None, runs: int | None = None,
                              smoke: bool = False) -> dict:
    """Export, time and profile; writes OUT/detector_int8_profile.json and .md. Returns the results.

    ``rounds``, ``runs``: whole-model timing (None: the size's). ``smoke``: tiny sizes (see ``SMOKE``).
    """
    from benchmarks.int8_kernels import cpu_flags
    from export.detector_convert import POSTPROCESS_OP

    size = SMOKE if smoke else FULL
    rounds = size.rounds if rounds is None else rounds
    runs = size.runs if runs is None else runs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, cfg = _untrained_detector(size.ssd)
    models = export_models(model, cfg, _calibration(cfg.image_size, size.calibration_images))
    latency = {str(t): whole_model_latency(models, t, rounds, runs) for t in (1, 2)}

    profiles = {mode: op_profile(models[f"detector {mode}"], rounds=size.op_rounds, runs=size.op_runs)
                for mode in ("float32", "int8")}
    categories = by_category(profiles["float32"], profiles["int8"])
    pairs = paired_ops(profiles["float32"], profiles["int8"])
    not_delegated = sorted({r["op"] for r in profiles["int8"] if not r["xnnpack"]})
    one = latency["1"]
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(),
                    "note": "shared 2-core CPU, no GPU; timings are the least disturbed of interleaved rounds"},
        "smoke": smoke,
        "model": {"config": cfg.ssd.to_dict(), "num_classes": NUM_CLASSES, "weights": "untrained",
                  "bytes": {name: len(blob) for name, blob in models.items()},
                  "ops": {mode: len(rows) for mode, rows in profiles.items()}},
        "latency_ms": latency,
        "ratios": {
            "detector_int8_over_float32": one["detector int8"]["best_ms"] / one["detector float32"]["best_ms"],
            "body_int8_over_float32": one["body int8"]["best_ms"] / one["body float32"]["best_ms"],
        },
        "one_op_sum_ms": {mode: sum(r["us"] for r in rows) / 1000 for mode, rows in profiles.items()},
        "categories": categories,
        "ops": pairs,
        "xnnpack": {"int8_partitions": delegate_partitions(models["detector int8"]),
                    "float32_partitions": delegate_partitions(models["detector float32"]),
                    "int8_ops_not_delegated": not_delegated},
        "postprocess_us_by_candidates": postprocess_cost(models["detector float32"], rounds=size.postprocess_rounds,
                                                         runs=size.postprocess_runs, threshold=cfg.score_threshold),
        "postprocess_us_in_profile": {mode: sum(r["us"] for r in rows if r["op"] == POSTPROCESS_OP)
                                      for mode, rows in profiles.items()},
    }
    write_json(out_dir / "detector_int8_profile.json", result)
    write_text(out_dir / "detector_int8_profile.md", _markdown(result))
    return result


def _markdown(r: dict) -> str:
    lat = r["latency_ms"]
    names = list(lat["1"])
    lines = [
        "# Where the int8 detector's time goes (LiteRT XNNPACK)",
        "",
        f"Machine: {r['machine']['cpu']}, SIMD flags {', '.join(r['machine']['cpu_flags']) or 'unknown'}; "
        f"{r['machine']['note']}. {'Smoke-size 64 px' if r.get('smoke') else 'Default'} SSD "
        f"(untrained weights, {r['model']['num_classes']} classes).",
        "",
        "| model | bytes | 1 thread best ms | 1 thread median ms | 2 threads best ms | 2 threads median ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {r['model']['bytes'][n]:,} | {lat['1'][n]['best_ms']:.3f} | {lat['1'][n]['median_ms']:.3f} | "
              f"{lat['2'][n]['best_ms']:.3f} | {lat['2'][n]['median_ms']:.3f} |" for n in names]
    ratios = r["ratios"]
    lines += ["", f"int8 / float32, 1 thread: detector {ratios['detector_int8_over_float32']:.2f}x, "
                  f"body {ratios['body_int8_over_float32']:.2f}x.", "",
              "## By kind of op (each op timed alone, 1 thread)", "",
              f"Sum of one-op times: float32 {r['one_op_sum_ms']['float32']:.2f} ms, "
              f"int8 {r['one_op_sum_ms']['int8']:.2f} ms.", "",
              "| kind | ops float32 / int8 | float32 us | int8 us | int8 / float32 | int8 on XNNPACK |",
              "|---|---:|---:|---:|---:|---|"]
    for c in r["categories"]:
        ratio = f"{c['int8_us'] / c['float32_us']:.2f}x" if c["float32_us"] else "-"
        lines.append(f"| {c['category']} | {c['float32_ops']} / {c['int8_ops']} | {c['float32_us']:.0f} | "
                     f"{c['int8_us']:.0f} | {ratio} | {'yes' if c['int8_on_xnnpack'] else 'no'} |")
    x = r["xnnpack"]
    lines += ["", f"XNNPACK partitions: float32 {x['float32_partitions']}, int8 {x['int8_partitions']}; "
                  f"int8 ops left to the built-in kernels: {', '.join(x['int8_ops_not_delegated']) or 'none'}.", ""]
    if r["ops"]:
        worst = sorted(r["ops"], key=lambda o: o["float32_us"] - o["int8_us"])[:12]
        lines += ["## The ops int8 loses most on", "",
                  "| op | kernel | input | output | float32 us | int8 us | int8 / float32 |",
                  "|---|---|---|---|---:|---:|---:|"]
        lines += [f"| {o['op']} | {'x'.join(map(str, o['kernel'])) if o['kernel'] else ''} | "
                  f"{'x'.join(map(str, o['in_shape'][1:]))} | {'x'.join(map(str, o['out_shape'][1:]))} | "
                  f"{o['float32_us']:.1f} | {o['int8_us']:.1f} | {o['ratio']:.2f}x |" for o in worst]
        lines.append("")
    lines += ["## TFLite_Detection_PostProcess alone (float32 in both modes)", "",
              "| anchors above the score threshold | us |", "|---:|---:|"]
    lines += [f"| {p['candidates']} | {p['us']:.0f} |" for p in r["postprocess_us_by_candidates"]]
    pp = r["postprocess_us_in_profile"]
    lines += ["", f"In the profile above (background-biased scores): float32 {pp['float32']:.0f} us, "
                  f"int8 {pp['int8']:.0f} us."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds of whole-model timing (default 15)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the probe runs, measures nothing")
    args = parser.parse_args(argv)
    print(_markdown(run_detector_int8_profile(args.out, rounds=args.rounds, smoke=args.smoke)))


if __name__ == "__main__":
    main()
