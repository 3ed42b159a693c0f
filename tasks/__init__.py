"""One object per task (classify, detect), and how a run folder or a model file names its task.

    task_named("detect")            the DetectorTask
    task_of(run_dir, model_path)    the task a run's config.json or a .tflite's metadata records
"""
from __future__ import annotations

from pathlib import Path

from common.errors import ConfigError, UserError
from common.run_folder import RunFolder
from export.metadata import read_metadata
from export.runtime import TFLiteModel
from tasks.base import Task
from tasks.classify import ClassifierTask
from tasks.detect import DetectorTask

TASKS: dict[str, Task] = {task.name: task for task in (ClassifierTask(), DetectorTask())}


def task_named(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"TASK={name}: unknown task; expected one of {', '.join(TASKS)}") from None


def task_of(run_dir: Path | None, model_path: Path | None = None) -> Task:
    """The task recorded for RUN (its config.json) or for MODEL= (a .keras beside its run's
    config.json, or a .tflite's task.json metadata)."""
    if model_path is not None and Path(model_path).suffix == ".tflite":
        model_path = Path(model_path)
        if not model_path.exists():
            raise UserError(f"{model_path}: model file not found")
        metadata = read_metadata(TFLiteModel(model_path).model_bytes)
        if metadata is None or metadata.task is None:
            raise UserError(f"{model_path}: the model records no task (no task.json in its metadata); "
                            f"export it again with `make export`")
        return task_named(metadata.task)
    folder = Path(model_path).parent if model_path is not None else run_dir
    if folder is None:
        raise UserError("needs RUN= (a trained run folder) or MODEL= (a .keras or .tflite file)")
    run = RunFolder(Path(folder))
    if model_path is None:
        run.require_model()
    return task_named(run.read_config().get("task", "classify"))
