"""One process of a search: ``python -m tuning.worker RUN/tuning [--max-trials K]``.

Started by ``tuning.trial_processes`` (a fresh process every K trials; exit status 3 when its K
trials are done and more remain, 0 when the search has no trial left) and by
``tuning.distributed.run_local_cluster`` (a chief or worker of a Keras Tuner cluster, from the
environment; no quota).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.run_folder import read_json
from pipeline.sources.specs import open_source
from tuning.search import TuneConfig, TuningFolder, run_trials
from tuning.trial_processes import QUOTA_EXIT


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one process of the search in RUN/tuning")
    parser.add_argument("tuning_dir", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--max-trials", type=int, default=None, help="run at most this many trials, then exit 3")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    folder = TuningFolder(args.tuning_dir)
    cfg = TuneConfig.from_dict(read_json(folder.settings))
    source = open_source(cfg.data, cfg.task, data_dir=args.data_dir, seed=cfg.seed)
    finished = run_trials(cfg, source, folder, verbose=0 if args.quiet else 1, max_trials_here=args.max_trials)
    return 0 if finished else QUOTA_EXIT


if __name__ == "__main__":
    sys.exit(_main())
