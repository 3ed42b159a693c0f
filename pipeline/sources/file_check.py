"""The check pass of the file sources: each new or changed image decoded once, before anything is written.

    check_files(files, labels, known, image_size=64)
        -> Checked(entries {path: manifest.Entry}, pixels uint8 [K, 64, 64, 3], rows {path: k}, checked)

1. Files the manifest already knows (same size and mtime) are trusted: nothing is read.
2. The others' headers are read (Pillow, threads): missing, empty, non-image and over-size files
   are found here, and each readable file gets the decoder that reproduces ``load_rgb``.
3. With ``full=True`` their pixels are decoded in one tf.data pass (``decode_in_graph``: TF's kernels
   in parallel, no GIL). When the caller knows the model's input size, JPEGs are decoded at the
   largest scale reduction that keeps that size (``jpeg_scales``), the same pass resizes them
   with ``preprocess_image`` and keeps the result, so the first epoch reads those pixels and never
   the files: validating and filling the cache are one decode. Pixels are kept in memory
   (``pixels``) while they fit ``PREPARED_PIXEL_BUDGET``; beyond it they are written to a spill
   file of fixed-size rows (``spill``, in ``spill_dir``, removed with the ``Checked``), which
   tf.data reads back without Python (``FixedLengthRecordDataset``). Without a ``spill_dir`` the
   pass only validates and the first epoch decodes again.
4. A file the fast pass could not decode is decoded again alone with ``load_rgb``: its error names
   the file and the problem; if Pillow reads it after all, it keeps Pillow as its decoder.

    prepared_pixels(paths, entries, 64, store_dir, fresh=checked) -> (uint8 [N, 64, 64, 3], {path: row})

gathers a source's pixels at one input size from the check pass, the pixel store kept between runs
(pixel_store.py), and a decode of what neither holds, and keeps the store up to date.
"""
from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.errors import DataError
from pipeline.preprocess import preprocess_image
from pipeline.sources import pixel_store
from pipeline.sources.images import PILLOW, TF_JPEG, graph_decoder, inspect_image, jpeg_scale, load_rgb
from pipeline.sources.manifest import Entry

PREPARED_PIXEL_BUDGET = 1 << 30  # bytes of resized pixels the check pass keeps for the first epoch


@dataclass
class Checked:
    """The outcome of a check pass.

    entries: every file asked about -> its Entry (``problem`` set for a bad one).
    pixels:  uint8 [K, S, S, 3] for the files decoded now (None without an image size, or over budget).
    spill:   over budget: the file holding those K rows instead (S * S * 3 bytes each, in row order).
    rows:    path -> row of ``pixels`` / ``spill``.
    size:    S, the side of the kept pixels.
    checked: how many files were read now (the rest came from the manifest).
    """

    entries: dict[str, Entry]
    pixels: np.ndarray | None = None
    spill: Path | None = None
    rows: dict[str, int] = field(default_factory=dict)
    size: int | None = None
    checked: int = 0


class _SpillRows:
    """uint8 [K, S, S, 3] rows written to a file at their row (``rows[index] = images``), so pixels
    beyond the memory budget cost disk, not memory."""

    def __init__(self, directory: Path, count: int, size: int):
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".pixels-{size}px-", suffix=".u8", dir=directory)
        self.fd, self.path, self.row = fd, Path(name), size * size * 3
        os.ftruncate(fd, count * self.row)

    def __setitem__(self, index, images: np.ndarray) -> None:
        rows = np.ascontiguousarray(images, np.uint8).reshape(-1, self.row)
        for i, row in zip(np.atleast_1d(index), rows):
            os.pwrite(self.fd, row.tobytes(), int(i) * self.row)

    def close(self) -> None:
        os.close(self.fd)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _header(path: Path, stat: os.stat_result | None, label: str) -> Entry:
    if stat is None:
        return Entry(-1, -1, "file not found", label=label)
    try:
        info = inspect_image(path)
    except DataError as e:
        return Entry(stat.st_size, stat.st_mtime_ns, e.problem, label=label)
    return Entry(stat.st_size, stat.st_mtime_ns, None, info.width, info.height, info.decoder, info.orientation, label)


def jpeg_scales(entries: list[Entry], size: int | None) -> np.ndarray:
    """int32 [n]: the JPEG reduction each file is decoded at for a model of ``size`` px
    (``images.jpeg_scale``; 1 for every file without a size, and for files not decoded by TF_JPEG)."""
    return np.array([jpeg_scale(e.width, e.height, size) if e.decoder == TF_JPEG else 1 for e in entries],
                    np.int32).reshape(-1)


