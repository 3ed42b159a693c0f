"""The resized pixels a file source keeps between runs: one file per input size, beside the manifest.

    DATA_DIR/prepared/<kind>-<hash>/pixels-<S>px.npz
        pixels uint8 [N, S, S, 3]  (``preprocess_image`` of each file, JPEGs at their ``jpeg_scale``)
        paths  [N], file_sizes int64 [N], mtimes_ns int64 [N]   (which file each row is, as decoded)

The first command that needs a folder's pixels at S px decodes them once and writes the store; every
later command at that size (a rerun of `make train`, `make eval`, `make export`, each tuning process)
reads the file instead of decoding a single image. A row is used only while its file still has the
size and mtime it had when decoded (the manifest's entry); a changed or new file is decoded again alone.

The pixels and the index are one file, written to a temporary name and renamed, so a reader always sees
a whole, consistent store, and concurrent writers (tuning processes opening the same folder) cannot mix
two of them: the last complete write wins. A store that cannot be read is ignored and rewritten. Only
the ``KEEP_SIZES`` most recently written sizes are kept; stores are kept only while they fit the memory
budget of the caller (``file_check.PREPARED_PIXEL_BUDGET``), since they are read whole.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.run_folder import atomic_path

KEEP_SIZES = 3  # stores of other input sizes beyond these (the most recent) are removed


@dataclass(frozen=True)
class Stored:
    """A store as read: ``pixels`` uint8 [N, S, S, 3]; ``rows``: path -> (row, file size, mtime_ns)."""

    pixels: np.ndarray
    rows: dict[str, tuple[int, int, int]]

    def row(self, path: str, size: int, mtime_ns: int) -> int | None:
        """The row holding ``path`` decoded at this size and mtime; None when absent or stale."""
        found = self.rows.get(path)
        return found[0] if found is not None and found[1:] == (size, mtime_ns) else None


def store_path(directory: Path, side: int) -> Path:
    return Path(directory) / f"pixels-{side}px.npz"


def load(directory: Path, side: int) -> Stored | None:
    """The store for ``side`` px in ``directory``; None when there is none or it cannot be read."""
    try:
        with np.load(store_path(directory, side), allow_pickle=False) as data:
            pixels, paths = data["pixels"], data["paths"]
            sizes, mtimes = data["file_sizes"], data["mtimes_ns"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if pixels.dtype != np.uint8 or pixels.shape[1:] != (side, side, 3) or not (
            len(pixels) == len(paths) == len(sizes) == len(mtimes)):
        return None
    rows = {str(p): (i, int(s), int(m)) for i, (p, s, m) in enumerate(zip(paths, sizes, mtimes))}
    return Stored(pixels, rows)


def save(directory: Path, side: int, paths: list[str], file_sizes: list[int], mtimes_ns: list[int],
         pixels: np.ndarray) -> None:
    """Write the store for ``side`` px atomically (temporary name, then rename); drop old sizes."""
    target = store_path(directory, side)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, pixels=np.ascontiguousarray(pixels, np.uint8), paths=np.array(paths, dtype=str),
                     file_sizes=np.array(file_sizes, np.int64), mtimes_ns=np.array(mtimes_ns, np.int64))
    others = sorted((p for p in Path(directory).glob("pixels-*px.npz") if p != target), key=_age)
    for old in others[KEEP_SIZES - 1:]:
        old.unlink(missing_ok=True)


def _age(path: Path) -> float:
    """Seconds since ``path`` was written (a file removed meanwhile by another writer counts as oldest)."""
    try:
        return -path.stat().st_mtime
    except OSError:
        return float("inf")
