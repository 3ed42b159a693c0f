"""run_lock against real concurrent processes: one holder, a clear error for the next, no stale lock."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import RunLockedError, UserError
from common.run_lock import LOCK_FILE, run_lock
from tests.common.lock_holder import HOLDER, REPO, child_env, start_holder


@pytest.fixture
def holder_of(tmp_path):
    """Start holders; kill whatever is left at the end, so a failing test leaves no process behind."""
    children = []

    def start(run: Path) -> subprocess.Popen:
        child = start_holder(run, tmp_path / f"release-{len(children)}")
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=5)


def test_second_taker_gets_one_line_naming_folder_and_holder(tmp_path, holder_of):
    run = tmp_path / "runs" / "x"
    child = holder_of(run)
    assert f"pid {child.pid} command train started " in (run / LOCK_FILE).read_text()

    with pytest.raises(RunLockedError) as info:  # this process
        with run_lock(run, "train"):
            pytest.fail("took a lock another process holds")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{run}: in use by another command (pid {child.pid}, train, started ")
    assert message.endswith("); wait for it to finish, or use another RUN=")
    assert isinstance(info.value, UserError)
    assert info.value.run_dir == str(run)
    assert info.value.holder.startswith(f"pid {child.pid}, train, started ")

    # Another process, the way a second `make train` meets it: the error, and the holder untouched.
    other = subprocess.run([sys.executable, "-c", HOLDER, str(run), str(tmp_path / "never")], cwd=REPO,
                           env=child_env(), capture_output=True, text=True, timeout=30)
    assert other.returncode != 0 and "locked" not in other.stdout
    assert f"RunLockedError: {run}: in use by another command (pid {child.pid}, train" in other.stderr
    assert child.poll() is None


def test_lock_of_killed_holder_is_free_at_once(tmp_path, holder_of):
    run = tmp_path / "x"
    child = holder_of(run)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=5)  # dead and reaped: the kernel has dropped its lock
    assert child.returncode == -signal.SIGKILL
    (run / "model.keras").write_text("left by the killed command")

    with run_lock(run, "train") as held:
        assert held == run
        assert f"pid {os.getpid()} command train started " in (run / LOCK_FILE).read_text()
    assert (run / "model.keras").exists()
    assert (run / LOCK_FILE).read_text() == ""  # no stale holder line once released


def test_lock_is_released_on_exit_and_on_error(tmp_path):
    run = tmp_path / "x"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(ZeroDivisionError):
        with run_lock(run, "train"):
            1 / 0
    with run_lock(run, "export"):
        pass
    with run_lock(run, "eval"):
        # Not reentrant: a second take in the same process conflicts with the first, naming this pid.
        with pytest.raises(RunLockedError, match=rf"\(pid {os.getpid()}, eval, started "):
            with run_lock(run, "eval"):
                pass


def test_folder_created_and_left_empty_is_removed(tmp_path):
    run = tmp_path / "runs" / "new"
    with pytest.raises(ValueError):
        with run_lock(run, "train"):
            assert run.is_dir() and (run / LOCK_FILE).is_file()
            raise ValueError("bad data: failed before writing anything")
    assert not run.exists()
    assert (tmp_path / "runs").is_dir()  # only RUN itself is removed, not parents made for it


def test_folder_created_and_written_is_kept(tmp_path):
    run = tmp_path / "new"
    with run_lock(run, "train"):
        (run / "config.json").write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "config.json"]


def test_existing_empty_folder_is_kept_as_it_was(tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    with run_lock(run, "train"):
        pass
    assert run.is_dir() and list(run.iterdir()) == []


def test_file_at_run_is_a_user_error(tmp_path):
    run = tmp_path / "x"
    run.write_text("not a folder")
    with pytest.raises(UserError) as info:
        with run_lock(run, "train"):
            pytest.fail("locked a file")
    assert str(info.value) == f"{run}: RUN must be a folder, but a file is there"
    assert not isinstance(info.value, RunLockedError)
    assert run.read_text() == "not a folder"
