"""Memory across tuning trials: does the search process grow with every trial?

Runs one search in this process over a space where every trial builds the same
architecture (only the learning rate changes), so a leak is not hidden by models
of different sizes. Each trial records its process RSS (psutil) at the end of its
training and measurement; Keras' session is cleared between trials. Flat means the
growth from the second trial on stays under ``FLAT_MB_PER_TRIAL``.

    python -c "from benchmarks.tuning_memory import run_tuning_memory_benchmark as r; r('runs/bench-tuning')"

Data comes from ``data_dir`` (default: the project's, see ``benchmarks.data_paths``).
``smoke=True`` runs two trials on a few dozen images: enough to check the benchmark
works, too few to say anything about growth.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data_paths import SMOKE_CLASSIFY_DATA, resolve_data_dir
from common.run_folder import RunFolder, write_json, write_text

DATA = "shapes:train=240,validation=60,test=60,size=32"
FLAT_MB_PER_TRIAL = 5.0


@dataclass(frozen=True)
class TuningSize:
    """data: the DATA= spec the trials train on; trials: how many; latency_runs: per trial's int8 model."""

    data: str = DATA
    trials: int = 8
    latency_runs: int = 20


FULL = TuningSize()
SMOKE = TuningSize(data=SMOKE_CLASSIFY_DATA, trials=2, latency_runs=3)


def _rss_per_trial(folder) -> list[float]:
    from keras_tuner.src.engine.trial import Trial

    rss = []
    for path in sorted(folder.project.glob("trial_*/trial.json")):
        trial = Trial.load(str(path))
        if trial.metrics.exists("rss_mb"):
            rss.append(float(trial.metrics.get_last_value("rss_mb")))
    return rss


def run_tuning_memory_benchmark(out_dir, trials: int | None = None, data_dir: Path | None = None, *,
                                smoke: bool = False) -> dict:
    """Run ``trials`` trials (None: the size's) in this process; write tuning_memory.json and .md
    into ``out_dir``. ``data_dir``: where the data is prepared (None: the project's default).

    Returns {"rss_mb": [...per trial], "growth_mb_per_trial": slope from trial 2 on, "flat": bool, ...}.
    """
    from pipeline.sources.specs import open_source
    from tuning.search import TuneConfig, TuningFolder, prepare_tuning_folder, run_trials
    from tuning.space import SearchSpace

    size = SMOKE if smoke else FULL
    trials = size.trials if trials is None else trials
    out_dir = Path(out_dir)
    learning_rates = tuple(float(x) for x in np.geomspace(1e-4, 1e-2, trials))
    space = SearchSpace(conv_blocks=(2, 2), filters=(16,), kernel_size=(3,), pool_size=(2,), pool_stride=(2,),
                        dense_layers=(1, 1), hidden_units=(64,), dropout=(0.2,), learning_rate=learning_rates)
    cfg = TuneConfig(data=size.data, tuner="grid", trials=trials, epochs=1, image_size=32,
                     latency_runs=size.latency_runs, space=space)
    # Its own run folder: the detection benchmark trains a run in the same output folder.
    run = RunFolder(out_dir / "tuning-run")
    folder = TuningFolder(run.tuning)
    source = open_source(size.data, "classify", data_dir=resolve_data_dir(data_dir))
    prepare_tuning_folder(run, folder, cfg, force=True)
    write_json(folder.settings, cfg.to_dict())
    run_trials(cfg, source, folder, verbose=0)

    rss = _rss_per_trial(folder)
    steady = rss[1:]
    slope = float(np.polyfit(np.arange(len(steady)), steady, 1)[0]) if len(steady) >= 2 else 0.0
    result = {
        "trials": len(rss), "rss_mb": [round(v, 1) for v in rss],
        "growth_mb_per_trial": round(slope, 2), "first_to_last_mb": round(rss[-1] - rss[0], 1) if rss else 0.0,
        "flat": abs(slope) < FLAT_MB_PER_TRIAL, "flat_threshold_mb_per_trial": FLAT_MB_PER_TRIAL,
        "data": size.data, "smoke": smoke,
    }
    write_json(out_dir / "tuning_memory.json", result)
    write_text(out_dir / "tuning_memory.md", "\n".join([
        "# Memory across tuning trials", "",
        f"{len(rss)} trials in one process, same architecture each time; RSS at the end of each trial (MB):", "",
        "| trial | " + " | ".join(str(i) for i in range(len(rss))) + " |",
        "|---|" + "---|" * len(rss),
        "| RSS MB | " + " | ".join(f"{v:.0f}" for v in rss) + " |", "",
        f"Growth from trial 1 on: {slope:+.2f} MB per trial ({'flat' if result['flat'] else 'GROWING'}; "
        f"threshold {FLAT_MB_PER_TRIAL} MB per trial).", "",
    ]))
    return result
