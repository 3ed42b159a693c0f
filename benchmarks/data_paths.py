"""Where benchmarks read data from: one rule for all of them.

``DATA_DIR=`` / ``--data-dir`` when given, else the project's default
(``pipeline.sources.specs.default_data_dir()``: $TFDS_DATA_DIR or ./data/tfds), the
same folder `make train` and `make demo` prepare the built-in data into. A benchmark
never passes None on to tfds: tfds would fall back to ~/tensorflow_datasets, where a
fresh clone has nothing (issue 15).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.sources.specs import default_data_dir

# Tiny classification data for smoke runs (``smoke=True``): the built-in shapes, 32 px,
# a few dozen images; rendered into the data dir in about a second.
SMOKE_CLASSIFY_DATA = "shapes:train=64,validation=16,test=16,size=32"


def resolve_data_dir(data_dir: Path | str | None) -> Path:
    """``data_dir`` as a Path, or the project's default data dir when it is None or empty."""
    return Path(data_dir) if data_dir else default_data_dir()
