"""A child process that holds a run folder's lock (common.run_lock), for the tests that need a
second process: tests/common/test_run_lock.py and tests/test_cli.py."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Takes the lock, says so, then holds it until killed or until the release file appears.
HOLDER = textwrap.dedent("""
    import pathlib, sys, time
    from common.run_lock import run_lock
    run, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    with run_lock(run, "train"):
        print("locked", flush=True)
        while not release.exists():
            time.sleep(0.01)
    print("released", flush=True)
""")


def child_env() -> dict:
    """This environment, with the repository on PYTHONPATH: what a child `python` needs to import the project."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def start_holder(run: Path, release: Path) -> subprocess.Popen:
    """A child that holds run's lock; returns once it has it (its "locked" line), not after a sleep."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), str(release)], cwd=REPO, env=child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if line.strip() != "locked":
        child.kill()
        _, err = child.communicate(timeout=5)
        pytest.fail(f"holder did not take the lock: {line!r} {err}")
    return child
