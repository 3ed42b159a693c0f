"""Detector export: the TFLite_Detection_PostProcess op, output order, uint8 input, MediaPipe."""
import flatbuffers
import numpy as np
import pytest

from export.detector_convert import (OUTPUT_NAMES, POSTPROCESS_OP, anchors_center_form, implements_signature,
                                    op_names, order_detection_outputs, PostProcess)
from export.metadata import MODEL_FILE_IDENTIFIER, schemas, read_metadata
from export.runtime import TFLiteModel
from export.verify import MAX_MAP_DROP
from models.anchors import AnchorConfig, generate_anchors
from tasks.detect import evaluate_detection_run


def _bytes(results, mode):
    return open(results[mode]["path"], "rb").read()


def _postprocess_outputs(model_bytes):
    model_fb, _ = schemas()
    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    op = next(o for o in graph.operators if model.operatorCodes[o.opcodeIndex].customCode == POSTPROCESS_OP.encode())
    return list(op.outputs), list(graph.outputs)


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_the_model_ends_in_the_postprocess_op_with_outputs_in_order(exported, mode):
    _, results = exported
    data = _bytes(results, mode)
    assert op_names(data)[-1] == POSTPROCESS_OP
    op_outputs, model_outputs = _postprocess_outputs(data)
    assert model_outputs == op_outputs  # boxes, classes, scores, count: the op's own order
    m = TFLiteModel(data)
    assert [d["name"] for d in m.outputs] == list(OUTPUT_NAMES)
    k = PostProcess().max_detections
    assert [tuple(d["shape"]) for d in m.outputs] == [(1, k, 4), (1, k), (1, k), (1,)]
    assert all(np.dtype(d["dtype"]) == np.float32 for d in m.outputs)
    meta = read_metadata(data)
    assert meta.output_names == ("location", "category", "score", "number of detections")
    assert meta.labels == (exported[0] / "labels.txt").read_text().split()


@pytest.mark.heavy
def test_int8_has_a_uint8_camera_input_and_an_integer_body(exported):
    _, results = exported
    m = TFLiteModel(_bytes(results, "int8"))
    assert m.input_dtype == np.uint8
    scale, zero = m.input["quantization"]
    assert scale == pytest.approx(1.0, abs=1e-6) and zero == 0  # raw camera bytes are the trained pixels
    names = op_names(_bytes(results, "int8"))
    assert names.count("CONV_2D") > 10 and "DEQUANTIZE" in names
    ints = [t for t, dt in m.tensor_types().items() if dt == np.int8]
    assert len(ints) > 50
    assert len(_bytes(results, "int8")) < 0.6 * len(_bytes(results, "float32"))


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_box_deltas_and_class_logits_are_taken_before_the_final_concatenation(exported, mode):
    """Slicing the model's one concatenated output would, in int8, give the box deltas the class
    logits' coarser scale; the exporter takes the two halves from the layer's inputs instead."""
    _, results = exported
    names = op_names(_bytes(results, mode))
    assert "STRIDED_SLICE" not in names and "SLICE" not in names and "SPLIT" not in names, names


@pytest.mark.heavy
def test_verification_figures_are_those_of_the_written_models(exported, trained_detector, data_dir):
    """The figures export verified with, recomputed here: each written .tflite scored by the eval
    command's code on the same 8 images, and the Keras reference from training's own metrics."""
    run, results = exported
    _, metrics, _ = trained_detector
    for mode in ("float32", "int8"):
        v = results[mode]["verify"]
        # split "train" of the run's DATA=: the 8 images of the fixture's test split
        scored = evaluate_detection_run(run, model_path=results[mode]["path"], data_dir=data_dir, split="train")
        assert v["examples"] == scored["images"] == 8, v
        assert v["score"] == pytest.approx(scored["map50"], abs=1e-6), (v, scored)
        assert v["detail"]["map"] == pytest.approx(scored["map"], abs=1e-6), (v, scored)
        assert v["reference_score"] == pytest.approx(metrics["test"]["map50"], abs=1e-6), v
        assert v["passed"], v
    # float32 computes the Keras model's function, per-class NMS included: every confident Keras
    # detection is found again. Boxes differ by float32 rounding only, so the mAP can move only where
    # a match sits exactly on the IoU threshold; the bound is the export contract's, not one CPU's.
    assert results["float32"]["verify"]["agreement"] == 1.0
    assert results["float32"]["verify"]["score"] == pytest.approx(metrics["test"]["map50"], abs=MAX_MAP_DROP)
    assert results["int8"]["verify"]["score"] > 0.5  # learned, after quantization too (untrained: about 0)
    assert results["int8"]["card"]["task"] == "detect"
    assert read_metadata(_bytes(results, "int8")).task == "detect"


@pytest.mark.heavy
def test_order_detection_outputs_fixes_a_shuffled_output_list(exported):
    _, results = exported
    data = _bytes(results, "float32")
    model_fb, _ = schemas()
    model = model_fb.ModelT.InitFromObj(model_fb.Model.GetRootAsModel(data, 0))
    model.subgraphs[0].outputs = list(reversed(model.subgraphs[0].outputs))  # what the converter may do
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), MODEL_FILE_IDENTIFIER)
    shuffled = bytes(builder.Output())
    assert [d["name"] for d in TFLiteModel(shuffled).outputs] == list(reversed(OUTPUT_NAMES))
    assert [d["name"] for d in TFLiteModel(order_detection_outputs(shuffled)).outputs] == list(OUTPUT_NAMES)


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["int8", "float32"])
def test_mediapipe_object_detector_loads_the_model_and_finds_objects(exported, overfit_source, mode):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    run, results = exported
    ex = next(iter(overfit_source.examples("test")))
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=results[mode]["path"]),
                                           score_threshold=0.3, max_results=10)
    with vision.ObjectDetector.create_from_options(options) as detector:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(ex["image"].numpy()))
        found = detector.detect(image).detections
    labels = (run / "labels.txt").read_text().split()
    assert found and all(d.categories[0].category_name in labels for d in found)
    size = ex["image"].shape[0]
    best = found[0].bounding_box
    pred = np.array([best.origin_y, best.origin_x, best.origin_y + best.height, best.origin_x + best.width]) / size
    truth = ex["boxes"].numpy()
    inter_hw = np.clip(np.minimum(pred[2:], truth[:, 2:]) - np.maximum(pred[:2], truth[:, :2]), 0, None)
    inter = inter_hw.prod(axis=1)
    union = (pred[2:] - pred[:2]).prod() + (truth[:, 2:] - truth[:, :2]).prod(axis=1) - inter
    assert (inter / union).max() > 0.5


def test_anchor_constant_and_op_attributes_come_from_the_shared_config():
    cfg = AnchorConfig(input_size=64, strides=(16, 32), min_scale=0.25, max_scale=0.5)
    corners, centres = generate_anchors(cfg), anchors_center_form(cfg)
    np.testing.assert_allclose(centres[:, :2], (corners[:, :2] + corners[:, 2:]) / 2, atol=1e-7)
    np.testing.assert_allclose(centres[:, 2:], corners[:, 2:] - corners[:, :2], atol=1e-7)
    text = implements_signature(7, PostProcess(score_threshold=0.25))
    for attr in ('key: "y_scale" value { f: 10.0 }', 'key: "h_scale" value { f: 5.0 }',
                 'key: "num_classes" value { i: 7 }', 'key: "nms_score_threshold" value { f: 0.25 }',
                 'key: "use_regular_nms" value { b: true }'):
        assert attr in text
