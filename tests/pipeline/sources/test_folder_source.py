import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError, DataError
from pipeline.sources import images
from pipeline.sources.folder_source import open_folder
from pipeline.sources.specs import open_source


def _tree(root, classes=("cat", "dog"), per_class=10, size=(12, 10)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_flat_tree_gets_a_seeded_stratified_split(tmp_path):
    root = _tree(tmp_path / "pets")
    src = open_source(f"folder:{root}", "classify", seed=0)
    assert src.label_names == ("cat", "dog")
    # 20 images are too few for 200 held out: each held-out split gets the 15 % cap, 1.5 of each
    # class of 10, rounded to 2 (splits.held_out_fraction)
    assert src.split_sizes == {"train": 12, "validation": 4, "test": 4}
    assert src.train_label_counts == (6, 6)
    labels = {s: sorted(int(e["label"]) for e in src.examples(s)) for s in ("train", "validation", "test")}
    assert labels["validation"] == [0, 0, 1, 1] and labels["test"] == [0, 0, 1, 1]
    ex = next(iter(src.examples("train")))
    assert ex["image"].shape == (12, 10, 3) and ex["image"].dtype.name == "uint8"
    again = open_folder("x", str(root), seed=0)
    other = open_folder("x", str(root), seed=5)
    first = lambda s: [e["image"].numpy().tobytes() for e in s.examples("test")]  # noqa: E731
    assert first(src) == first(again)
    assert first(src) != first(other)


def test_train_test_subfolders_are_the_splits(tmp_path):
    _tree(tmp_path / "d" / "train", per_class=10)
    _tree(tmp_path / "d" / "test", per_class=3)
    src = open_source(f"folder:{tmp_path / 'd'}")
    assert src.split_sizes == {"train": 16, "validation": 4, "test": 6}  # 15 % of 20 carved: 2 per class
    _tree(tmp_path / "d" / "val", per_class=2)
    src = open_source(f"folder:{tmp_path / 'd'}")
    assert src.split_sizes == {"train": 20, "validation": 4, "test": 6}


def test_unknown_label_in_test_split(tmp_path):
    _tree(tmp_path / "d" / "train")
    _tree(tmp_path / "d" / "test", classes=("cat", "dog", "horse"), per_class=2)
    with pytest.raises(DataError, match="horse.*not among the training classes"):
        open_source(f"folder:{tmp_path / 'd'}")


def test_odd_image_modes_load(tmp_path):
    root = _tree(tmp_path / "m", per_class=6)
    Image.new("L", (7, 7), 9).save(root / "cat" / "gray.png")
    Image.new("CMYK", (7, 7), (0, 0, 0, 0)).save(root / "dog" / "cmyk.jpg")
    Image.fromarray(np.full((7, 7), 4000, np.uint16)).save(root / "dog" / "deep.png")
    src = open_source(f"folder:{root}")
    shapes = {e["image"].shape[-1] for s in ("train", "validation", "test") for e in src.examples(s)}
    assert shapes == {3}
    assert sum(src.split_sizes.values()) == 15


@pytest.mark.parametrize("name,content,problem", [
    ("zero.png", b"", "empty file"),
    ("notes.txt", b"hello", "not an image file"),
    ("fake.jpg", b"\xff\xd8\xff\xe0 definitely not a jpeg", "corrupt|not an image"),
])
def test_bad_file_in_class_folder_names_it(tmp_path, name, content, problem):
    root = _tree(tmp_path / "bad")
    (root / "dog" / name).write_bytes(content)
    with pytest.raises(DataError, match=problem) as e:
        open_source(f"folder:{root}")
    assert name in str(e.value)


def test_skip_bad_counts_what_it_skipped(tmp_path):
    root = _tree(tmp_path / "bad")
    (root / "dog" / "zero.png").write_bytes(b"")
    (root / "cat" / "notes.txt").write_bytes(b"x")
    src = open_source(f"folder:{root}", skip_bad=True)
    assert sorted(s.path.rsplit("/", 1)[-1] for s in src.skipped) == ["notes.txt", "zero.png"]
    assert sum(src.split_sizes.values()) == 20


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        open_source(f"folder:{tmp_path / 'empty'}")
    root = _tree(tmp_path / "d")
    (root / "bird").mkdir()
    with pytest.raises(DataError, match="bird.*no readable images"):
        open_source(f"folder:{root}")
    with pytest.raises(DataError, match="folder not found"):
        open_source(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="needs a path"):
        open_source("folder:")


def _bomb(path, width=20000, height=20000):
    """A valid all-black 1-bit PNG, ~48 KB on disk at 20000x20000, written row by row so that
    building it allocates almost nothing."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    pixels = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_stops_naming_the_file_or_is_skipped(tmp_path):
    root = _tree(tmp_path / "pets")
    bomb = _bomb(root / "dog" / "big.png")
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"400\.0 Mpx, above the 80 Mpx limit.*pass SKIP_BAD=1") as e:
        open_source(f"folder:{root}")
    assert e.value.path == str(bomb) and "\n" not in str(e.value)

    src = open_source(f"folder:{root}", skip_bad=True)
    assert [s.path for s in src.skipped] == [str(bomb)]
    assert "above the 80 Mpx limit" in src.skipped[0].problem
    assert sum(src.split_sizes.values()) == 20  # every other file kept


def test_image_just_above_the_pixel_limit_is_skipped_just_below_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 12 * 10)  # the _tree images are 12x10
    root = _tree(tmp_path / "pets")
    _bomb(root / "cat" / "wide.png", width=11, height=11)  # 121 px: one over
    _bomb(root / "cat" / "tall.png", width=1, height=120)  # exactly at the limit
    src = open_source(f"folder:{root}", skip_bad=True)
    assert [s.path.rsplit("/", 1)[-1] for s in src.skipped] == ["wide.png"]
    assert sum(src.split_sizes.values()) == 21
