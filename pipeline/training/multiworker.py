"""Rehearse multi-worker training on one machine: N local workers on 127.0.0.1 ports.

    launch_local_workers(train_argv, n, run_dir)

starts ``python cli.py train <train_argv> --strategy multiworker`` N times, each with its own
``TF_CONFIG`` (worker 0 is the chief), streams the chief's output, and returns non-zero as soon
as any worker fails (the others are stopped). Training is checkpointed every epoch into
RUN/.resume, so running the same command again after a killed worker resumes from the last
finished epoch. Across machines the same ``cli.py train --strategy multiworker`` runs on every
host with a TF_CONFIG naming all of them (README, "More than one machine").

Every worker dies with the process that started it (Linux), so a killed launcher never leaves
workers holding ports or writing the run folder behind the rerun's back.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common.errors import ConfigError
from common.processes import Child, free_ports, supervise, tail

ROOT = Path(__file__).resolve().parents[2]  # the repository (cli.py)
HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 5  # a worker blocked in a collective op cannot run its SIGTERM handler; then SIGKILL
_OWN_FLAGS = ("--workers", "--strategy")  # set by the launcher, not passed on to the workers


def tf_config(hosts: list[str], index: int) -> str:
    """The TF_CONFIG of worker ``index`` in a cluster of ``hosts`` ("host:port"); worker 0 is the chief."""
    return json.dumps({"cluster": {"worker": list(hosts)}, "task": {"type": "worker", "index": index}})


def worker_argv(train_argv: list[str]) -> list[str]:
    """``train_argv`` without --workers/--strategy (either form), plus ``--strategy multiworker``."""
    out, skip = [], False
    for arg in train_argv:
        if skip:
            skip = False
            continue
        if arg in _OWN_FLAGS:
            skip = True
            continue
        if arg.startswith(tuple(f"{flag}=" for flag in _OWN_FLAGS)):
            continue
        out.append(arg)
    return out + ["--strategy", "multiworker"]


def run_workers(command: list[str], n: int, *, env: dict | None = None, poll_seconds: float = 0.2) -> int:
    """Run ``command`` as workers 0..n-1 of a local cluster; 0 when all succeed, else a failed
    worker's exit status (its output's tail is printed; the other workers are stopped).

    Worker 0's output goes to this process's stdout and stderr; the others' to temporary files,
    removed when every worker succeeded.
    """
    if n < 1:
        raise ConfigError(f"WORKERS={n}: must be at least 1")
    hosts = [f"{HOST}:{port}" for port in free_ports(n)]
    base = dict(os.environ if env is None else env)
    # Workers on one host share its cores; without this each one starts a thread per core.
    threads = str(max(1, (os.cpu_count() or 1) // n))
    logs = Path(tempfile.mkdtemp(prefix="train-workers-"))
    children = {}
    for i in range(n):
        worker_env = {**base, "TF_CONFIG": tf_config(hosts, i), "PYTHONUNBUFFERED": "1"}
        worker_env.setdefault("TF_NUM_INTRAOP_THREADS", threads)
        worker_env.setdefault("TF_NUM_INTEROP_THREADS", "1")
        # The chief's output is the run's output.
        children[f"worker{i}"] = Child(command, worker_env, log=None if i == 0 else logs / f"worker{i}.log", cwd=ROOT)
    failed, code = supervise(children, poll_seconds=poll_seconds, grace_seconds=STOP_GRACE_SECONDS)
    if failed is None:
        shutil.rmtree(logs)
        return 0
    index = list(children).index(failed)
    log = logs / f"{failed}.log"
    where = "above" if index == 0 else f"{log}, which ends with:\n{tail(log)}"
    print(f"Worker {index} of {n} exited with status {code}; the other workers were stopped. "
          f"Its output is {where}", file=sys.stderr)
    return code if code > 0 else 128 - code


def launch_local_workers(train_argv: list[str], n: int, run_dir: Path, *, env: dict | None = None) -> int:
    """Train one model with ``n`` local workers (MultiWorkerMirroredStrategy on 127.0.0.1).

    ``train_argv``: the ``cli.py train`` arguments as the user gave them (what follows ``train``);
    --workers and --strategy are dropped and ``--strategy multiworker`` added. Open the data
    source once before calling this, so the workers do not all prepare it at the same time.
    Returns 0 on success, else the failed worker's exit status.
    """
    command = [sys.executable, str(ROOT / "cli.py"), "train", *worker_argv(list(train_argv))]
    print(f"Training with {n} local workers (worker 0 is the chief and writes {run_dir})", flush=True)
    return run_workers(command, n, env=env)
