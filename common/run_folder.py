"""The run folder: one directory that train, tune, export, eval and predict share.

Layout (names are stable, users script them)::

    RUN/
      config.json        what was trained, and how (written first)
      labels.txt         one class name per line, index order
      model.keras        the trained Keras model
      metrics.json       test metrics; written last, so its presence means "complete"
      report.md          human-readable report, plots/ beside it
      samples/           a few test images, so `make predict` has something to try
      logs/              TensorBoard
      .resume/           training state while a run is in progress (removed at the end)
      tuning/  export/   written by `make tune` and `make export`

Every file is written to a temporary name in the same directory and renamed,
so a killed process never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from common.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the suffixes, so writers that look at it (Keras wants
    ``.weights.h5``, matplotlib ``.png``) still pick the right format. On error the
    temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{''.join(path.suffixes)}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder. Creating the object touches nothing on disk."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def labels(self) -> Path:
        return self.root / "labels.txt"

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def resume_dir(self) -> Path:
        return self.root / ".resume"

    @property
    def tuning(self) -> Path:
        return self.root / "tuning"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def evaluations(self) -> Path:
        return self.root / "eval"

    def evaluation(self, model: Path, split: str, data: str | None = None) -> Path:
        """Where `make eval` writes ``model``'s score on ``split``: ``eval/<model>-<split>.json`` on
        the run's own data; on other ``data``, ``eval/<model>-<data>-<split>.json``, with the data
        spec's last part and a short hash of the whole spec, so two sets never share a file."""
        stem = Path(model).stem
        if data is None:
            return self.evaluations / f"{stem}-{split}.json"
        kind, _, where = data.partition(":") if ":" in data else ("", "", data)
        tail = re.sub(r"[^A-Za-z0-9._]+", "-", where.replace("\\", "/").rstrip("/").split("/")[-1]).strip("-.")
        digest = hashlib.sha1(data.encode("utf-8")).hexdigest()[:6]
        name = "-".join(part for part in (kind, tail, digest) if part)
        return self.evaluations / f"{stem}-{name}-{split}.json"

    def is_complete(self) -> bool:
        return self.metrics.exists() and self.model.exists()

    def read_labels(self) -> list[str]:
        if not self.labels.exists():
            raise UserError(f"{self.labels}: file not found (is {self.root} a trained run folder? run `make train RUN={self.root}` first)")
        labels = [line.strip() for line in self.labels.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not labels:
            raise UserError(f"{self.labels}: no labels in file")
        return labels

    def write_labels(self, labels) -> None:
        write_text(self.labels, "".join(f"{name}\n" for name in labels))

    def read_config(self) -> dict:
        if not self.config.exists():
            raise UserError(f"{self.config}: file not found (is {self.root} a run folder? run `make train RUN={self.root}` first)")
        return read_json(self.config)

    def require_model(self) -> Path:
        if not self.root.exists():
            raise UserError(f"{self.root}: run folder not found (train one with `make train RUN={self.root}`)")
        if not self.model.exists():
            raise UserError(f"{self.model}: model not found; the run folder has no trained model (finish `make train RUN={self.root}`)")
        return self.model
