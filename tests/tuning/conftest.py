"""Tiny data and settings shared by the tuning tests: 32px shapes, 1 epoch, a handful of trials."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_DATA = "shapes:train=120,validation=40,test=40,size=32"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A tfds data dir with the tiny shapes variant prepared once (subprocesses reuse it)."""
    from pipeline.sources.specs import open_source

    data_dir = tmp_path_factory.mktemp("tune_tfds")
    open_source(TINY_DATA, "classify", data_dir=data_dir)
    return data_dir


@pytest.fixture(scope="session")
def tiny_args(tiny_data_dir):
    """tiny_args(run, *extra) -> `cli.py tune` arguments for a search that takes seconds per trial."""

    def args(run: Path, *extra: str) -> list[str]:
        return ["--run", str(run), "--data", TINY_DATA, "--data-dir", str(tiny_data_dir), "--image-size", "32",
                "--epochs", "1", "--final-epochs", "1", "--latency-runs", "10", "--quiet", *extra]

    return args


@pytest.fixture(scope="session")
def tune_subprocess():
    """(command, env) for running `python cli.py tune ARGS` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return (lambda args: [sys.executable, str(ROOT / "cli.py"), "tune", *args]), env
