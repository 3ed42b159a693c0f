"""folder: remembers its files (manifest.py) and decodes each one once (file_check.py)."""
import gc
import io
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from pipeline.dataset import PipelineConfig, classification_dataset
from pipeline.preprocess import preprocess_image
from pipeline.sources import file_check, manifest
from pipeline.sources.images import load_rgb
from pipeline.sources.manifest import Entry
from pipeline.sources.specs import open_source
from pipeline.training.classifier import TrainConfig, input_side, resolve_config
from pipeline.training.recipe import profile_source

SPLITS = ("train", "validation", "test")


def _tree(root, per_class=8):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg", quality=90)
    return root


@pytest.fixture
def headers_read(monkeypatch):
    """The files whose header the check pass reads (every file it checks goes through here)."""
    seen = []
    real = file_check.inspect_image
    monkeypatch.setattr(file_check, "inspect_image", lambda p: seen.append(os.path.basename(p)) or real(p))
    return seen


def test_second_open_decodes_nothing_and_the_manifest_is_not_in_the_users_folder(tmp_path, headers_read):
    root = _tree(tmp_path / "pets")
    before = sorted(p for p in root.rglob("*"))
    first = open_source(f"folder:{root}", data_dir=tmp_path / "data")
    assert len(headers_read) == 16
    headers_read.clear()
    again = open_source(f"folder:{root}", data_dir=tmp_path / "data")
    assert headers_read == []
    assert again.split_sizes == first.split_sizes and again.train_label_counts == first.train_label_counts
    assert sorted(p for p in root.rglob("*")) == before  # nothing written into the user's folder
    written = list((tmp_path / "data" / "prepared").glob("folder-*/manifest.json"))
    assert len(written) == 1
    entries = manifest.load(written[0].parent)
    assert len(entries) == 16 and all(e.problem is None for e in entries.values())
    assert {e.label for e in entries.values()} == {"cat", "dog"}
    assert {(e.width, e.height) for e in entries.values()} == {(10, 12)}
    a = [e["image"].numpy() for s in SPLITS for e in first.examples(s)]
    b = [e["image"].numpy() for s in SPLITS for e in again.examples(s)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_touched_file_is_checked_again_alone_and_removed_or_added_files_follow(tmp_path, headers_read):
    root = _tree(tmp_path / "pets")
    data_dir = tmp_path / "data"
    open_source(f"folder:{root}", data_dir=data_dir)
    headers_read.clear()
    Image.new("RGB", (7, 5), (1, 2, 3)).save(root / "cat" / "3.jpg")  # new content: size and mtime change
    open_source(f"folder:{root}", data_dir=data_dir)
    assert headers_read == ["3.jpg"]
    headers_read.clear()
    (root / "dog" / "0.jpg").unlink()
    Image.new("RGB", (6, 6)).save(root / "dog" / "new.png")
    src = open_source(f"folder:{root}", data_dir=data_dir)
    assert headers_read == ["new.png"]
    assert sum(src.split_sizes.values()) == 16
    (directory,) = (data_dir / "prepared").iterdir()
    names = sorted(os.path.basename(p) for p in manifest.load(directory))
    assert "0.jpg" in names and names.count("0.jpg") == 1  # cat/0.jpg stays, dog/0.jpg is gone
    assert "new.png" in names and len(names) == 16
    assert manifest.load(directory)[str(root / "cat" / "3.jpg")].width == 7


def test_a_truncated_file_is_named_and_remembered(tmp_path, headers_read):
    root = _tree(tmp_path / "pets")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    cut = root / "dog" / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for _ in range(2):  # the second time from the manifest, without decoding
        with pytest.raises(DataError, match="truncated.*SKIP_BAD=1") as e:
            open_source(f"folder:{root}", data_dir=tmp_path / "data")
        assert e.value.path == str(cut) and "\n" not in str(e.value)
    assert headers_read.count("cut.jpg") == 1
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data", skip_bad=True)
    assert [s.path for s in src.skipped] == [str(cut)] and "truncated" in src.skipped[0].problem
    assert sum(src.split_sizes.values()) == 16


def test_with_the_input_size_the_first_epoch_never_reads_the_files(tmp_path):
    root = _tree(tmp_path / "pets")
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8)
    expected = {s: [(preprocess_image(load_rgb(p), 8).numpy(), y) for p, y in _files(src, s, root)] for s in SPLITS}
    for p in root.rglob("*.jpg"):
        p.unlink()  # from here on, reading a file would fail
    cfg = PipelineConfig(image_size=8, batch_size=4)
    for split in SPLITS:
        x, y = zip(*[(x.numpy(), y.numpy()) for x, y in classification_dataset(src, split, cfg, training=False)])
        np.testing.assert_array_equal(np.concatenate(x), np.stack([e for e, _ in expected[split]]).astype(np.float32))
        np.testing.assert_array_equal(np.concatenate(y), [label for _, label in expected[split]])


