"""Distributed search with Keras Tuner's own chief/worker mode, through its environment variables.

    KERASTUNER_TUNER_ID     "chief" for the process that holds the oracle, any other name for a worker
    KERASTUNER_ORACLE_IP    the chief binds this address; workers connect to it
    KERASTUNER_ORACLE_PORT  the port

The chief only serves the oracle (trial proposals and the trial store); workers
ask it for trials, train and measure them, and report back, so no trial runs
twice. ``--workers N`` starts a chief and N workers on this host (the chief
binds 127.0.0.1 unless told otherwise); across machines, start the same command
by hand on each machine with the variables set (README, "Tuning on several machines").

Every child process dies with the process that started it, so a killed `make tune`
never leaves a chief writing the trial store behind the rerun's back.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from common.processes import Child, free_ports, supervise, tail

ENV_ID, ENV_IP, ENV_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
STOP_GRACE_SECONDS = 30  # for the processes still running at the end (the chief): SIGTERM, then SIGKILL


def current_role() -> str | None:
    """"chief", "worker", or None when this process is not part of a Keras Tuner cluster."""
    if ENV_IP not in os.environ:
        return None
    return "chief" if "chief" in os.environ.get(ENV_ID, "") else "worker"


def _child_env(tuner_id: str, ip: str, port: int, threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update({ENV_ID: tuner_id, ENV_IP: ip, ENV_PORT: str(port)})
    if threads:
        # Workers on one host share its cores; without this each one starts a thread per core.
        env.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
        env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    return env


def run_local_cluster(folder, workers: int, *, data_dir: Path | None = None, oracle_ip: str = "127.0.0.1",
                      verbose: int = 1, poll_seconds: float = 0.5) -> None:
    """Start a chief and ``workers`` workers on this host; return when every trial has ended.

    Their output goes to RUN/tuning/cluster/<id>.log. Raises RuntimeError naming the log of a
    process that failed.
    """
    port = free_ports(1, oracle_ip)[0]
    connect_ip = "127.0.0.1" if oracle_ip in ("0.0.0.0", "") else oracle_ip
    logs = folder.root / "cluster"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tuning.worker", str(folder.root)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if not verbose:
        cmd += ["--quiet"]
    threads = max(1, (os.cpu_count() or 1) // workers)
    cwd = Path.cwd()
    children = {"chief": Child(cmd, _child_env("chief", oracle_ip, port, 1), logs / "chief.log", cwd)}
    for i in range(1, workers + 1):
        tuner_id = f"worker{i}"
        children[tuner_id] = Child(cmd, _child_env(tuner_id, connect_ip, port, threads), logs / f"{tuner_id}.log", cwd)
    worker_ids = [k for k in children if k != "chief"]

    def done(codes: dict[str, int | None]) -> bool:
        # Each worker was told "stopped" after its last trial ended: the store is complete, and the
        # chief, which serves the oracle until it is stopped, is stopped then.
        return all(codes[w] == 0 for w in worker_ids)

    print(f"Starting a chief on {oracle_ip}:{port} and {workers} worker(s); logs in {logs}")
    failed, code = supervise(children, done=done, poll_seconds=poll_seconds, grace_seconds=STOP_GRACE_SECONDS)
    if failed is not None:
        log = logs / f"{failed}.log"
        raise RuntimeError(f"tuning {failed} exited with status {code}; its log ({log}) ends with:\n{tail(log)}")
