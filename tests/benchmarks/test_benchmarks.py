"""Every benchmark runs, at smoke size, from a fresh data dir, and writes what it promises.

The benchmarks are product code (`make bench`) that no other test runs: issue 15 found the
pipeline benchmark reading tfds' ~/tensorflow_datasets instead of the data dir it was
given, which only a run from a fresh clone showed. Here all eight run once (about ten minutes on
2 cores: the detector's conversions, the two-worker cluster, and the quality and tuning-quality
benchmarks' command-line runs cost most) into a temporary output folder, with a temporary
data dir, HOME and working directory, and each one's JSON is checked for its figures; the
numbers themselves measure nothing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from benchmarks.data_paths import SMOKE_CLASSIFY_DATA
from benchmarks.pipeline_throughput import run_pipeline_benchmark
from benchmarks.quality_data import write_digits_folder, write_photo_detection_set
from benchmarks.suite import ORDER, run_benchmarks
from export.verify import MAX_MAP_DROP
from pipeline.sources.specs import open_source

pytestmark = pytest.mark.heavy

# What each benchmark writes into the output folder (besides summary.md).
FILES = {
    "pipeline": ("pipeline.json", "pipeline.md"),
    "export": ("export_bench.json", "export_bench.md", "int8_kernels.json", "int8_kernels.md"),
    "tuning": ("tuning_memory.json", "tuning_memory.md"),
    "detection": ("detection_bench.json", "detection_bench.md"),
    "detector-int8": ("detector_int8_profile.json", "detector_int8_profile.md"),
    "distribute": ("distribute.json", "distribute.md"),
    "quality": ("quality.json", "quality.md"),
    "tuning-quality": ("tuning_quality.json", "tuning_quality.md"),
}
# The heading each benchmark's Markdown page starts with, as summary.md must show it.
HEADINGS = {
    "pipeline": "# Input pipeline benchmark",
    "export": "# Export benchmark",
    "tuning": "# Memory across tuning trials",
    "detection": "# Detection benchmark",
    "detector-int8": "# Where the int8 detector's time goes",
    "distribute": "# Multi-worker training throughput",
    "quality": "# Quality with the default settings",
    "tuning-quality": "# Tuning against the default",
}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _share_of(value, n: int) -> bool:
    """Whether ``value`` is k / n for a whole k in 0..n: a share counted over exactly n examples."""
    k = value * n
    return math.isfinite(k) and abs(k - round(k)) < 1e-6 and 0 <= round(k) <= n


def _fake_home(monkeypatch, home: Path) -> None:
    """HOME, and tfds' default data dir (read from HOME once, when tfds is first imported),
    pointed at ``home``: any fall-back to ~/tensorflow_datasets lands there, where the test
    looks for it, instead of in the real home."""
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(home / "tensorflow_datasets"))


@dataclass(frozen=True)
class SmokeRun:
    """One smoke run of every benchmark: where it wrote, read, lived, and what it returned."""

    out: Path       # the output folder (JSON, Markdown, summary.md)
    data_dir: Path  # the data dir it was given
    home: Path      # HOME while it ran
    work: Path      # the working directory it ran in (where ./data/tfds, the default, would be)
    results: dict


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> SmokeRun:
    """One smoke run of every benchmark, from an empty working directory, with a fake HOME."""
    root = tmp_path_factory.mktemp("bench")
    out, data_dir, home, work = root / "out", root / "tfds", root / "home", root / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        _fake_home(mp, home)
        mp.chdir(work)
        results = run_benchmarks(list(ORDER), out, data_dir=data_dir, smoke=True)
    return SmokeRun(out, data_dir, home, work, results)


def _read(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


@pytest.mark.parametrize("name", ORDER)
def test_each_benchmark_writes_its_files(smoke_run, name):
    assert name in smoke_run.results
    for file in FILES[name]:
        path = smoke_run.out / file
        assert path.is_file() and path.stat().st_size > 0, f"{name}: {file} missing or empty"
        if file.endswith(".json"):
            json.loads(path.read_text())  # parses


def test_pipeline_figures(smoke_run):
    r = _read(smoke_run.out, "pipeline.json")
    assert r["smoke"] is True and Path(r["data_dir"]) == smoke_run.data_dir
    assert set(r["images_per_second"]) == {"pipeline_first_epoch", "pipeline", "model_consumption", "naive_generator"}
    assert all(_positive(v) for v in r["images_per_second"].values()), r["images_per_second"]
    assert all(_positive(v) for v in r["ratios"].values())
    assert set(r["targets_met"]) == set(r["targets"]) == set(r["ratios"])
    assert r["model_parameters"] > 0
    for photos in (r["real_photos"], r["camera_photos"]):  # against Keras' utility, and the decode floor
        assert _positive(photos["decode_floor_images_per_s"]) and _positive(photos["keras"]["steady_reshuffled_images_per_s"])
        assert all(_positive(v) for v in photos["ratios"].values()), photos["ratios"]
        assert set(photos["targets_met"]) == set(photos["targets"]) < set(photos["ratios"])


def test_export_figures(smoke_run):
    r = _read(smoke_run.out, "export_bench.json")
    assert set(r["modes"]) == {"float32", "float16", "dynamic", "int8", "int8-qat"}
    n = r["test_examples"]
    assert n > 0 and _share_of(r["keras_accuracy"], n)
    for mode, row in r["modes"].items():
        assert _positive(row["size_bytes"]) and _positive(row["gzip_bytes"]), mode
        assert set(row["latency_ms"]) == {"1", "2"}
        assert all(_positive(t["median_ms"]) and t["p90_ms"] >= t["median_ms"] for t in row["latency_ms"].values())
        # counted over the test split, image by image
        assert _share_of(row["accuracy"], n) and _share_of(row["agreement"], n), (mode, n, row)
    # float32 is the Keras model's function: the same top-1, so the same accuracy
    assert r["modes"]["float32"]["agreement"] == 1.0
    assert r["modes"]["float32"]["accuracy"] == pytest.approx(r["keras_accuracy"])
    assert r["modes"]["float32"]["size_vs_float32"] == pytest.approx(1.0)
    assert r["modes"]["int8"]["size_bytes"] < r["modes"]["float32"]["size_bytes"]
    assert {"int8_size_ratio", "int8_latency_ratio_1_thread", "int8_accuracy_drop", "qat_at_least_ptq"} <= set(r["targets"])

    kernels = _read(smoke_run.out, "int8_kernels.json")
    assert len(kernels["rows"]) == 4
    assert all(_positive(row["float32_ms"]) and _positive(row["int8_ms"]) for row in kernels["rows"])


def test_tuning_figures(smoke_run):
    r = _read(smoke_run.out, "tuning_memory.json")
    assert r["trials"] == 3 and len(r["rss_mb"]) == 3 and r["trials_per_process"] == 2  # two processes
    assert all(_positive(v) for v in r["rss_mb"])
    assert isinstance(r["flat"], bool) and math.isfinite(r["growth_mb_per_trial_in_one_process"])
    assert r["peak_over_first_mb"] == pytest.approx(max(r["rss_mb"]) - r["rss_mb"][0], abs=0.2)


def test_tuning_quality_figures(smoke_run):
    r = _read(smoke_run.out, "tuning_quality.json")
    digits = r["sets"]["digits"]
    assert list(r["sets"]) == ["digits"] and "cores" in r["cpu"]
    for key in ("default_test_accuracy",):
        assert 0 <= digits[key] <= 1
    assert digits["tuned"]["trials"] == 2
    assert digits["fast"] is None or digits["fast"]["trials"] == 2  # None: no trial met the half-latency limit
    assert digits["fastest_trial_ms"] > 0
    assert digits["gap_points"] == pytest.approx(100 * (digits["tuned"]["test_accuracy"]
                                                        - digits["default_test_accuracy"]), abs=0.01)
    assert digits["latency_limit_ms"] == pytest.approx(digits["tuned"]["default"]["latency_ms"] / 2, abs=1e-4)
    assert digits["tuned"]["default"]["trial_id"] == "0"  # the default is trial 0 of the search


def test_detection_figures(smoke_run):
    r = _read(smoke_run.out, "detection_bench.json")
    assert r["epochs"] >= 1 and r["config"]["ssd"]["anchors"]["input_size"] == 64
    assert set(r["map"]) == {"keras", "float32", "int8"}
    for name, m in r["map"].items():
        # mAP@[.5:.95] averages the APs at IoU .50 ... .95, none above the AP at .50
        assert math.isfinite(m["map"]) and m["map"] <= m["map50"] + 1e-9, (name, m)
    # the float32 .tflite computes the Keras model's function on the same test split; the bound is
    # the export contract's (export.verify.MAX_MAP_DROP), not a figure from one CPU
    assert r["map"]["float32"]["map50"] == pytest.approx(r["map"]["keras"]["map50"], abs=MAX_MAP_DROP), r["map"]
    assert set(r["latency_ms"]) == {"float32", "int8"} and all(_positive(v) for v in r["latency_ms"].values())
    assert all(_positive(v) for v in r["model_bytes"].values())
    assert _positive(r["pipeline"]["images_per_s"]) and _positive(r["consumption"]["images_per_s"])
    assert _positive(r["latency_ratio"]) and _positive(r["pipeline_ratio"])
    assert set(r["met"]) == {"map50", "map", "int8_within_2_points", "latency", "pipeline"}


def test_detector_int8_figures(smoke_run):
    r = _read(smoke_run.out, "detector_int8_profile.json")
    names = {"detector float32", "detector int8", "body float32", "body int8",
             "detector int8, per-tensor weights", "detector int8, int8 input"}
    assert set(r["latency_ms"]) == {"1", "2"}
    for threads, rows in r["latency_ms"].items():
        assert set(rows) == names, threads
        assert all(_positive(v["best_ms"]) and _positive(v["median_ms"]) for v in rows.values())
    assert set(r["model"]["bytes"]) == names and all(_positive(b) for b in r["model"]["bytes"].values())
    assert all(_positive(v) for v in r["ratios"].values())
    # the per-category table accounts for every op of both models and for all of their time
    assert r["categories"]
    for mode in ("float32", "int8"):
        assert sum(c[f"{mode}_ops"] for c in r["categories"]) == r["model"]["ops"][mode], mode
        assert sum(c[f"{mode}_us"] for c in r["categories"]) == pytest.approx(1000 * r["one_op_sum_ms"][mode]), mode
        assert all((c[f"{mode}_us"] > 0) == (c[f"{mode}_ops"] > 0) for c in r["categories"]), mode
    assert [p["candidates"] for p in r["postprocess_us_by_candidates"]][0] == 0
    assert all(_positive(p["us"]) for p in r["postprocess_us_by_candidates"])


def test_distribute_figures(smoke_run):
    r = _read(smoke_run.out, "distribute.json")
    assert [(c["workers"], c["precision"]) for c in r["results"]][:2] == [(1, "float32"), (2, "float32")]
    for case in r["results"]:
        assert _positive(case["images_per_second"]) and _positive(case["speedup"]), case
    assert r["results"][0]["speedup"] == pytest.approx(1.0)


def test_quality_figures(smoke_run):
    """Both tasks went through the command line at smoke size (one epoch), and every figure is
    counted over the split it names."""
    r = _read(smoke_run.out, "quality.json")
    assert r["smoke"] is True and r["train_flags"] == ["--epochs", "1"]
    d, p = r["digits"], r["photos"]
    assert sum(d["split_sizes"].values()) == 200 and sum(p["split_sizes"].values()) == 40
    n = d["test_examples"]
    # the SVM is scored on the very test split the CNN was
    assert n == d["split_sizes"]["test"] == d["svm"]["test_examples"] > 0
    for value in (d["keras"]["accuracy"], d["int8"]["accuracy"], d["svm"]["accuracy"]):
        assert _share_of(value, n), (value, n)
    assert d["svm"]["C"] > 0
    for name in ("keras", "int8"):
        m = p[name]
        assert 0 <= m["map"] <= m["map50"] + 1e-9 and m["map50"] <= 1, (name, m)
    held = p["held_out"]  # the same detector on the other seed's train split: 32 of its 40 photos
    assert held["split"] == "train" and held["images"] == 32 and held["data"] != p["data"]
    for name in ("keras", "int8"):
        assert 0 <= held[name]["map"] <= held[name]["map50"] + 1e-9 <= 1 + 1e-9, (name, held)
        assert sum(m["objects"] for m in held[name]["by_size"].values()) == held["objects"] > 0  # each in one bin
    assert "Its Keras AP@.5 by object size" in Path(smoke_run.out, "quality.md").read_text()
    for task in (d, p):
        assert task["epochs_run"] == 1
        assert task["steps"] == math.ceil(task["split_sizes"]["train"] / task["batch_size"])
        assert _positive(task["train_seconds"]) and task["wall_seconds"] > task["train_seconds"]
        assert Path(task["run"], "export", "model_int8.tflite").is_file()
    assert {"commit", "digits", "photos"} <= set(r["old_defaults"])


def test_quality_data_is_deterministic_and_idempotent(tmp_path):
    """The same seed writes the same bytes; a complete folder is not written again; the sources
    read both sets as the benchmark describes them."""
    a = write_photo_detection_set(tmp_path / "a", n_images=12, seed=3)
    b = write_photo_detection_set(tmp_path / "b", n_images=12, seed=3)
    files = sorted(q.relative_to(a) for q in a.rglob("*") if q.is_file())
    assert len(files) == 12 * 2 + 3 + 1  # images, annotations, three split files, the marker
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    stamp = (a / "JPEGImages" / "00000.jpg").stat().st_mtime_ns
    write_photo_detection_set(a, n_images=12, seed=3)
    assert (a / "JPEGImages" / "00000.jpg").stat().st_mtime_ns == stamp
    photos = open_source(f"voc:{a}", "detect")
    assert photos.split_sizes == {"train": 10, "validation": 1, "test": 1}
    assert set(photos.label_names) <= {"cat", "coin", "cup", "face"}

    digits = open_source(f"folder:{write_digits_folder(tmp_path / 'digits', limit=50)}", "classify")
    assert list(digits.label_names) == [str(k) for k in range(10)] and sum(digits.split_sizes.values()) == 50
    image = next(digits.examples("train").as_numpy_iterator())["image"]
    assert image.shape == (8, 8, 3) and image.dtype.name == "uint8"
    assert set(image.ravel().tolist()) <= {round(v * 255 / 16) for v in range(17)}  # 0..16 scaled to 0..255


def test_summary_lists_every_benchmark(smoke_run):
    summary = (smoke_run.out / "summary.md").read_text()
    for name in ORDER:
        assert f"| {name} |" in summary, f"summary.md has no wall-time row for {name}"
        assert HEADINGS[name] in summary, f"summary.md lacks {name}'s page"
    assert "Smoke size" in summary


def test_data_goes_to_the_given_data_dir_only(smoke_run):
    """Everything is prepared in the data dir given: nothing in ~/tensorflow_datasets, nor in
    the project's default ./data/tfds."""
    assert not (smoke_run.home / "tensorflow_datasets").exists()
    assert not (smoke_run.work / "data").exists()
    prepared = {p.name for p in (smoke_run.data_dir / "shapes").iterdir()}
    assert any(n.startswith("classify-32px") for n in prepared), prepared  # pipeline, export, tuning
    assert any(n.startswith("detect-64px") for n in prepared), prepared  # detection
    assert (smoke_run.data_dir / "quality" / "digits-200").is_dir()  # quality


@pytest.mark.parametrize("via", ["cwd", "TFDS_DATA_DIR"])
def test_without_data_dir_the_project_default_is_used(tmp_path, monkeypatch, via):
    """No data_dir: the project's default, ./data/tfds (here, under a temporary working directory)
    or $TFDS_DATA_DIR, as `make train` uses; never tfds' ~/tensorflow_datasets. The pipeline
    benchmark is the one that fell back to it (issue 15)."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    _fake_home(monkeypatch, home)
    monkeypatch.chdir(work)
    expected = work / "data" / "tfds"
    if via == "TFDS_DATA_DIR":
        expected = tmp_path / "env-tfds"
        monkeypatch.setenv("TFDS_DATA_DIR", str(expected))
    result = run_pipeline_benchmark(SMOKE_CLASSIFY_DATA, tmp_path / "out", smoke=True)
    assert Path(result["data_dir"]) == expected
    assert (expected / "shapes").is_dir()
    assert not (home / "tensorflow_datasets").exists()
