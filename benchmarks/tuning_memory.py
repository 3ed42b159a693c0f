"""Memory across tuning trials: does the search grow with every trial?

Runs one search, as `make tune` does, over a space where every trial builds the same architecture
(only the learning rate changes), so a leak is not hidden by models of different sizes. Each trial
records the RSS (psutil) of the process it ran in at the end of its training and measurement.
TensorFlow grows by about 11 MB per trial in one process even with Keras' session cleared
(tensorflow#61791, keras#17458), so trials run in fresh processes, ``trials_per_process`` each
(tuning.trial_processes). Flat means the highest RSS of any trial stays within ``FLAT_MB`` of the
first trial's, over the whole search; the growth per trial inside one process is reported beside it.

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
FLAT_MB = 50.0


@dataclass(frozen=True)
class TuningSize:
    """data: the DATA= spec the trials train on; trials: how many; latency_runs: per trial's int8 model;
    trials_per_process: as `make tune TRIALS_PER_PROCESS=`."""

    data: str = DATA
    trials: int = 50
    latency_runs: int = 20
    trials_per_process: int = 4


FULL = TuningSize()
SMOKE = TuningSize(data=SMOKE_CLASSIFY_DATA, trials=3, latency_runs=3, trials_per_process=2)


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

    Returns {"rss_mb": [...per trial], "peak_over_first_mb": ..., "flat": bool, "growth_mb_per_trial_in_one_process":
    ..., ...}.
    """
    import json

    from pipeline.sources.specs import open_source
    from tuning.search import TuneConfig, TuningFolder, prepare_tuning_folder
    from tuning.space import SearchSpace
    from tuning.trial_processes import run_in_processes

    size = SMOKE if smoke else FULL
    trials = size.trials if trials is None else trials
    out_dir = Path(out_dir)
    learning_rates = tuple(float(x) for x in np.geomspace(1e-4, 1e-2, trials))
    space = SearchSpace(conv_blocks=(2, 2), filters=(16,), kernel_size=(3,), pool_size=(2,), pool_stride=(2,),
                        dense_layers=(1, 1), hidden_units=(64,), dropout=(0.2,), learning_rate=learning_rates)
    cfg = TuneConfig(data=size.data, tuner="grid", trials=trials, steps=4, image_size=32,
                     latency_runs=size.latency_runs, space=space, trials_per_process=size.trials_per_process)
    # Its own run folder: the detection benchmark trains a run in the same output folder.
    run = RunFolder(out_dir / "tuning-run")
    folder = TuningFolder(run.tuning)
    data_dir = resolve_data_dir(data_dir)
    open_source(size.data, "classify", data_dir=data_dir)  # prepared once, before the trial processes
    prepare_tuning_folder(run, folder, cfg, force=True)
    write_json(folder.settings, cfg.to_dict())
    run_in_processes(folder.root, cfg.trials_per_process, data_dir=data_dir, verbose=0)

    rss = _rss_per_trial(folder)
    k = cfg.trials_per_process
    # Inside one process: the slope over each process's trials, averaged (what one long process would leak).
    slopes = [float(np.polyfit(np.arange(len(chunk)), chunk, 1)[0])
              for chunk in (rss[i:i + k] for i in range(0, len(rss), k)) if len(chunk) >= 2]
    peak = max(rss) - rss[0] if rss else 0.0
    result = {
        "trials": len(rss), "trials_per_process": k, "rss_mb": [round(v, 1) for v in rss],
        "peak_over_first_mb": round(peak, 1), "first_to_last_mb": round(rss[-1] - rss[0], 1) if rss else 0.0,
        "growth_mb_per_trial_in_one_process": round(float(np.mean(slopes)), 2) if slopes else 0.0,
        "flat": peak <= FLAT_MB, "flat_threshold_mb": FLAT_MB, "data": size.data, "smoke": smoke,
        "tuner": json.loads(folder.settings.read_text())["tuner"],
    }
    write_json(out_dir / "tuning_memory.json", result)
    write_text(out_dir / "tuning_memory.md", "\n".join([
        "# Memory across tuning trials", "",
        f"{len(rss)} trials, {k} per process, same architecture each time; RSS at the end of each trial (MB):", "",
        "| trial | " + " | ".join(str(i) for i in range(len(rss))) + " |",
        "|---|" + "---|" * len(rss),
        "| RSS MB | " + " | ".join(f"{v:.0f}" for v in rss) + " |", "",
        f"Highest RSS over the first trial's: {peak:+.1f} MB ({'flat' if result['flat'] else 'GROWING'}; "
        f"threshold {FLAT_MB:g} MB). Inside one process RSS grows "
        f"{result['growth_mb_per_trial_in_one_process']:+.2f} MB per trial; a fresh process every {k} trials "
        "gives that memory back.", "",
    ]))
    return result
