"""Trials in fresh processes: memory that stays flat over a long search, and a trial that kills its
process (out of memory, a crash in native code) recorded as failed while the search goes on.

``run_in_processes`` starts ``python -m tuning.worker RUN/tuning --max-trials K`` again and again.
Each process reloads the trial store, runs at most K trials and exits:

    0                    the search has no trial left to start
    QUOTA_EXIT (3)       its K trials are done, more remain: the next process takes over
    anything else        it died: the trials it left running are marked FAILED with its exit
                         status and the end of its output, and a new process goes on

A trial that fails inside Python (a NaN loss, a converter error) is recorded by Keras Tuner
itself and does not end the process. ``MAX_CONSECUTIVE_CRASHES`` deaths in a row end the search
(something is wrong with every trial, not one). Each child dies with this process, so a killed
`make tune` never leaves a trial running behind the rerun's back; the rerun continues the search,
the interrupted trial included.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from common.errors import UserError
from common.processes import die_with_parent, tail
from tuning.tuner_compat import fail_interrupted_trials

ROOT = Path(__file__).resolve().parents[1]
QUOTA_EXIT = 3
MAX_CONSECUTIVE_CRASHES = 3


def describe_exit(code: int) -> str:
    """"killed by SIGKILL (out of memory?)" / "exit status 1", for a failed trial's message."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"exit status {code}"


def run_in_processes(tuning_dir: Path, trials_per_process: int, *, data_dir: Path | None = None,
                     verbose: int = 1) -> int:
    """Run the search in RUN/tuning to its end, ``trials_per_process`` trials per process.
    Returns how many processes died (their trials are marked failed)."""
    cmd = [sys.executable, "-m", "tuning.worker", str(Path(tuning_dir).resolve()), "--max-trials",
           str(trials_per_process)]
    if data_dir is not None:
        cmd += ["--data-dir", str(Path(data_dir).resolve())]
    # The project's packages, whatever the working directory (a benchmark or a test may run elsewhere).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if not verbose:
        cmd += ["--quiet"]
    log = Path(tuning_dir) / "trial_process.log"
    crashes = consecutive = 0
    while True:
        with open(log, "w") as out:
            # The trial's output goes to the terminal as before; stderr is also kept for a death's message.
            proc = subprocess.Popen(cmd, stdout=None, stderr=subprocess.PIPE, preexec_fn=die_with_parent, text=True,
                                    env=env)
            for line in proc.stderr:
                sys.stderr.write(line)
                out.write(line)
            code = proc.wait()
        if code == 0:
            return crashes
        if code == QUOTA_EXIT:
            consecutive = 0
            continue
        crashes += 1
        consecutive += 1
        # Its last line is the reason (the report shows a failed trial's last line, as for a traceback).
        message = f"{tail(log, 15)}\nthe trial process died ({describe_exit(code)})"
        failed = fail_interrupted_trials(Path(tuning_dir) / "project", message)
        if not failed:  # it died outside any trial: opening the data, or in the search itself
            raise UserError(f"{tuning_dir}: the search process failed ({describe_exit(code)}) outside a trial; "
                            f"its output ({log}) ends with:\n{tail(log)}")
        print(f"Trial {', '.join(failed)}: the trial process died ({describe_exit(code)}); "
              f"recorded as failed, the search goes on", flush=True)
        if consecutive >= MAX_CONSECUTIVE_CRASHES:
            raise UserError(f"{tuning_dir}: {consecutive} trial processes died in a row "
                            f"({describe_exit(code)}); the last one's output ({log}) ends with:\n{tail(log)}")
