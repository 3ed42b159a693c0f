"""`folder:PATH`: a class-per-subfolder image tree.

Accepted layouts::

    PATH/<class>/<image>                         -> seeded 80/10/10 split per class (splits.py)
    PATH/train/<class>/..., PATH/test/<class>/... (and optionally val/ or validation/)
                                                 -> those splits; validation carved
                                                    from train when absent

Every file is decoded once up front (in parallel) so that a bad image is
reported before anything is written, with its path and the problem.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.errors import DataError
from pipeline.sources.images import IMAGE_EXTENSIONS, decode_file, load_rgb
from pipeline.sources.schema import Skipped, Source
from pipeline.sources.splits import carve_splits

_SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val", "valid"), "test": ("test",)}


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(root, "no class subfolders found (expected PATH/<class_name>/<images>)")
    return dirs


def _list_class(folder: Path, skipped: list[Skipped], skip_bad: bool) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue  # hidden files (.DS_Store) and nested folders are not samples
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(p)
        elif skip_bad:
            skipped.append(Skipped(str(p), "not an image file (extension)"))
        else:
            raise DataError(p, f"not an image file (extension {p.suffix or 'none'}); "
                               f"remove it, or pass SKIP_BAD=1 to skip and count bad files")
    return files


def _validate(files: list[Path], skipped: list[Skipped], skip_bad: bool) -> list[Path]:
    """Decode every file in parallel; raise on the first bad one (or skip and count it)."""

    def check(p: Path):
        try:
            load_rgb(p)
            return None
        except DataError as e:
            return e

    with ThreadPoolExecutor(max_workers=4) as pool:
        errors = list(pool.map(check, files))
    good = []
    for p, err in zip(files, errors):
        if err is None:
            good.append(p)
        elif skip_bad:
            skipped.append(Skipped(err.path, err.problem))
        else:
            raise DataError(err.path, err.problem + "; remove it, or pass SKIP_BAD=1 to skip and count bad files")
    return good


def _scan_tree(root: Path, label_names: list[str] | None, skipped, skip_bad) -> tuple[list[str], list[Path], list[int]]:
    dirs = _class_dirs(root)
    names = [d.name for d in dirs]
    if label_names is not None:
        unknown = [n for n in names if n not in label_names]
        if unknown:
            raise DataError(root, f"class folder(s) {unknown} are not among the training classes {label_names}")
    else:
        label_names = names
    paths, labels = [], []
    for d in dirs:
        files = _validate(_list_class(d, skipped, skip_bad), skipped, skip_bad)
        if not files:
            raise DataError(d, "class folder has no readable images")
        paths += files
        labels += [label_names.index(d.name)] * len(files)
    return label_names, paths, labels


def _dataset(paths: list[Path], labels: list[int]) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in paths], tf.constant(labels, tf.int32))
    )
    return ds.map(lambda p, y: {"image": decode_file(p), "label": y}, num_parallel_calls=tf.data.AUTOTUNE)


def open_folder(spec: str, path: str, *, seed: int = 0, skip_bad: bool = False) -> Source:
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(root, "folder not found")
    if not root.is_dir():
        raise DataError(root, "not a folder (folder: expects a directory of class subfolders)")
    skipped: list[Skipped] = []
    split_dirs = {
        split: next((root / n for n in names if (root / n).is_dir()), None) for split, names in _SPLIT_DIRS.items()
    }
    # (path, label) pairs per split; the splits without a folder are carved from train, per class.
    given: dict[str, list[tuple[Path, int]]] = {}
    label_names, paths, labels = _scan_tree(split_dirs["train"] or root, None, skipped, skip_bad)
    for split in ("validation", "test"):
        if split_dirs["train"] is not None and split_dirs[split] is not None:
            _, p, y = _scan_tree(split_dirs[split], label_names, skipped, skip_bad)
            given[split] = list(zip(p, y))
    pairs = carve_splits(list(zip(paths, labels)), given, seed, strata=labels)
    data = {split: ([p for p, _ in items], [y for _, y in items]) for split, items in pairs.items()}
    if len(label_names) < 2:
        raise DataError(root, f"only one class ({label_names[0]}); a classifier needs at least two class folders")
    for split, (p, _) in data.items():
        if not p:
            raise DataError(root, f"the {split} split is empty; add more images per class")
    return Source(
        name=spec,
        task="classify",
        label_names=tuple(label_names),
        split_sizes={k: len(v[0]) for k, v in data.items()},
        load_split=lambda split: _dataset(*data[split]),
        skipped=tuple(skipped),
        train_label_counts=tuple(int(c) for c in np.bincount(data["train"][1], minlength=len(label_names))),
    )
