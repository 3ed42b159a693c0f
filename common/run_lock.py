"""One writer at a time per run folder: an exclusive OS lock on ``RUN/.lock``.

Two commands writing one run folder at once corrupt it (two CSV headers in the
history, an HDF5 file opened twice), and what they leave behind can break every
later command on that run. ``run_lock`` makes the second command fail at once
with one line that names the command holding the folder.

The lock is ``flock(2)``: the kernel drops it when the holder's process ends,
however it ends (SIGKILL, OOM killer, power off of a local machine), so there
is never a stale lock to clean up by hand. ``.lock`` itself only says who holds
the lock, for the error message; its presence means nothing.

Take the lock once per process, at the command level (the code that parses the
command line), around everything the command does to RUN. It is not reentrant:
a second ``run_lock`` on the same folder in the same process opens a new file
descriptor, and flock locks held by different open files conflict even within
one process, so the second call raises ``RunLockedError`` naming its own pid.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import re
import socket
import time
from pathlib import Path
from typing import Iterator

from common.errors import RunLockedError, UserError

LOCK_FILE = ".lock"
"""The lock file's name in RUN; code that asks "is the run folder empty" ignores it."""

# How long a contender waits for the holder's line to appear: the holder writes it just after
# taking the lock, so an empty file is normally a window of microseconds, not a missing holder.
_HOLDER_WAIT_S = 0.5
_HOLDER_LINE = re.compile(r"pid (?P<pid>\d+) command (?P<command>.*?) started (?P<started>\S+) host (?P<host>.*)")
# Lock files replaced under us (see _open_locked); more than a few in a row means something else is wrong.
_MAX_ATTEMPTS = 20


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str) -> Iterator[Path]:
    """Hold RUN's exclusive lock for the duration of the ``with`` block; yield RUN.

    Creates RUN (and its parents) when missing. Raises ``RunLockedError`` when another
    process holds the lock, and ``UserError`` when RUN is a file or cannot be created.
    On exit the lock is released; when RUN then holds nothing but ``.lock``, ``.lock``
    is removed, and RUN too if this call created it (a command that failed before
    writing anything leaves no empty folder behind, and a folder the user had stays).
    """
    run_dir = Path(run_dir)
    fd, created = _open_locked(run_dir)
    try:
        _write_holder(fd, command)
        yield run_dir
    finally:
        _release(run_dir, fd, created)


def _open_locked(run_dir: Path) -> tuple[int, bool]:
    """Create RUN if needed, open and lock RUN/.lock; return (fd, whether RUN was created here)."""
    lock_path = run_dir / LOCK_FILE
    for _ in range(_MAX_ATTEMPTS):
        created = _make_folder(run_dir)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            continue  # a releasing holder removed RUN between our mkdir and open: make it again
        except OSError as e:
            raise UserError(f"{run_dir}: cannot open {LOCK_FILE}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise UserError(f"{run_dir}: cannot lock {LOCK_FILE}: {e.strerror}") from e
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(run_dir, holder) from None
        # A releasing holder unlinks .lock while still holding it (see _release). If we opened the file
        # before that and locked it after, we hold a lock on a file no one else will ever open: a third
        # process would lock a new .lock at the same time. Only a lock on the file at the path counts.
        if _same_file(fd, lock_path):
            return fd, created
        os.close(fd)
    raise UserError(f"{run_dir}: {LOCK_FILE} keeps being replaced by another process; try again")


def _make_folder(run_dir: Path) -> bool:
    """Make RUN if missing; True when this call made it. mkdir decides, so of two racing
    commands only the one that really made the folder will ever remove it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: RUN must be a folder, but a file is there")
    try:
        run_dir.mkdir(parents=True)
        return True
    except FileExistsError:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: RUN must be a folder, but a file is there") from None
        return False
    except OSError as e:  # a parent is a file, no permission, read-only file system, ...
        raise UserError(f"{run_dir}: cannot create the folder: {e.strerror}") from e


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _write_holder(fd: int, command: str) -> None:
    """Say who holds the lock, for a contender's error message; one line, whatever ``command`` is."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = " ".join(str(command).split()) or "?"
    host = " ".join(socket.gethostname().split()) or "?"
    line = f"pid {os.getpid()} command {command} started {started} host {host}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, line.encode("utf-8", "replace"), 0)  # an fd write: nothing buffered to flush


def _read_holder(fd: int) -> str:
    """The holder as "pid N, COMMAND, started T, host H"; waits briefly for a holder that has
    just taken the lock and not written its line yet."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        m = _HOLDER_LINE.match(text.splitlines()[0]) if text.strip() else None
        if m:
            return f"pid {m['pid']}, {m['command']}, started {m['started']}, host {m['host']}"
        if time.monotonic() >= deadline:
            return "holder unknown"
        time.sleep(0.02)


def _release(run_dir: Path, fd: int, created: bool) -> None:
    """Drop the lock, tidying up first while still holding it, so no contender sees a half-tidied RUN."""
    try:
        lock_path = run_dir / LOCK_FILE
        try:
            others = [p for p in os.listdir(run_dir) if p != LOCK_FILE]
        except OSError:  # RUN is gone or unreadable (the command removed it): nothing to tidy
            others = None
        if others == []:
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            if created:
                with contextlib.suppress(OSError):  # not empty after all: a writer that ignores the lock
                    os.rmdir(run_dir)
        else:
            # The line names a command that is over; a person reading .lock must not take it for a holder.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor of the open file releases the flock
