"""Waiting on a search run in a child process: for the line a trial writes to its runs.log as it starts."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest


def wait_for_first_line(runs_log: Path, proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    """Return once ``runs_log`` holds one complete line: the tuner writes it as the trial starts
    (tuning.search: run_trial), after the oracle has saved the trial as RUNNING and before it
    trains. Polling a file the trial writes, not a fixed sleep: no race with the trial's speed."""
    deadline = time.monotonic() + timeout
    while not (runs_log.exists() and runs_log.read_text().endswith("\n")):
        if proc.poll() is not None:
            pytest.fail(f"the search ended (status {proc.returncode}) before {runs_log} was written:\n"
                        + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"{runs_log} was not written in {timeout} s")
        time.sleep(0.05)
