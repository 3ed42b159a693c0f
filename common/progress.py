"""Progress bars with an ETA for the long steps a person waits on (tqdm).

Checking a large image folder, each tuning trial, export verification. On a terminal the bar
redraws in place; in a log (CI, a file) it prints a line at most every 30 s, so logs stay short.
Bars go to stderr, so a command's stdout (the Label / Probability table) stays clean.
"""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_INTERVAL_SECONDS = 30.0  # a non-terminal gets a line at most this often


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = False) -> Iterator[T]:
    """``items``, with a progress bar (count, rate and ETA) while they are consumed."""
    interactive = sys.stderr.isatty()
    yield from tqdm(items, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                    mininterval=0.1 if interactive else LOG_INTERVAL_SECONDS, file=sys.stderr)
