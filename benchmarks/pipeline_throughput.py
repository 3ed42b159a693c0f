"""Is the input pipeline ever what the model waits on?

Three numbers from one run, on the same data:

* pipeline:    images/s the tf.data training pipeline delivers on its own
                (decode, resize, cache, shuffle, batch, augment, prefetch);
* consumption: images/s the model trains at when its input costs nothing
                (one batch held in memory, repeated);
* naive:       images/s of a plain Python generator doing the same work per
                image (PNG decode, resize, the same zoom crop, flip, brightness and
                contrast) one image at a time, with no caching.

Targets: pipeline >= 3x consumption and >= 5x naive.

Data comes from ``data_dir`` (default: the project's, see ``benchmarks.data_paths``);
``smoke=True`` runs every step for a fraction of a second on 32 px images, to check the
benchmark works, not to measure anything.
"""
from __future__ import annotations

import io
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data_paths import resolve_data_dir
from common.run_folder import write_json, write_text

BATCH = 64


@dataclass(frozen=True)
class PipelineSize:
    """How long and how large each step of the benchmark is.

    image_size: the model's input side (None: ``TrainConfig``'s, as `make train` uses).
    seconds: timed seconds of each of the three feeds.
    consumption_steps: training steps per timed ``fit`` call of the consumption step.
    """

    image_size: int | None = None
    seconds: float = 8.0
    consumption_steps: int = 12


FULL = PipelineSize()
SMOKE = PipelineSize(image_size=32, seconds=0.3, consumption_steps=2)


def _images_per_second(iterable, warmup_batches: int = 3, min_seconds: float = 8.0, max_batches: int = 10_000) -> float:
    it = iter(iterable)
    for _ in range(warmup_batches):
        next(it)
    n, start = 0, time.perf_counter()
    for i, batch in enumerate(it):
        n += len(batch[1])
        if time.perf_counter() - start >= min_seconds or i >= max_batches:
            break
    return n / (time.perf_counter() - start)


def _naive_feed(encoded: list[bytes], labels: np.ndarray, size: int, rng: np.random.Generator):
    """One image at a time in Python: what a hand-written generator typically does."""
    from PIL import Image

    batch = min(BATCH, len(encoded))  # a split smaller than one batch would otherwise yield nothing, forever
    while True:
        order = rng.permutation(len(encoded))
        for start in range(0, len(order) - batch + 1, batch):
            xs, ys = [], []
            for i in order[start:start + batch]:
                img = Image.open(io.BytesIO(encoded[i])).convert("RGB").resize((size, size), Image.BILINEAR)
                # the same augmentation as pipeline/augment.py: zoom-in crop, flip, brightness, contrast
                side = size / rng.uniform(1.0, 1.15)
                top, left = rng.uniform(0, size - side, 2)
                img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
                x = np.asarray(img, dtype=np.float32)
                if rng.uniform() < 0.5:
                    x = x[:, ::-1]
                x = np.clip((x - x.mean()) * rng.uniform(0.8, 1.2) + x.mean() + rng.uniform(-25, 25), 0, 255)
                xs.append(x)
                ys.append(labels[i])
            yield np.stack(xs), np.array(ys, np.int32)


def _stored_shapes_builder(data: str, data_dir: Path):
    """The tfds builder of a ``shapes[:key=value,...]`` spec, reading from ``data_dir``: its
    stored PNG bytes are what a hand-written generator would read from disk.

    ``open_source`` has already validated the spec and prepared the data there.
    """
    from pipeline.sources.shapes_builder import make_builder, shapes_config

    _, _, options = data.partition(":")
    opts = dict(item.split("=", 1) for item in options.split(",") if item)
    names = {"seed": "seed", "size": "image_size", "train": "train", "validation": "validation", "test": "test"}
    config = shapes_config("classify", **{names[k]: int(v) for k, v in opts.items()})
    return make_builder(config, data_dir=str(data_dir))