def _files(src, split, root):
    """(path, label) of a split, in order, recovered by matching pixels (the Source does not list files)."""
    by_pixels = {load_rgb(p).tobytes(): p for p in root.rglob("*.jpg")}
    return [(by_pixels[e["image"].numpy().tobytes()], int(e["label"])) for e in src.examples(split)]


def test_only_files_not_in_the_manifest_are_decoded_at_the_input_size(tmp_path):
    """A rerun with one new file: the others come from the manifest and are decoded in the first
    epoch; the new one was decoded while checking. Both give the shared preprocessing's pixels."""
    root = _tree(tmp_path / "pets")
    open_source(f"folder:{root}", data_dir=tmp_path / "data")
    Image.new("RGB", (9, 9), (200, 10, 10)).save(root / "cat" / "red.png")
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8)
    cfg = PipelineConfig(image_size=8, batch_size=64)
    images = np.concatenate([x.numpy() for s in SPLITS for x, _ in classification_dataset(src, s, cfg, training=False)])
    expected = [preprocess_image(load_rgb(p), 8).numpy().astype(np.float32) for p in sorted(root.rglob("*.*"))]
    assert sorted(i.tobytes() for i in images) == sorted(e.tobytes() for e in expected)


def test_concurrent_writers_never_leave_a_broken_manifest(tmp_path):
    directory = tmp_path / "prepared" / "folder-x"
    sets = [{f"/d/{w}/{i}.jpg": Entry(i, w, None, 1, 1, 0, 1, "c") for i in range(300)} for w in range(4)]
    stop = threading.Event()
    seen, errors = [], []

    def write(entries):
        try:
            for _ in range(15):
                manifest.save(directory, tmp_path, entries)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def read():
        while not stop.is_set():
            loaded = manifest.load(directory)
            if loaded:
                seen.append(loaded)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(s,)) for s in sets]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert not errors
    assert seen and all(loaded in sets for loaded in seen)  # always one writer's whole manifest
    assert manifest.load(directory) in sets
    assert not [p for p in directory.iterdir() if p.name not in ("manifest.json", "manifest.lock", "root.txt")]


def test_an_unreadable_manifest_is_rebuilt(tmp_path, headers_read):
    root = _tree(tmp_path / "pets")
    open_source(f"folder:{root}", data_dir=tmp_path / "data")
    (path,) = (tmp_path / "data" / "prepared").glob("*/manifest.json")
    path.write_text("{not json")
    headers_read.clear()
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data")
    assert len(headers_read) == 16 and sum(src.split_sizes.values()) == 16
    assert len(manifest.load(path.parent)) == 16


def test_over_the_memory_budget_the_pixels_spill_to_a_file_and_are_read_from_it(tmp_path, monkeypatch):
    monkeypatch.setattr(file_check, "PREPARED_PIXEL_BUDGET", 100)  # bytes: anything spills
    root = _tree(tmp_path / "pets")
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8)
    assert src.resized_arrays("train", 8) is None  # not in memory
    (spill,) = (tmp_path / "data" / "prepared").glob("*/.pixels-8px-*.u8")
    assert spill.stat().st_size == 16 * 8 * 8 * 3
    expected = {s: [preprocess_image(load_rgb(p), 8).numpy() for p, _ in _files(src, s, root)] for s in SPLITS}
    for p in root.rglob("*.jpg"):
        p.unlink()  # the first epoch reads the spill file, not the images
    cfg = PipelineConfig(image_size=8, batch_size=4)
    for split in SPLITS:
        x = np.concatenate([x.numpy() for x, _ in classification_dataset(src, split, cfg, training=False)])
        np.testing.assert_array_equal(x, np.stack(expected[split]).astype(np.float32))
    del src, x
    gc.collect()
    assert not spill.exists()  # removed with the source


def test_the_prepared_data_of_a_folder_that_is_gone_is_removed(tmp_path):
    gone, kept = _tree(tmp_path / "gone"), _tree(tmp_path / "kept")
    open_source(f"folder:{gone}", data_dir=tmp_path / "data")
    assert len(list((tmp_path / "data" / "prepared").iterdir())) == 1
    shutil.rmtree(gone)
    open_source(f"folder:{kept}", data_dir=tmp_path / "data")
    (left,) = (tmp_path / "data" / "prepared").iterdir()
    assert (left / "root.txt").read_text() == str(kept.resolve())


