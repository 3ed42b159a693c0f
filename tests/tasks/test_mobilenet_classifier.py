"""MODEL=mobilenetv2 end to end: a pretrained start (a weights file the test makes, standing in for
ImageNet, which cannot be downloaded here), the head then the top blocks, int8 export, and the
exported file loaded by MediaPipe's ImageClassifier as an app would."""
import json

import keras
import numpy as np
import pytest

from export.exporter import ExportConfig
from export.runtime import TFLiteClassifier
from models.mobilenet import MobileNetConfig, build_mobilenet_classifier
from pipeline.sources.specs import open_source
from pipeline.training.classifier import TrainConfig, train_classifier
from tasks.classify import ClassifierTask
from tests.conftest import EXPORT_SHAPES


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory, export_data_dir):
    tmp = tmp_path_factory.mktemp("mobilenet")
    keras.utils.set_random_seed(0)
    # A random backbone's batch-norm statistics (mean 0, variance 1) shrink its features to ~1e-10, and
    # a frozen backbone would then give every image the same probabilities: one training-mode call with
    # momentum 0 sets real statistics, as pretrained weights have.
    start = build_mobilenet_classifier(MobileNetConfig(weights="none", bn_momentum=0.0), num_classes=5,
                                       input_size=32)
    start(np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32), training=True)
    weights = tmp / "pretrained.weights.h5"
    start.save_weights(weights)
    cfg = TrainConfig(data=EXPORT_SHAPES, model="mobilenetv2", image_size=32, batch_size=32, steps=24,
                      mobilenet=MobileNetConfig(weights=str(weights), fine_tune_blocks=2))
    source = open_source(EXPORT_SHAPES, "classify", data_dir=export_data_dir, seed=0)
    run = tmp / "run"
    metrics = train_classifier(cfg, source, run, verbose=0)
    return run, metrics, weights


@pytest.mark.heavy
def test_mobilenet_trains_in_two_phases_from_a_weights_file(mobilenet_run):
    run, metrics, weights = mobilenet_run
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "mobilenetv2" and config["mobilenet"]["weights"] == str(weights)
    # phase 1 (head) then phase 2 (top blocks): the epochs of both are in one history
    assert metrics["epochs_run"] == metrics["budget"]["epochs"] >= 2
    assert len(metrics["history"]["loss"]) == metrics["epochs_run"]
    assert not (run / ".resume").exists()
    model = keras.models.load_model(run / "model.keras")
    assert model.name == "mobilenetv2_classifier"
    assert "MobileNetV2" in (run / "report.md").read_text()


@pytest.mark.heavy
def test_mobilenet_int8_export_loads_in_mediapipe(mobilenet_run, export_data_dir):
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    run, _, _ = mobilenet_run
    cfg = ExportConfig(modes=("int8",), calib=16, min_agreement=0.5, latency_runs=2)
    card = ClassifierTask().export(run, cfg, data_dir=export_data_dir, log=lambda *_: None)
    path = run / "export" / card["models"]["int8"]["file"]
    ours = TFLiteClassifier(path)
    source = open_source(EXPORT_SHAPES, "classify", data_dir=export_data_dir, seed=0)
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for ex in source.examples("test").take(6):
            image = np.ascontiguousarray(ex["image"].numpy())  # 32 px: the model's size, no resize
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            top = result.classifications[0].categories[0]
            probs = ours.predict_image(image)
            assert top.category_name == ours.label_names[int(probs.argmax())]
            assert top.score == pytest.approx(float(probs.max()), abs=0.02)