def run_pipeline_benchmark(data: str, out_dir: Path, *, data_dir: Path | None = None, seconds: float | None = None,
                           smoke: bool = False) -> dict:
    """Measure the three feeds on ``data``; write pipeline.json and pipeline.md into ``out_dir``.

    ``data_dir``: where tfds data is prepared (None: the project's default). ``seconds``: timed
    seconds per feed (None: the size's). ``smoke``: tiny sizes (see ``SMOKE``).
    """
    import keras
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from models.cnn import build_cnn
    from pipeline.dataset import PipelineConfig, classification_dataset
    from pipeline.sources.specs import open_source
    from pipeline.training.classifier import TrainConfig

    size = SMOKE if smoke else FULL
    seconds = size.seconds if seconds is None else seconds
    data_dir = resolve_data_dir(data_dir)
    source = open_source(data, "classify", data_dir=data_dir)
    defaults = TrainConfig()
    cfg = PipelineConfig(image_size=size.image_size or PipelineConfig().image_size, batch_size=BATCH)
    train = classification_dataset(source, "train", cfg, training=True, seed=0)

    print("1/3 input pipeline alone ...")
    cold_start = time.perf_counter()
    cold_n = sum(int(y.shape[0]) for _, y in train)  # first epoch: decode and fill the cache
    cold = cold_n / (time.perf_counter() - cold_start)
    pipeline = _images_per_second(train.repeat(), min_seconds=seconds)

    print("2/3 model consumption (input in memory) ...")
    keras.utils.set_random_seed(0)
    model = build_cnn(defaults.cnn, source.num_classes, cfg.image_size)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = next(iter(train))
    steps = size.consumption_steps
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(in_memory, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # trace and warm up
    start = time.perf_counter()
    epochs = 0
    while time.perf_counter() - start < seconds:
        model.fit(in_memory, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        epochs += 1
    consumption = epochs * steps * BATCH / (time.perf_counter() - start)

    print("3/3 naive Python generator ...")
    if data.split(":")[0] == "shapes":
        builder = _stored_shapes_builder(data, data_dir)
        raw = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
        pairs = [(ex["image"], int(ex["label"])) for ex in tfds.as_numpy(raw)]
    else:  # encode the decoded examples once, outside the timing
        from PIL import Image

        def encode(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "PNG")
            return buf.getvalue()

        pairs = [(encode(ex["image"]), int(ex["label"])) for ex in tfds.as_numpy(source.examples("train").take(2000))]
    encoded, labels = [p for p, _ in pairs], np.array([y for _, y in pairs])
    naive = _images_per_second(_naive_feed(encoded, labels, cfg.image_size, np.random.default_rng(0)),
                               warmup_batches=1, min_seconds=seconds)

    result = {
        "data": data,
        "data_dir": str(data_dir),
        "smoke": smoke,
        "image_size": cfg.image_size,
        "batch_size": BATCH,
        "model_parameters": int(model.count_params()),
        "machine": f"{platform.processor() or platform.machine()}, {_cpu_count()} CPU cores, no GPU"
        if not tf.config.list_physical_devices("GPU") else f"{len(tf.config.list_physical_devices('GPU'))} GPU(s)",
        "images_per_second": {
            "pipeline_first_epoch": round(cold, 1),
            "pipeline": round(pipeline, 1),
            "model_consumption": round(consumption, 1),
            "naive_generator": round(naive, 1),
        },
        "ratios": {
            "pipeline_over_consumption": round(pipeline / consumption, 2),
            "pipeline_over_naive": round(pipeline / naive, 2),
        },
        "targets": {"pipeline_over_consumption": 3.0, "pipeline_over_naive": 5.0},
    }
    result["targets_met"] = {k: result["ratios"][k] >= v for k, v in result["targets"].items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "pipeline.json", result)
    ips, r = result["images_per_second"], result["ratios"]
    table = "\n".join([
        f"# Input pipeline benchmark ({data}, {cfg.image_size}px, batch {BATCH})",
        "",
        f"Machine: {result['machine']}.",
        "",
        "| feed | images/s |",
        "|---|---|",
        f"| tf.data pipeline, first epoch (decode + fill cache) | {ips['pipeline_first_epoch']:.0f} |",
        f"| tf.data pipeline, steady state | {ips['pipeline']:.0f} |",
        f"| model training consumption (input free) | {ips['model_consumption']:.0f} |",
        f"| naive Python generator | {ips['naive_generator']:.0f} |",
        "",
        "| ratio | measured | target | met |",
        "|---|---|---|---|",
        f"| pipeline / consumption | {r['pipeline_over_consumption']:.1f}x | >= 3x | "
        f"{'yes' if result['targets_met']['pipeline_over_consumption'] else 'NO'} |",
        f"| pipeline / naive | {r['pipeline_over_naive']:.1f}x | >= 5x | "
        f"{'yes' if result['targets_met']['pipeline_over_naive'] else 'NO'} |",
        "",
    ])
    write_text(out_dir / "pipeline.md", table)
    print(table)
    return result


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
