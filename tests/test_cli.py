"""The command line as a user meets it: one writer per run folder, one-line errors, the task read
from what a run or a model records."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.common.test_run_lock import _child_env, _start_holder

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, env=_child_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [["train", "--data", "shapes"], ["export"], ["tune"]])
def test_a_second_command_on_a_locked_run_folder_exits_2_naming_the_holder(tmp_path, command):
    run = tmp_path / "run"
    holder = _start_holder(run, tmp_path / "release")
    try:
        if command == ["export"]:  # export reads the run's task first: give it a config
            (run / "config.json").write_text(json.dumps({"task": "classify"}))
            (run / "model.keras").write_bytes(b"")
        result = _cli(command[0], "--run", str(run), *command[1:])
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback, no TensorFlow start-up noise
    assert lines[0].startswith(f"error: {run}: in use by another command") and f"pid {holder.pid}" in lines[0]


def test_no_tensorflow_start_up_noise_on_a_user_error(tmp_path):
    result = _cli("train", "--data", "nonsense:x", "--run", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DATA='nonsense:x': unknown data source; expected one of: shapes, tfds:NAME, folder:PATH, "
        "voc:PATH, coco:FILE.json"]
    assert not (tmp_path / "r").exists()


def test_detector_refuses_cnn_flags_instead_of_dropping_them(tmp_path):
    result = _cli("train", "--task", "detect", "--filters", "8,16", "--run", str(tmp_path / "r"))
    assert result.returncode == 2 and "--filters" in result.stderr and "TASK=detect" in result.stderr
    assert not (tmp_path / "r").exists()
