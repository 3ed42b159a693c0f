"""Why int8 is (or is not) faster than float32 on this CPU: latency by layer type and width.

Whole-model latency hides where the time goes, so this times small models made
of one kind of layer (3x3 convolutions, or one large fully connected layer) at
two widths, converted to float32 and to full int8, in the same LiteRT/XNNPACK
interpreter. It also reads the CPU's SIMD flags: int8 kernels on x86 gain most
from VNNI (AVX-512 VNNI or AVX-VNNI) dot-product instructions, as ARM phones do
from SDOT; with AVX2 alone, int8 multiply-accumulate has no throughput edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.run_folder import write_json, write_text

_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimddp")


@dataclass(frozen=True)
class ProbeSize:
    """input_size: side of the probe models' input; runs: timed invocations per median;
    repeats: medians per model (the best is kept); calibration: int8 calibration images."""

    input_size: int = 64
    runs: int = 100
    repeats: int = 3
    calibration: int = 20


FULL = ProbeSize()
SMOKE = ProbeSize(input_size=32, runs=5, repeats=1, calibration=2)


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    words = set(text.split())
    return [f for f in _FLAGS if f in words]


def _model(kind: str, width: int, size: int = 64):
    import keras

    x = inputs = keras.Input((size, size, 3))
    if kind == "conv":
        for w in (width, width * 2, width * 4):
            x = keras.layers.Conv2D(w, 3, padding="same", activation="relu")(x)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    else:
        x = keras.layers.Conv2D(4, 3, strides=4, padding="same")(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(width * 8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


def run_int8_kernel_probe(out_dir: Path, runs: int | None = None, repeats: int | None = None, *,
                          smoke: bool = False) -> dict:
    """Time the probe models; write int8_kernels.json and .md into ``out_dir``. ``runs`` and
    ``repeats`` default to the size's; ``smoke``: tiny sizes (see ``SMOKE``)."""
    from export.convert import convert_keras
    from export.runtime import measure_latency

    size = SMOKE if smoke else FULL
    runs = size.runs if runs is None else runs
    repeats = size.repeats if repeats is None else repeats
    side = size.input_size
    rng = np.random.default_rng(0)
    rows = []
    for kind, width in (("conv", 16), ("conv", 64), ("dense", 16), ("dense", 128)):
        model = _model(kind, width, side)
        calibration = [rng.uniform(0, 255, (1, side, side, 3)).astype(np.float32) for _ in range(size.calibration)]
        times = {}
        for mode, blob in (("float32", convert_keras(model, "float32")),
                           ("int8", convert_keras(model, "int8", calibration))):
            # best of a few medians: the least disturbed by other load on the machine
            times[mode] = min(measure_latency(blob, runs=runs)["median_ms"] for _ in range(repeats))
        rows.append({"layers": kind, "width": width, "float32_ms": times["float32"], "int8_ms": times["int8"],
                     "int8_over_float32": times["int8"] / times["float32"]})
    result = {"cpu_flags": cpu_flags(), "input_size": side, "runs": runs, "smoke": smoke, "rows": rows}
    write_json(out_dir / "int8_kernels.json", result)
    lines = [
        f"# int8 vs float32 by layer type (LiteRT XNNPACK, 1 thread, {side}x{side} input)",
        "",
        f"CPU SIMD flags: {', '.join(result['cpu_flags']) or 'unknown'}.",
        "",
        "| layers | width | float32 ms | int8 ms | int8 / float32 |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['layers']} | {r['width']} | {r['float32_ms']:.3f} | {r['int8_ms']:.3f} | "
              f"{r['int8_over_float32']:.2f}x |" for r in rows]
    write_text(out_dir / "int8_kernels.md", "\n".join(lines) + "\n")
    return result
