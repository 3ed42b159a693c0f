"""`folder:PATH`: a class-per-subfolder image tree.

Accepted layouts::

    PATH/<class>/<image>                         -> seeded 80/10/10 split per class (splits.py)
    PATH/train/<class>/..., PATH/test/<class>/... (and optionally val/ or validation/)
                                                 -> those splits; validation carved
                                                    from train when absent

Every new or changed file is decoded once, up front and in parallel (file_check.py), so that a bad
image is reported before anything is written, with its path and the problem. Given the model's
input size (``image_size``), that same decode fills the cache: the first epoch reads the resized
pixels and never the files. What was learnt about each file is kept in a manifest beside the
prepared data (manifest.py), so a rerun on an unchanged folder decodes nothing to open it; the
resized pixels at each input size are kept there too (pixel_store.py), so a later command at that
size (a rerun, `make eval`, `make export`, each tuning process) decodes nothing to train or evaluate
either. Without the size when opened, the pixels are prepared at the first request for a size
(``Source.resized_arrays``), all splits at once.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.errors import DataError
from pipeline.preprocess import preprocess_image
from pipeline.sources import manifest
from pipeline.sources.file_check import Checked, check_files, jpeg_scales, prepared_pixels, resized_in_order
from pipeline.sources.images import IMAGE_EXTENSIONS, graph_decoder
from pipeline.sources.schema import Skipped, Source
from pipeline.sources.splits import carve_splits

_SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val", "valid"), "test": ("test",)}
SKIP_HINT = "; remove it, or pass SKIP_BAD=1 to skip and count bad files"


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(root, "no class subfolders found (expected PATH/<class_name>/<images>)")
    return dirs


def _list_class(folder: Path, skipped: list[Skipped], skip_bad: bool) -> list[Path]:
    files = []
    with os.scandir(folder) as scan:  # names and types without a stat per file: reruns list 100k files
        entries = sorted(scan, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith(".") or e.is_dir():
            continue  # hidden files (.DS_Store) and nested folders are not samples
        p = folder / e.name
        if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
            files.append(p)
        elif skip_bad:
            skipped.append(Skipped(str(p), "not an image file (extension)"))
        else:
            raise DataError(p, f"not an image file (extension {p.suffix or 'none'}){SKIP_HINT}")
    return files


def _list_tree(root: Path, label_names: list[str] | None, skipped, skip_bad) -> list[tuple[Path, list[Path]]]:
    """(class folder, its image files) per class; classes checked against ``label_names`` when given."""
    dirs = _class_dirs(root)
    if label_names is not None:
        unknown = [d.name for d in dirs if d.name not in label_names]
        if unknown:
            raise DataError(root, f"class folder(s) {unknown} are not among the training classes {label_names}")
    return [(d, _list_class(d, skipped, skip_bad)) for d in dirs]


def _readable(tree, checked: Checked, label_names: list[str], skipped, skip_bad) -> tuple[list[Path], list[int]]:
    """The tree's readable files and labels, in listing order; a bad file raises (or is skipped)."""
    paths, labels = [], []
    for folder, files in tree:
        good = []
        for p in files:
            problem = checked.entries[str(p)].problem
            if problem is None:
                good.append(p)
            elif skip_bad:
                skipped.append(Skipped(str(p), problem))
            else:
                raise DataError(p, problem + SKIP_HINT)
        if not good:
            raise DataError(folder, "class folder has no readable images")
        paths += good
        labels += [label_names.index(folder.name)] * len(good)
    return paths, labels


def _columns(paths: list[Path], checked: Checked):
    entries = [checked.entries[str(p)] for p in paths]
    return ([str(p) for p in paths], np.array([e.decoder for e in entries], np.int32),
            np.array([e.orientation for e in entries], np.int32)), entries


def _decoded(paths: list[Path], labels: list[int], checked: Checked) -> tf.data.Dataset:
    """Schema examples, decoded in-graph and in parallel (``images.decode_in_graph``)."""
    columns, entries = _columns(paths, checked)
    decode = graph_decoder(columns[1], columns[2])
    ds = tf.data.Dataset.from_tensor_slices((*columns, np.asarray(labels, np.int32)))
    return ds.map(lambda p, d, o, y: {"image": decode(p, d, o), "label": y}, num_parallel_calls=tf.data.AUTOTUNE)


def _prepared_rows(paths: list[Path], checked: Checked, size: int) -> np.ndarray:
    """Row of each file in the pixels the check pass kept (memory or spill file), -1 for a file it
    did not keep at ``size``."""
    if checked.size != size:
        return np.full(len(paths), -1, np.int64)
    return np.array([checked.rows.get(str(p), -1) for p in paths], np.int64)


