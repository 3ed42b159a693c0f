"""The Task interface: what differs between classifying and detecting, and nothing else.

In the role of MediaPipe Model Maker's ``ImageClassifier`` / ``ObjectDetector``: a task is
chosen by its object, never by comparing strings. What the two share (the run folder and its
lock, the run lifecycle, the export contract, the tuner) is written once and takes the task.

The task of a run folder is recorded in its config.json (``"task"``), and that of a .tflite
in its metadata (``task.json``, see export.metadata): read, never guessed.
"""
from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from pathlib import Path

from export.exporter import ExportConfig, ExportTarget, export_run
from tuning.tunables import TaskSearch


class Task(ABC):
    """One task: its configs, training, evaluation, prediction and export."""

    name: str        # recorded in config.json, model_card.json and the .tflite's task.json
    title: str       # in messages: "classifier", "detector"
    search: TaskSearch  # what `make tune` needs from this task (tuning.tunables)

    @abstractmethod
    def config_from_args(self, args: argparse.Namespace):
        """The training config of `cli.py train`'s arguments; ConfigError for a flag this task
        cannot honour (never silently dropped)."""

    @abstractmethod
    def train(self, cfg, args: argparse.Namespace) -> dict:
        """Open the data, then train (or resume, or find done) RUN; returns metrics.json's content."""

    @abstractmethod
    def evaluate(self, run_dir: Path, *, model_path: Path | None, data: str | None, data_dir: Path | None,
                 split: str) -> tuple[dict, str]:
        """(what RUN/eval/<model>-<split>.json holds, the one-line summary)."""

    @abstractmethod
    def predict(self, run_dir: Path | None, *, model_path: Path | None, image: Path, top_k: int) -> str:
        """The text `make predict` prints for ``image`` (and any file it writes, named in it)."""

    @abstractmethod
    def export_target(self, run_dir: Path, cfg: ExportConfig, *, data_dir: Path | None, log) -> ExportTarget:
        """The run, opened for the export contract."""

    def export(self, run_dir: Path, cfg: ExportConfig, *, data_dir: Path | None = None, log=print) -> dict:
        """`make export`: RUN/export/model_<mode>.tflite, model_card.json, export_report.md (export.exporter)."""
        return export_run(self.export_target(run_dir, cfg, data_dir=data_dir, log=log), run_dir, cfg, log=log)