@pytest.fixture
def decoded(monkeypatch):
    """The files whose pixels are decoded: by the check pass, or to prepare the pixels at a size."""
    seen = []
    fast, in_order = file_check._fast_pass, file_check.resized_in_order
    monkeypatch.setattr(file_check, "_fast_pass", lambda paths, *a: seen.extend(paths) or fast(paths, *a))
    monkeypatch.setattr(file_check, "resized_in_order",
                        lambda paths, *a: seen.extend(paths) or in_order(paths, *a))
    return seen


def _pixels(src, size):
    cfg = PipelineConfig(image_size=size, batch_size=64)
    return sorted(x.astype(np.uint8).tobytes() for s in SPLITS
                  for batch, _ in classification_dataset(src, s, cfg, training=False).as_numpy_iterator() for x in batch)


def _reference(root, size):
    return sorted(preprocess_image(load_rgb(p, min_side=size), size).numpy().tobytes() for p in root.rglob("*.*"))


def test_a_rerun_at_the_same_size_decodes_nothing_and_reads_the_stored_pixels(tmp_path, decoded, headers_read):
    root = _tree(tmp_path / "pets")
    first = open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8)
    assert len(decoded) == 16 and _pixels(first, 8) == _reference(root, 8)
    assert len(list((tmp_path / "data" / "prepared").glob("folder-*/pixels-8px.npz"))) == 1
    decoded.clear(), headers_read.clear()
    again = open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8)
    assert _pixels(again, 8) == _reference(root, 8)
    assert decoded == [] and headers_read == []  # neither a header nor a pixel read again


def test_a_changed_file_is_decoded_again_alone_and_the_store_follows(tmp_path, decoded):
    root = _tree(tmp_path / "pets")
    open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8)
    Image.new("RGB", (11, 13), (250, 5, 5)).save(root / "dog" / "2.jpg")
    decoded.clear()
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8)
    assert [os.path.relpath(p, root) for p in decoded] == [os.path.join("dog", "2.jpg")]
    assert _pixels(src, 8) == _reference(root, 8)
    decoded.clear()
    assert _pixels(open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=8), 8) == _reference(root, 8)
    assert decoded == []


def test_opened_without_a_size_the_first_request_prepares_every_split_at_once(tmp_path, decoded):
    """`make train` opens the folder before it chooses the input size: the pixels at that size are
    decoded once, for all splits, at the first request, and kept for the next command."""
    root = _tree(tmp_path / "pets")
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data")
    decoded.clear()
    images, labels = src.resized_arrays("train", 8)
    assert len(decoded) == 16 and images.shape == (len(labels), 8, 8, 3)
    assert _pixels(src, 8) == _reference(root, 8) and len(decoded) == 16  # the other splits: no new decode
    decoded.clear()
    assert _pixels(open_source(f"folder:{root}", data_dir=tmp_path / "data"), 8) == _reference(root, 8)
    assert decoded == []


def test_opened_with_the_recipes_rule_for_the_size_each_file_is_decoded_once(tmp_path, decoded):
    """`make train` opens the folder with the recipe's rule (classifier.input_side) instead of a size:
    the check pass applies it to the headers and keeps the pixels at that side, which is the side
    the recipe then picks from the profiled data; the first epoch decodes nothing more."""
    root = _tree(tmp_path / "pets")  # 12 x 10 px images
    cfg = TrainConfig(data=f"folder:{root}")
    src = open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=input_side(cfg))
    assert len(decoded) == 16
    side = resolve_config(cfg, profile_source(src))[0].image_size
    assert side == 32  # native 10 px, raised so the CNN's three poolings leave 4 px
    assert _pixels(src, side) == _reference(root, side)
    assert len(decoded) == 16  # no second decode
    assert input_side(TrainConfig(data="shapes", image_size=24)) == 24  # IMAGE_SIZE= given: that side


def test_an_unreadable_pixel_store_is_rebuilt_and_only_the_recent_sizes_are_kept(tmp_path, decoded):
    root = _tree(tmp_path / "pets")
    for size in (8, 9, 10, 11):  # the first open's check pass keeps 8 px; the others prepare when asked
        open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=size).resized_arrays("test", size)
    (directory,) = (tmp_path / "data" / "prepared").glob("folder-*")
    assert sorted(p.name for p in directory.glob("pixels-*")) == ["pixels-10px.npz", "pixels-11px.npz",
                                                                  "pixels-9px.npz"]
    (directory / "pixels-10px.npz").write_bytes(b"not a zip")
    decoded.clear()
    assert _pixels(open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=10), 10) == _reference(root, 10)
    assert len(decoded) == 16
    decoded.clear()
    open_source(f"folder:{root}", data_dir=tmp_path / "data", image_size=10).resized_arrays("train", 10)
    assert decoded == []
