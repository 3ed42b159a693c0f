"""supervise() with tiny real children: the first failure is reported, every other child stopped."""
from __future__ import annotations

import os
import sys
import time

import pytest

from common.processes import Child, supervise, tail

# Announces itself once its SIGTERM handler is in place, so a test never signals it before that.
SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(60)
"""
STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", os.getpid(), flush=True)
time.sleep(60)
"""


def _after_ready(log, then: str) -> str:
    """Code that waits until ``log`` says "ready", then runs ``then``."""
    return (f"import pathlib, sys, time\n"
            f"while 'ready' not in (pathlib.Path({str(log)!r}).read_text() if pathlib.Path({str(log)!r}).exists() "
            f"else ''): time.sleep(0.01)\n{then}\n")


def _child(code: str, log) -> Child:
    return Child([sys.executable, "-c", code], dict(os.environ), log=log)


def test_a_failure_is_reported_and_the_others_are_stopped(tmp_path):
    sleeper, failer = tmp_path / "sleeper.log", tmp_path / "failer.log"
    start = time.monotonic()
    failed, code = supervise({"sleeper": _child(SLEEPER, sleeper),
                              "failer": _child(_after_ready(sleeper, "print('boom'); sys.exit(3)"), failer)},
                             poll_seconds=0.05, grace_seconds=10)
    assert (failed, code) == ("failer", 3)
    assert time.monotonic() - start < 30  # the sleeper did not sleep its 60 s out
    assert sleeper.read_text().split() == ["ready", "terminated"]  # stopped by SIGTERM
    assert tail(failer) == "boom"


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    stubborn, failer = tmp_path / "stubborn.log", tmp_path / "failer.log"
    start = time.monotonic()
    failed, code = supervise({"stubborn": _child(STUBBORN, stubborn),
                              "failer": _child(_after_ready(stubborn, "sys.exit(1)"), failer)},
                             poll_seconds=0.05, grace_seconds=0.5)
    assert (failed, code) == ("failer", 1)
    assert time.monotonic() - start < 30
    pid = int(stubborn.read_text().split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone (killed and reaped)


def test_done_ends_the_wait_and_stops_the_rest(tmp_path):
    server, client = tmp_path / "server.log", tmp_path / "client.log"
    failed, code = supervise({"server": _child(SLEEPER, server),
                              "client": _child(_after_ready(server, "print('ok')"), client)},
                             done=lambda codes: codes["client"] == 0, poll_seconds=0.05)
    assert (failed, code) == (None, 0)
    assert server.read_text().split() == ["ready", "terminated"]


def test_an_exception_while_waiting_stops_every_child(tmp_path):
    sleeper = tmp_path / "sleeper.log"

    def interrupted(codes):
        if sleeper.exists() and "ready" in sleeper.read_text():
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        supervise({"sleeper": _child(SLEEPER, sleeper)}, done=interrupted, poll_seconds=0.05)
    assert sleeper.read_text().split() == ["ready", "terminated"]


def test_without_a_log_a_child_writes_to_our_output(capfd):
    assert supervise({"one": _child("print('hello from the child')", None)}, poll_seconds=0.05) == (None, 0)
    assert "hello from the child" in capfd.readouterr().out
