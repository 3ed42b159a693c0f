"""Where training runs, decided in one place: strategy, worker role, data sharding, precision.

    select_strategy("auto" | "default" | "mirrored" | "multiworker")  -> tf.distribute.Strategy
    is_chief(), writes_run_folder(strategy), worker_dir(run_root, chief)  who writes what
    auto_shard_policy(num_files, num_workers), with_auto_shard(ds, p)  how the data is split
    resolve_precision(name), apply_precision(name)                     the Keras dtype policy

Keras 3's own trainer needs a patch to train under ``multiworker``: keras_compat.adapt_model.

Strategies:

* ``default``: one device (the first GPU if there is one, else the CPU).
* ``mirrored``: every GPU of this machine, one replica each (the CPU when there is none).
* ``multiworker``: MultiWorkerMirroredStrategy over the machines in the standard ``TF_CONFIG``
  (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``).
  It must be created before any other TensorFlow work in the process (TF fixes the
  collective-ops setup when its runtime starts), so the CLI creates it first thing.
* ``auto``: ``mirrored`` when more than one GPU is visible, ``default`` otherwise. It never
  picks ``multiworker``: that needs every worker started with its own TF_CONFIG, so it is
  asked for by name (``WORKERS=N`` does that on one machine).

The batch size is always the *global* batch: each of R replicas computes B/R examples per step.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import keras
import tensorflow as tf

from common.errors import ConfigError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # what TrainConfig.precision may hold
MIXED_FLOAT16_MIN_CAPABILITY = (7, 0)  # Volta and later: tensor cores make float16 math fast


# ---------------------------------------------------------------- TF_CONFIG and roles

def read_tf_config(text: str | None = None) -> dict | None:
    """The parsed ``TF_CONFIG`` (``text``, else the environment's); None when it is unset or empty.

    Raises ConfigError naming what is wrong with a malformed one.
    """
    if text is None:
        text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
            for hosts in cluster.values()):
        raise ConfigError('TF_CONFIG needs "cluster": {"worker": ["host:port", ...]} (one "host:port" per worker)')
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ConfigError(f'TF_CONFIG needs "task": {{"type": one of {sorted(cluster)}, "index": i}}, got {task!r}')
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ConfigError(f'TF_CONFIG "task" index {index!r} is not a position in cluster["{task["type"]}"] '
                          f'({len(cluster[task["type"]])} entries)')
    return config


def is_chief(tf_config: dict | None = None) -> bool:
    """True for the process that writes the run folder: the "chief" task, else worker 0.

    Without a TF_CONFIG (``tf_config`` None and none in the environment) there is one process: the chief.
    """
    config = tf_config if tf_config is not None else read_tf_config()
    if config is None:
        return True
    task = config["task"]
    if task["type"] == "chief":
        return True
    return task["type"] == "worker" and task["index"] == 0 and "chief" not in config["cluster"]


def worker_index(tf_config: dict | None = None) -> int:
    """This task's index in TF_CONFIG (0 without one)."""
    config = tf_config if tf_config is not None else read_tf_config()
    return 0 if config is None else int(config["task"]["index"])


def writes_run_folder(strategy) -> bool:
    """False only for a non-chief worker of a multi-worker strategy (a TF_CONFIG alone changes nothing)."""
    return not is_multiworker(strategy) or is_chief()


@contextlib.contextmanager
def worker_dir(run_root: Path, chief: bool) -> Iterator[Path]:
    """The folder this worker writes its training files (backups, logs, caches) to.

    The chief writes the run folder itself. Any other worker gets a fresh temporary folder,
    removed when the block ends, so that N workers never write the same files and nothing
    but the chief's run folder is left behind.
    """
    if chief:
        yield Path(run_root)
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"train-worker{worker_index()}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- strategies

def visible_gpus() -> list:
    """The GPUs TensorFlow can see (tests replace this function)."""
    return tf.config.list_physical_devices("GPU")


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) CUDA compute capability of each visible GPU; (0, 0) where unknown."""
    caps = []
    for gpu in visible_gpus():
        cap = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        caps.append(tuple(cap) if cap else (0, 0))
    return caps


def strategy_name(name: str) -> str:
    """What ``name`` means on this machine: "default", "mirrored" or "multiworker"."""
    if name not in STRATEGIES:
        raise ConfigError(f"STRATEGY={name}: unknown strategy; expected one of {', '.join(STRATEGIES)}")
    if name == "auto":
        return "mirrored" if len(visible_gpus()) > 1 else "default"
    return name


def select_strategy(name: str = "auto"):
    """The tf.distribute strategy for ``name`` (see the module docstring). Call it before any
    other TensorFlow work in the process: MultiWorkerMirroredStrategy cannot start later."""
    resolved = strategy_name(name)
    if resolved == "default":
        return tf.distribute.get_strategy()
    if resolved == "mirrored":
        return tf.distribute.MirroredStrategy()
    if read_tf_config() is None:
        raise ConfigError("STRATEGY=multiworker needs TF_CONFIG describing the cluster, e.g. "
                          '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                          '"index": 0}} (or use WORKERS=N to start N workers on this machine)')
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:
        if "program startup" not in str(e):
            raise
        raise RuntimeError("MultiWorkerMirroredStrategy was created after other TensorFlow work in this process; "
                           "call select_strategy() before opening data or building models") from e


def is_multiworker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def num_workers(strategy) -> int:
    """Machines taking part (1 for the default and mirrored strategies)."""
    if not is_multiworker(strategy):
        return 1
    cluster = read_tf_config()["cluster"]
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


# ---------------------------------------------------------------- data sharding

def auto_shard_policy(num_files: int | None, num_workers: int):
    """How tf.data splits a split's examples between ``num_workers`` workers.

    The rule:

    * FILE when the source reads at least one file per worker (``num_files >= num_workers``):
      each worker opens only its own files, so none reads the whole dataset.
    * DATA otherwise: generated or file-less sources (``num_files`` None), and sources with
      fewer files than workers (FILE would leave a worker with nothing and TF raises). Every
      worker runs the same deterministic pipeline and keeps its own slice of each global
      batch, so the batches are exactly those a single worker sees.

    With one worker there is nothing to split and the answer does not matter (DATA).
    """
    policy = tf.data.experimental.AutoShardPolicy
    if num_workers > 1 and num_files is not None and num_files >= num_workers:
        return policy.FILE
    return policy.DATA


def with_auto_shard(ds, policy):
    """``ds`` with its auto-shard option set (the option only matters under a multi-worker strategy)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return ds.with_options(options)


