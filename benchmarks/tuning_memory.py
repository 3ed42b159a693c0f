"""Memory across tuning trials: does the search process grow with every trial?

Runs one search in this process over a space where every trial builds the same
architecture (only the learning rate changes), so a leak is not hidden by models
of different sizes. Each trial records its process RSS (psutil) at the end of its
training and measurement; Keras' session is cleared between trials. Flat means the
growth from the second trial on stays under ``FLAT_MB_PER_TRIAL``.

    python -c "from benchmarks.tuning_memory import run_tuning_memory_benchmark as r; r('runs/bench-tuning')"
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.run_folder import write_json, write_text

DATA = "shapes:train=240,validation=60,test=60,size=32"
FLAT_MB_PER_TRIAL = 5.0


def _rss_per_trial(folder) -> list[float]:
    from keras_tuner.src.engine.trial import Trial

    rss = []
    for path in sorted(folder.project.glob("trial_*/trial.json")):
        trial = Trial.load(str(path))
        if trial.metrics.exists("rss_mb"):
            rss.append(float(trial.metrics.get_last_value("rss_mb")))
    return rss


def run_tuning_memory_benchmark(out_dir, trials: int = 8, data_dir: Path | None = None) -> dict:
    """Run ``trials`` trials in this process; write tuning_memory.json and .md into ``out_dir``.

    Returns {"rss_mb": [...per trial], "growth_mb_per_trial": slope from trial 2 on, "flat": bool, ...}.
    """
    from pipeline.sources.specs import open_source
    from tuning.search import TuneConfig, TuningFolder, prepare_tuning_folder, run_trials
    from tuning.space import SearchSpace
    from common.run_folder import RunFolder

    out_dir = Path(out_dir)
    learning_rates = tuple(float(x) for x in np.geomspace(1e-4, 1e-2, trials))
    space = SearchSpace(conv_blocks=(2, 2), filters=(16,), kernel_size=(3,), pool_size=(2,), pool_stride=(2,),
                        dense_layers=(1, 1), hidden_units=(64,), dropout=(0.2,), learning_rate=learning_rates)
    cfg = TuneConfig(data=DATA, tuner="grid", trials=trials, epochs=1, image_size=32, latency_runs=20, space=space)
    run = RunFolder(out_dir / "run")
    folder = TuningFolder(run.tuning)
    source = open_source(DATA, "classify", data_dir=data_dir or out_dir / "tfds")
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
