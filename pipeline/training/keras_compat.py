"""Keras 3 under MultiWorkerMirroredStrategy: a patch of Keras' private TF trainer, in one place.

    check_keras()                  raises RuntimeError unless this Keras is one the patch is known to fit
    adapt_model(model, strategy)   the patched model (multi-worker only; other strategies: unchanged)
    restore_only(backup_dir)       a callback that resumes a non-chief worker from the chief's backup

Keras' TF trainer does not support MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow/tensorflow#72388). ``adapt_model`` overrides, on one model object, private trainer
methods (``_maybe_symbolic_build`` calling ``_symbolic_build``) and wraps ``train_step`` /
``test_step``. Private internals change without notice, so ``check_keras`` refuses any Keras other
than ``TESTED_KERAS`` or one that lacks them, and its fast test fails on a version bump instead of
a multi-worker subprocess test failing deep inside a worker.

Delete this module (and call ``model.fit`` directly) when Keras' TF trainer supports
MultiWorkerMirroredStrategy: both issues above closed, and tests/pipeline/training/test_multiworker.py
passing without ``adapt_model``.
"""
from __future__ import annotations

import inspect
import types
from pathlib import Path

import keras
import tensorflow as tf

from pipeline.training.distribute import is_multiworker

TESTED_KERAS = "3.15"  # major.minor the patch was written for and is tested with
UPSTREAM_ISSUES = ("keras-team/keras#20585", "tensorflow/tensorflow#72388")
# The trainer internals the patch uses, with the arguments it passes them.
PATCHED = {"_maybe_symbolic_build": ("iterator", "data_batch"), "_symbolic_build": ("data_batch",),
           "train_step": ("data",), "test_step": ("data",)}


def check_keras() -> None:
    """Raise RuntimeError, naming the installed Keras and the upstream issues, unless its version is
    ``TESTED_KERAS`` (major.minor) and ``keras.Model`` still has the methods ``adapt_model`` patches,
    taking the arguments it passes."""
    installed = keras.__version__
    problems = []
    if installed.split(".")[:2] != TESTED_KERAS.split("."):
        problems.append(f"the patch is tested with Keras {TESTED_KERAS}.x")
    for name, arguments in PATCHED.items():
        method = getattr(keras.Model, name, None)
        if method is None:
            problems.append(f"keras.Model has no {name}()")
        elif not set(arguments) <= set(inspect.signature(method).parameters):
            problems.append(f"keras.Model.{name}() no longer takes {', '.join(arguments)}")
    if problems:
        raise RuntimeError(
            f"multi-worker training patches Keras' private TF trainer, and Keras {installed} does not fit: "
            f"{'; '.join(problems)}. Check whether {' and '.join(UPSTREAM_ISSUES)} are fixed (then delete "
            f"pipeline/training/keras_compat.py) or port the patch, and set TESTED_KERAS")


def adapt_model(model: keras.Model, strategy) -> keras.Model:
    """Let ``model.fit`` / ``evaluate`` run under MultiWorkerMirroredStrategy; other strategies: unchanged.

    Keras' TF trainer fails under that strategy in two places, both fixed here on this model only:

    * before the first step it all-reduces a whole (x, y) batch just to learn its shapes, which
      the multi-worker reduce cannot do for a tuple; we build from this worker's own batch
      (the shapes are the same on every worker);
    * it averages each step's metrics with ``reduce(MEAN, axis=0)``, which fails for scalars;
      the steps here return each metric as a float32 [1] vector, so the mean over the workers'
      replicas comes out as the scalar [] Keras expects. Metric results are running averages
      computed per replica, so the logged value is the mean over replicas (exact when every
      replica sees the same number of examples, as with the global batch split evenly).

    Raises RuntimeError (``check_keras``) under a multi-worker strategy when Keras has changed.
    """
    if not is_multiworker(strategy):
        return model
    check_keras()

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def vector_metrics(step):
        return lambda data: {k: tf.expand_dims(v, 0) for k, v in step(data).items()}

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    model.train_step = vector_metrics(model.train_step)
    model.test_step = vector_metrics(model.test_step)
    return model


def restore_only(backup_dir: Path) -> keras.callbacks.Callback:
    """A callback that restores the chief's BackupAndRestore state at the start of training and
    never writes: what a non-chief worker needs to resume in step with the chief."""

    class RestoreFromChief(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._backup = keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False)

        def set_model(self, model):
            super().set_model(model)
            self._backup.set_model(model)

        def on_train_begin(self, logs=None):
            self._backup.on_train_begin(logs)

    return RestoreFromChief()
