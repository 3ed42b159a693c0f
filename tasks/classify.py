"""The classifier task: a CNN (or its config from the tuner) trained on class labels, scored by accuracy."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder
from export.app_score import classifier_accuracy
from export.classifier_export import ClassifierExport
from export.exporter import ExportConfig
from export.runtime import TFLiteClassifier
from pipeline.dataset import classification_dataset
from pipeline.evaluation.classification import classification_metrics, predict_dataset
from pipeline.evaluation.predict import Classifier, format_table, predict_file
from pipeline.preprocess import preprocess_for_model
from pipeline.sources.specs import open_source
from pipeline.training import distribute
from pipeline.training.classifier import TrainConfig, input_side, train_classifier
from pipeline.training.multiworker import launch_local_workers
from tasks.base import Task
from tuning.tunables import CLASSIFIER_SEARCH


class KerasClassifier:
    """The run folder's model.keras, fed through the shared preprocessing."""

    def __init__(self, run_dir: Path):
        run = RunFolder(Path(run_dir))
        model_path = run.require_model()
        self.label_names = run.read_labels()
        self.image_size = int(run.read_config()["image_size"])
        self.model = keras.models.load_model(model_path)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(preprocess_for_model(image, self.image_size), training=False))[0]


def load_classifier(run_dir: Path | None, model_path: Path | None = None) -> Classifier:
    """MODEL=...tflite runs the exported model as a phone would; otherwise RUN's model.keras."""
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.exists():
            raise UserError(f"{model_path}: model file not found")
        if model_path.suffix == ".tflite":
            return TFLiteClassifier(model_path)
        if model_path.suffix == ".keras":
            return KerasClassifier(model_path.parent)
        raise UserError(f"{model_path}: unknown model type (expected .keras or .tflite)")
    if run_dir is None:
        raise UserError("predict needs RUN= (a trained run folder) or MODEL= (a .keras or .tflite file)")
    return KerasClassifier(Path(run_dir))


class ClassifierTask(Task):
    name = "classify"
    title = "classifier"
    search = CLASSIFIER_SEARCH

    def config_from_args(self, args: argparse.Namespace) -> TrainConfig:
        defaults = TrainConfig()
        cnn_changes = {k: v for k, v in {
            "filters": args.filters, "kernel_size": args.kernel_size, "pool_size": args.pool_size,
            "pool_stride": args.pool_stride, "hidden_units": args.hidden_units, "dropout": args.dropout,
        }.items() if v is not None}
        mobilenet_changes = {k: v for k, v in {"alpha": args.alpha, "weights": args.weights}.items() if v is not None}
        model = args.model or defaults.model
        if cnn_changes and model != "cnn":
            raise ConfigError(f"{', '.join(sorted(cnn_changes))}: the CNN's hyperparameters do not apply to MODEL={model}")
        if mobilenet_changes and model != "mobilenetv2":
            raise ConfigError(f"{', '.join(sorted(mobilenet_changes))}: ALPHA= and WEIGHTS= are MobileNetV2's "
                              f"(MODEL=mobilenetv2)")
        try:
            cnn = replace(defaults.cnn, **cnn_changes)
            mobilenet = defaults.mobilenet.replace(**mobilenet_changes)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        changes = {k: v for k, v in {
            "epochs": args.epochs, "steps": args.steps, "time_budget_min": args.time_budget,
            "batch_size": args.batch_size, "image_size": args.image_size, "learning_rate": args.lr,
            "class_weights": args.class_weights, "init": str(args.init) if args.init else None,
        }.items() if v is not None}
        augment = defaults.augment if args.flip is None else replace(defaults.augment, flip=bool(args.flip))
        return replace(defaults, data=args.data, task=self.name, seed=args.seed, model=model, cnn=cnn,
                       mobilenet=mobilenet, augment=augment, precision=distribute.resolve_precision(args.precision),
                       **changes)

    def train(self, cfg: TrainConfig, args: argparse.Namespace) -> dict:
        # First TensorFlow work of the process: MultiWorkerMirroredStrategy cannot start after any other.
        strategy = None if args.workers > 1 else distribute.select_strategy(args.strategy)
        # input_side: a folder's files are decoded once, straight to the input size the recipe picks
        source = open_source(args.data, self.name, data_dir=args.data_dir, seed=args.seed, skip_bad=args.skip_bad,
                             image_size=input_side(cfg))
        if args.workers > 1:  # the data is prepared (above) once, before the workers start
            code = launch_local_workers(args.argv, args.workers, args.run)
            if code:
                raise SystemExit(code)
            return {}
        return train_classifier(cfg, source, args.run, force=args.force, strategy=strategy)

    def evaluate(self, run_dir: Path, *, model_path: Path | None, data: str | None, data_dir: Path | None,
                 split: str) -> tuple[dict, str]:
        run = RunFolder(Path(run_dir))
        run.require_model()
        cfg = TrainConfig.from_dict(run.read_config())
        data = data or cfg.data
        source = open_source(data, self.name, data_dir=data_dir, seed=cfg.seed)
        labels = run.read_labels()
        if list(source.label_names) != labels:
            raise UserError(f"DATA={data}: its classes {list(source.label_names)} differ from the run's {labels}")
        ds = classification_dataset(source, split, cfg.pipeline(), training=False)
        if model_path is not None and Path(model_path).suffix == ".tflite":
            predict, what = TFLiteClassifier(model_path).predict_batch, str(model_path)
        else:
            model = keras.models.load_model(run.model)
            predict, what = (lambda x: model.predict_on_batch(x)), str(run.model)
        probs, y = predict_dataset(predict, ds)
        metrics = classification_metrics(probs, y, labels)
        line = (f"{what} on {data} [{split}]: accuracy {metrics['accuracy']:.2%} over {metrics['examples']} images "
                f"(log loss {metrics['loss']:.4f})")
        result = {"model": what, "data": data, "split": split, **metrics}
        if model_path is not None and Path(model_path).suffix == ".tflite":
            # the headline is what an app sees: MediaPipe Tasks on the images at their own size
            app = classifier_accuracy(Path(model_path).read_bytes(), source, split, labels, progress="MediaPipe Tasks")
            result["mediapipe"] = app
            line = (f"{what} on {data} [{split}]: "
                    + (f"accuracy {app['accuracy']:.2%} as an app sees it (MediaPipe Tasks); " if "score" in app
                       else f"{app['error']}; ")
                    + f"LiteRT with our preprocessing {metrics['accuracy']:.2%} over {metrics['examples']} images "
                      f"(log loss {metrics['loss']:.4f})")
        return result, line

    def predict(self, run_dir: Path | None, *, model_path: Path | None, image: Path, top_k: int) -> str:
        rows = predict_file(load_classifier(run_dir, model_path), image, top_k)
        return f"{image}\n{format_table(rows)}"

    def export_target(self, run_dir: Path, cfg: ExportConfig, *, data_dir: Path | None, log) -> ClassifierExport:
        return ClassifierExport(run_dir, cfg, data_dir=data_dir, log=log)
