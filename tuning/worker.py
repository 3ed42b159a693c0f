"""One member of a local Keras Tuner cluster (chief or worker, from the environment), as
``tuning.distributed.run_local_cluster`` starts it: ``python -m tuning.worker RUN/tuning``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.run_folder import read_json
from pipeline.sources.specs import open_source
from tuning.search import TuneConfig, TuningFolder, run_trials


def _main(argv: list[str] | None = None) -> int:
    """One cluster member (chief or worker, from the environment) for ``run_local_cluster``."""
    parser = argparse.ArgumentParser(description="one Keras Tuner chief or worker for RUN/tuning")
    parser.add_argument("tuning_dir", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    folder = TuningFolder(args.tuning_dir)
    cfg = TuneConfig.from_dict(read_json(folder.settings))
    source = open_source(cfg.data, cfg.task, data_dir=args.data_dir, seed=cfg.seed)
    run_trials(cfg, source, folder, verbose=0 if args.quiet else 1)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
