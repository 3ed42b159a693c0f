"""Helpers for commands that start copies of themselves (multi-worker training, distributed tuning).

    supervise({name: Child(argv, env, log, cwd)}, done=..., poll_seconds=..., grace_seconds=...)
        start the children, wait until ``done`` or the first failure, stop the rest -> (failed | None, code)
    free_ports(n), die_with_parent(), tail(log)
"""
from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports nothing listens on right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def die_with_parent() -> None:
    """Runs in a child before exec (``preexec_fn``): ask Linux to SIGKILL it when its parent dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: children may outlive a killed parent


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, for an error message."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


@dataclass(frozen=True)
class Child:
    """One process to start: ``argv`` with environment ``env`` in ``cwd`` (None: this process's).

    log: a file its stdout and stderr are appended to; None: they go to this process's own.
    """

    argv: list[str]
    env: dict[str, str]
    log: Path | None = None
    cwd: Path | None = None


def all_succeeded(codes: dict[str, int | None]) -> bool:
    """``supervise``'s default ``done``: every child exited with status 0."""
    return all(code == 0 for code in codes.values())


def supervise(children: dict[str, Child], *, done: Callable[[dict[str, int | None]], bool] = all_succeeded,
              poll_seconds: float = 0.2, grace_seconds: float = 5.0) -> tuple[str | None, int]:
    """Start ``children`` (each dies with this process), poll them every ``poll_seconds`` until
    ``done(codes)`` holds or one exits non-zero, then stop the ones still running.

    codes: name -> exit status, None while running (negative -N: killed by signal N, as
    ``subprocess`` reports it). Stopping is SIGTERM, then SIGKILL for a child still running
    ``grace_seconds`` later (one blocked in a collective op cannot run its handler).

    Returns (None, 0) when ``done``, else (name, status) of the first child, in ``children``'s order,
    that failed. An exception here (Ctrl-C) stops every child before it propagates.
    """
    procs: dict[str, subprocess.Popen] = {}
    with contextlib.ExitStack() as logs:
        try:
            for name, child in children.items():
                out = logs.enter_context(open(child.log, "ab")) if child.log is not None else None
                procs[name] = subprocess.Popen(child.argv, env=child.env, cwd=child.cwd, stdout=out,
                                               stderr=subprocess.STDOUT if out else None,
                                               preexec_fn=die_with_parent)
            while True:
                codes = {name: p.poll() for name, p in procs.items()}
                failed = next((name for name, code in codes.items() if code not in (None, 0)), None)
                if failed is not None:
                    return failed, codes[failed]
                if done(codes):
                    return None, 0
                time.sleep(poll_seconds)
        finally:
            stop(procs.values(), grace_seconds)


def stop(procs: Iterable[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM every process still running; SIGKILL those still running ``grace_seconds`` later."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