# ---------------------------------------------------------------- precision

def resolve_precision(name: str) -> str:
    """"auto" -> a concrete Keras dtype policy for this machine; a concrete name is checked and returned.

    auto: ``mixed_float16`` when every visible GPU has compute capability >= 7.0 (tensor cores),
    ``float32`` otherwise (CPU-only machines, older GPUs). ``mixed_bfloat16`` is never chosen
    automatically: ask for it on TPUs or Ampere+ GPUs when float16's loss scaling is unwanted.
    """
    if name == "auto":
        caps = gpu_compute_capabilities()
        return "mixed_float16" if caps and min(caps) >= MIXED_FLOAT16_MIN_CAPABILITY else "float32"
    if name not in PRECISIONS:
        raise ConfigError(f"PRECISION={name}: unknown precision; expected one of {', '.join(PRECISIONS)} or auto")
    return name


@contextlib.contextmanager
def apply_precision(name: str) -> Iterator[str]:
    """Set Keras's global dtype policy for the block (layers built inside take it); yields the
    resolved policy name and restores the previous policy afterwards.

    Under a mixed policy layers compute in float16/bfloat16 and keep float32 variables; build the
    output layer with ``dtype="float32"`` so the softmax and the loss stay in float32.
    """
    policy = resolve_precision(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def is_mixed(precision: str) -> bool:
    return precision.startswith("mixed_")