def _shape_checked(decode):
    """``decode`` whose element fails unless the image has the header's size (reduced by its JPEG
    scale; TF and the header disagreeing sends the file to Pillow, the reference)."""
    @tf.autograph.experimental.do_not_convert  # plain TF ops: autograph's rewrite only costs tracing time
    def run(path, decoder, orientation, scale, height, width):
        image = decode(path, decoder, orientation, scale)
        expected = tf.stack([(height + scale - 1) // scale, (width + scale - 1) // scale])
        with tf.control_dependencies([tf.debugging.assert_equal(tf.shape(image)[:2], expected)]):
            return tf.identity(image)
    return run


RESIZE_BATCH = 32  # same-size images resized together: one op call per batch instead of per image


def resized_in_order(paths: list[str], entries: list[Entry], size: int) -> tf.data.Dataset:
    """uint8 [size, size, 3] per file, in order: decoded in parallel in-graph (JPEGs at their
    ``jpeg_scales``), resized by ``preprocess_image``; files of one size are resized in batches
    (the same pixels, cheaper)."""
    scales = jpeg_scales(entries, size)
    decode = graph_decoder([e.decoder for e in entries], [e.orientation for e in entries], scales)
    ds = tf.data.Dataset.from_tensor_slices((paths, np.array([e.decoder for e in entries], np.int32),
                                             np.array([e.orientation for e in entries], np.int32), scales))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if len({(e.height, e.width) for e in entries}) == 1:
        ds = ds.batch(RESIZE_BATCH).map(lambda x: preprocess_image(x, size), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.unbatch()
    return ds.map(lambda x: preprocess_image(x, size), num_parallel_calls=tf.data.AUTOTUNE)


def _fast_pass(paths: list[str], entries: list[Entry], image_size: int | None, keep):
    """Decode ``paths`` in one parallel tf.data pass. Returns the set of indices that decoded to the
    header's size; a file that fails is simply absent. ``keep``: None (validate only: JPEGs at 1/8,
    which still reads and checks every byte of the file), or where the resized pixels go
    (``keep[indices] = uint8 [n, S, S, 3]``).

    The files of the most common size are resized in batches, the others one by one."""
    columns = (np.arange(len(paths), dtype=np.int64), np.array(paths, dtype=object),  # object: no 4-byte chars
               np.array([e.decoder for e in entries], np.int32), np.array([e.orientation for e in entries], np.int32),
               jpeg_scales(entries, image_size if keep is not None else 1),  # validating only: 1/8 decodes every byte too
               np.array([e.height for e in entries], np.int32), np.array([e.width for e in entries], np.int32))

    def decoded(select: np.ndarray) -> tf.data.Dataset:
        sub = [c[select] for c in columns]
        decode = _shape_checked(graph_decoder(sub[2], sub[3], sub[4]))
        ds = tf.data.Dataset.from_tensor_slices(tuple(sub))
        ds = ds.map(lambda i, *file: (i, decode(*file)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        return ds.ignore_errors(log_warning=False)

    ok: set[int] = set()
    if keep is None:
        for index in decoded(np.ones(len(paths), bool)).map(lambda i, x: i).batch(256).as_numpy_iterator():
            ok.update(index.tolist())
        return ok
    shapes = (columns[5].astype(np.int64) << 32 | columns[6]) << 4 | columns[4]  # size and scale
    values, counts = np.unique(shapes, return_counts=True)
    common = shapes == values[counts.argmax()]
    ds = decoded(common).batch(RESIZE_BATCH).map(lambda i, x: (i, preprocess_image(x, image_size)),
                                                 num_parallel_calls=tf.data.AUTOTUNE)
    if not common.all():  # each dataset traces its decoder: build none for nothing
        ds = ds.concatenate(decoded(~common).map(lambda i, x: (i[None], preprocess_image(x, image_size)[None]),
                                                 num_parallel_calls=tf.data.AUTOTUNE))
    for index, images in ds.prefetch(2).as_numpy_iterator():
        ok.update(index.tolist())
        keep[index] = images
    return ok


def check_files(files: list[Path], labels: list[str], known: dict[str, Entry], *, full: bool = True,
                image_size: int | Callable[[np.ndarray], int] | None = None, pixel_budget: int | None = None,
                spill_dir: Path | None = None) -> Checked:
    """Check ``files`` (``labels``: each one's class name, "" when none) against the manifest
    entries ``known``; see the module docstring. Never raises for a bad file: its Entry says why.

    ``image_size``: the side to keep the pixels at; or a function that chooses it from the readable
    files' int [n, 2] (height, width) sides as the headers give them, called between the header
    pass and the decode (a caller that picks the model's input from the data, as `make train`
    does, then decodes each file once); None: validate only."""
    entries: dict[str, Entry] = {}
    readable: list[tuple[str, Entry]] = []
    count = 0
    for path, label in zip(files, labels):
        stat = _stat(path)
        entry = known.get(str(path))
        if entry is not None and stat is not None and entry.matches(stat):
            entries[str(path)] = entry if entry.label == label else replace(entry, label=label)
            continue
        entry = entries[str(path)] = _header(path, stat, label)  # GIL-bound: threads only add contention
        count += 1
        if entry.problem is None:
            readable.append((str(path), entry))
    checked = Checked(entries, checked=count)
    if not full or not readable:
        return checked
    if callable(image_size):
        sides = [(e.height, e.width) for e in entries.values() if e.problem is None]
        image_size = int(image_size(np.array(sides, np.int64).reshape(-1, 2)))
    paths = [p for p, _ in readable]
    keep = None
    budget = PREPARED_PIXEL_BUDGET if pixel_budget is None else pixel_budget
    if image_size is not None and len(readable) * image_size * image_size * 3 <= budget:
        keep = checked.pixels = np.empty((len(readable), image_size, image_size, 3), np.uint8)
    elif image_size is not None and spill_dir is not None:
        keep = _SpillRows(Path(spill_dir), len(readable), image_size)
        checked.spill = keep.path
        weakref.finalize(checked, _remove, keep.path)
    try:
        ok = _fast_pass(paths, [e for _, e in readable], image_size, keep)
        for k, (path, entry) in enumerate(readable):
            if k in ok:
                continue
            # TF refused it (or disagreed with the header): Pillow, the reference, decides.
            try:
                image = load_rgb(path)
            except DataError as e:
                entries[path] = replace(entry, problem=e.problem)
                continue
            entries[path] = replace(entry, decoder=PILLOW, height=image.shape[0], width=image.shape[1])
            if keep is not None:
                keep[k] = preprocess_image(image, image_size).numpy()
    finally:
        if isinstance(keep, _SpillRows):
            keep.close()
    if keep is not None:
        checked.rows = {p: k for k, p in enumerate(paths) if entries[p].problem is None}
        checked.size = image_size
    return checked


def prepared_pixels(paths: list[str], entries: list[Entry], side: int, store_dir: Path | None,
                    fresh: Checked | None = None, budget: int | None = None) -> tuple[np.ndarray, dict[str, int]] | None:
    """uint8 [N, side, side, 3], row i for ``paths[i]`` (readable files, ``entries`` their manifest
    entries), and {path: row}: the pixels the check pass just kept (``fresh``), else the ones the pixel
    store in ``store_dir`` holds for the file as it is now (pixel_store.py), else decoded now in-graph
    (``resized_in_order``). The store is rewritten when anything in it changed. None when N images of
    ``side`` px are over ``budget`` (PREPARED_PIXEL_BUDGET): the caller then decodes in its first epoch."""
    budget = PREPARED_PIXEL_BUDGET if budget is None else budget
    if len(paths) * side * side * 3 > budget:
        return None
    stored = pixel_store.load(store_dir, side) if store_dir is not None else None
    out = np.empty((len(paths), side, side, 3), np.uint8)
    have_fresh = fresh is not None and fresh.size == side and fresh.pixels is not None
    from_fresh = np.full(len(paths), -1, np.int64)  # a row of the check pass's pixels, -1 for none ...
    from_store = np.full(len(paths), -1, np.int64)  # ... or of the store; neither: decoded now
    for i, (path, entry) in enumerate(zip(paths, entries)):
        if have_fresh and path in fresh.rows:
            from_fresh[i] = fresh.rows[path]
        elif stored is not None:
            row = stored.row(path, entry.size, entry.mtime_ns)
            from_store[i] = -1 if row is None else row
    for source, rows in ((fresh, from_fresh), (stored, from_store)):  # row gathers: boolean masks copy twice
        have = np.flatnonzero(rows >= 0)
        if len(have) == len(paths):
            out = source.pixels[rows]
        elif len(have):
            out[have] = source.pixels[rows[have]]
    missing = np.flatnonzero((from_fresh < 0) & (from_store < 0))
    if len(missing):
        images = resized_in_order([paths[i] for i in missing], [entries[i] for i in missing], side)
        done = 0
        for batch in images.batch(256).prefetch(2).as_numpy_iterator():
            out[missing[done:done + len(batch)]] = batch
            done += len(batch)
    unchanged = stored is not None and (from_store >= 0).all() and len(stored.rows) == len(paths)
    if store_dir is not None and not unchanged:
        pixel_store.save(store_dir, side, paths, [e.size for e in entries], [e.mtime_ns for e in entries], out)
    return out, {path: i for i, path in enumerate(paths)}