def _from_spill(spill: Path, rows: np.ndarray, size: int) -> tf.data.Dataset:
    """uint8 [size, size, 3] rows ``rows`` (increasing) of a spill file, read in order by tf.data."""
    row_bytes = size * size * 3
    wanted = np.zeros(spill.stat().st_size // row_bytes, bool)
    wanted[rows] = True
    wanted = tf.constant(wanted)
    ds = tf.data.FixedLengthRecordDataset(str(spill), row_bytes, buffer_size=1 << 22).enumerate()
    return ds.filter(lambda i, _: tf.gather(wanted, i)).map(
        lambda _, record: tf.reshape(tf.io.decode_raw(record, tf.uint8), [size, size, 3]))


def _resized(paths: list[Path], labels: list[int], checked: Checked, size: int, rows: np.ndarray) -> tf.data.Dataset:
    """Schema examples already at ``size`` x ``size`` (``preprocess_image``): the pixels the check pass
    kept (``rows``), and the other files (known from the manifest) decoded in-graph and resized."""
    labels = np.asarray(labels, np.int32)
    have = rows >= 0
    with_labels = (lambda images: tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels)).map(
        lambda x, y: {"image": x, "label": y}))
    if have.all() and checked.pixels is not None:
        return tf.data.Dataset.from_tensor_slices({"image": checked.pixels[rows], "label": labels})
    if have.all() and checked.spill is not None and (np.diff(rows) > 0).all():
        return with_labels(_from_spill(checked.spill, rows, size))
    if not have.any() or checked.pixels is None:
        columns, entries = _columns(paths, checked)
        return with_labels(resized_in_order(columns[0], entries, size))
    kept = tf.constant(checked.pixels[rows[have]])
    slot = np.where(have, np.cumsum(have) - 1, -1)
    columns, entries = _columns(paths, checked)
    scales = jpeg_scales(entries, size)
    decode = graph_decoder(columns[1][~have], columns[2][~have], scales[~have])
    ds = tf.data.Dataset.from_tensor_slices((*columns, scales, labels, slot))

    @tf.autograph.experimental.do_not_convert  # plain TF ops: autograph's rewrite only costs tracing time
    def example(path, decoder, orientation, scale, label, k):
        image = tf.cond(k >= 0, lambda: tf.gather(kept, tf.maximum(k, 0)),
                        lambda: preprocess_image(decode(path, decoder, orientation, scale), size))
        return {"image": tf.ensure_shape(image, [size, size, 3]), "label": label}

    return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)


def open_folder(spec: str, path: str, *, seed: int = 0, skip_bad: bool = False, data_dir: Path | None = None,
                image_size: int | Callable[[np.ndarray], int] | None = None) -> Source:
    """``data_dir``: where the manifest is kept (None: no manifest, every file is checked).
    ``image_size``: the model's input side, when known, or the rule that chooses it from the images'
    (height, width) header sides (``file_check.check_files``): the check pass keeps resized pixels for it."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(root, "folder not found")
    if not root.is_dir():
        raise DataError(root, "not a folder (folder: expects a directory of class subfolders)")
    skipped: list[Skipped] = []
    split_dirs = {
        split: next((root / n for n in names if (root / n).is_dir()), None) for split, names in _SPLIT_DIRS.items()
    }
    main = _list_tree(split_dirs["train"] or root, None, skipped, skip_bad)
    label_names = [d.name for d, _ in main]
    trees = {"train": main}
    for split in ("validation", "test"):
        if split_dirs["train"] is not None and split_dirs[split] is not None:
            trees[split] = _list_tree(split_dirs[split], label_names, skipped, skip_bad)
    files = [(p, folder.name) for tree in trees.values() for folder, ps in tree for p in ps]
    store = manifest.prepared_dir(data_dir, "folder", root) if data_dir is not None else None
    known = manifest.load(store) if store is not None else {}
    checked = check_files([p for p, _ in files], [c for _, c in files], known, image_size=image_size, spill_dir=store)
    if store is not None and (checked.checked or checked.entries.keys() != known.keys()):
        manifest.save(store, root.resolve(), checked.entries)
    paths, labels = _readable(main, checked, label_names, skipped, skip_bad)
    given: dict[str, list[tuple[Path, int]]] = {}
    for split in ("validation", "test"):
        if split in trees:
            given[split] = list(zip(*_readable(trees[split], checked, label_names, skipped, skip_bad)))
    pairs = carve_splits(list(zip(paths, labels)), given, seed, strata=labels)
    data = {split: ([p for p, _ in items], [y for _, y in items]) for split, items in pairs.items()}
    if len(label_names) < 2:
        raise DataError(root, f"only one class ({label_names[0]}); a classifier needs at least two class folders")
    for split, (p, _) in data.items():
        if not p:
            raise DataError(root, f"the {split} split is empty; add more images per class")

    readable = [str(p) for paths, _ in data.values() for p in paths]
    prepared_at: dict[int, tuple[np.ndarray, dict[str, int]] | None] = {}

    def prepared(size: int) -> tuple[np.ndarray, dict[str, int]] | None:
        """Every split's pixels at ``size`` (file_check.prepared_pixels: the check pass's, the pixel
        store's, the rest decoded now, all at once); None over the memory budget."""
        if size not in prepared_at:
            prepared_at[size] = prepared_pixels(readable, [checked.entries[p] for p in readable], size, store,
                                                fresh=checked)
        return prepared_at[size]

    if checked.pixels is not None and checked.size is not None and prepared(checked.size) is not None:
        checked.pixels = None  # the check pass's pixels, now in the prepared ones and the store: no second copy

    def load_arrays(split: str, size: int) -> tuple[np.ndarray, np.ndarray] | None:
        got = prepared(size)
        if got is None:
            return None
        pixels, rows = got
        return pixels[[rows[str(p)] for p in data[split][0]]], np.asarray(data[split][1], np.int32)

    def load_resized(split: str, size: int) -> tf.data.Dataset:
        arrays = load_arrays(split, size)
        if arrays is not None:
            return tf.data.Dataset.from_tensor_slices({"image": arrays[0], "label": arrays[1]})
        return _resized(*data[split], checked, size, _prepared_rows(data[split][0], checked, size))

    return Source(
        name=spec,
        task="classify",
        label_names=tuple(label_names),
        split_sizes={k: len(v[0]) for k, v in data.items()},
        load_split=lambda split: _decoded(*data[split], checked),
        skipped=tuple(skipped),
        train_label_counts=tuple(int(c) for c in np.bincount(data["train"][1], minlength=len(label_names))),
        load_resized=load_resized,
        load_arrays=load_arrays,
        train_sides=np.array([(checked.entries[str(p)].height, checked.entries[str(p)].width)
                              for p in data["train"][0]], np.int64).reshape(-1, 2),
    )
