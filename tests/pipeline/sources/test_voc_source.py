import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError, DataError
from pipeline.sources import file_check
from pipeline.sources.specs import open_source
from pipeline.sources.splits import seeded_split
from pipeline.sources.voc_source import voc_box_to_normalized

W, H = 20, 10  # every fixture image: 20 wide, 10 high


def _xml(objects=(), size=(W, H), filename=None):
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects
    )
    fname = f"<filename>{filename}</filename>" if filename else ""
    return (f"<annotation>{fname}<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
            f"{objs}</annotation>")


# id -> objects (name, (xmin, ymin, xmax, ymax) in VOC 1-based inclusive pixels, difficult)
STANDARD = {
    "a": [("dog", (6, 3, 10, 7), False), ("cat", (1, 1, 20, 10), True)],
    "b": [("cat", (2, 2, 5, 5), False)],
    "bg": [],  # background image: no objects
    "c": [("dog", (1, 1, 1, 1), False)],
    "v": [("cat", (3, 3, 4, 4), False)],
    "t": [("dog", (3, 3, 4, 4), False)],
}


def _voc(root, annotations=STANDARD, splits=None):
    """Write a VOC tree: a PNG-compressed JPEG per id and its XML; ``splits`` -> ImageSets/Main/*.txt."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    for image_id, objects in annotations.items():
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(objects, filename=f"{image_id}.jpg"))
    if splits:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for name, ids in splits.items():
            (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def _held_out_pixels(src):
    return [e["image"].numpy().tobytes() for split in ("validation", "test") for e in src.examples(split)]


def test_voc_pixel_box_to_normalized_by_hand():
    # the single top-left pixel of a 4x2 image spans x 0..1/4, y 0..1/2
    assert voc_box_to_normalized(1, 1, 1, 1, width=4, height=2) == (0.0, 0.0, 0.5, 0.25)
    # the whole image
    assert voc_box_to_normalized(1, 1, 4, 2, width=4, height=2) == (0.0, 0.0, 1.0, 1.0)
    # xmin 6 -> 5/20, xmax 10 -> 10/20, ymin 3 -> 2/10, ymax 7 -> 7/10
    assert np.allclose(voc_box_to_normalized(6, 3, 10, 7, width=20, height=10), (0.2, 0.25, 0.7, 0.5))


def test_voc_splits_round_trip_to_the_schema(tmp_path):
    root = _voc(tmp_path / "VOC", splits={"train": ["a", "b", "bg", "c"], "val": ["v"], "test": ["t"]})
    src = open_source(f"voc:{root}", "detect")
    assert src.task == "detect" and src.label_names == ("cat", "dog")  # found in train, sorted
    assert src.split_sizes == {"train": 4, "validation": 1, "test": 1}
    train = list(src.examples("train"))
    assert [tuple(e["boxes"].shape) for e in train] == [(2, 4), (1, 4), (0, 4), (1, 4)]  # file order; bg kept
    a = train[0]
    assert a["image"].dtype.name == "uint8" and tuple(a["image"].shape) == (H, W, 3)
    assert a["boxes"].dtype.name == "float32" and a["labels"].dtype.name == "int32"
    np.testing.assert_allclose(a["boxes"].numpy(), [[0.2, 0.25, 0.7, 0.5], [0.0, 0.0, 1.0, 1.0]], atol=1e-6)
    assert a["labels"].numpy().tolist() == [1, 0]
    assert a["difficult"].numpy().tolist() == [False, True]
    np.testing.assert_allclose(train[3]["boxes"].numpy(), [[0.0, 0.0, 0.1, 0.05]], atol=1e-6)
    assert train[2]["labels"].shape == (0,) and train[2]["difficult"].shape == (0,)
    assert np.array_equal(a["image"].numpy(), np.asarray(Image.open(root / "JPEGImages" / "a.jpg").convert("RGB")))
    assert next(iter(src.examples("test")))["labels"].numpy().tolist() == [1]


def test_voc_nested_devkit_folder_and_classes_option(tmp_path):
    _voc(tmp_path / "VOCdevkit" / "VOC2007", splits={"train": ["a", "b", "bg", "c"], "val": ["v"], "test": ["t"]})
    src = open_source(f"voc:{tmp_path},classes=dog,cat,bird", "detect")
    assert src.label_names == ("dog", "cat", "bird")  # the order given
    assert next(iter(src.examples("train")))["labels"].numpy().tolist() == [0, 1]


def test_voc_without_image_sets_gets_a_seeded_80_10_10_split(tmp_path):
    root = _voc(tmp_path / "VOC")
    src = open_source(f"voc:{root}", "detect", seed=0)
    assert src.split_sizes == {"train": 4, "validation": 1, "test": 1}
    assert src.label_names == ("cat", "dog")  # classes of the whole pool
    assert _held_out_pixels(src) == _held_out_pixels(open_source(f"voc:{root}", "detect", seed=0))
    assert _held_out_pixels(src) != _held_out_pixels(open_source(f"voc:{root}", "detect", seed=3))


def test_voc_missing_test_or_val_is_carved(tmp_path):
    root = _voc(tmp_path / "one", splits={"train": ["a", "b", "bg", "c", "t"], "val": ["v"]})
    assert open_source(f"voc:{root}", "detect").split_sizes == {"train": 4, "validation": 1, "test": 1}
    root = _voc(tmp_path / "two", splits={"trainval": ["a", "b", "bg", "c", "v"], "test": ["t"]})
    assert open_source(f"voc:{root}", "detect").split_sizes == {"train": 4, "validation": 1, "test": 1}
    # trainval holds val: train is trainval less the val ids
    root = _voc(tmp_path / "three", splits={"trainval": ["a", "b", "bg", "c", "v"], "val": ["v"], "test": ["t"]})
    src = open_source(f"voc:{root}", "detect")
    assert src.split_sizes == {"train": 4, "validation": 1, "test": 1}
    np.testing.assert_allclose(next(iter(src.examples("validation")))["boxes"].numpy(), [[0.2, 0.1, 0.4, 0.2]])


def test_seeded_split_is_disjoint_and_complete():
    parts = seeded_split(list(range(20)), (0.1, 0.1), seed=1)
    assert [len(p) for p in parts] == [16, 2, 2]
    assert sorted(sum(parts, [])) == list(range(20))


def _break(root, image_id, how):
    xml = root / "Annotations" / f"{image_id}.xml"
    if how == "unparsable":
        xml.write_text("<annotation><size>")
    elif how == "no size":
        xml.write_text("<annotation><object><name>dog</name></object></annotation>")
    elif how == "no xmax":
        xml.write_text(xml.read_text().replace("<xmax>10</xmax>", ""))
    elif how == "outside":
        xml.write_text(_xml([("dog", (6, 3, W + 1, 7), False)]))
    elif how == "zero-based":
        xml.write_text(_xml([("dog", (0, 3, 10, 7), False)]))
    elif how == "zero area":
        xml.write_text(_xml([("dog", (6, 3, 5, 7), False)]))  # inclusive: xmax = xmin - 1 is 0 px wide
    elif how == "negative area":
        xml.write_text(_xml([("dog", (6, 7, 10, 3), False)]))
    elif how == "size mismatch":
        xml.write_text(_xml([("dog", (6, 3, 10, 7), False)], size=(W, H + 5)))
    elif how == "missing image":
        (root / "JPEGImages" / f"{image_id}.jpg").unlink()
    elif how == "nan":
        xml.write_text(xml.read_text().replace("<xmax>10</xmax>", "<xmax>nan</xmax>"))
    elif how == "unknown class":
        xml.write_text(_xml([("horse", (3, 3, 4, 4), False)]))


@pytest.mark.parametrize("image_id,how,problem", [
    ("a", "unparsable", "not valid XML"),
    ("a", "no size", "missing <size>"),
    ("a", "no xmax", r"missing <xmax> in object 1 \(dog\)"),
    ("a", "nan", "<xmax> in object 1 \\(dog\\) is not a number: 'nan'"),
    ("a", "outside", "outside the 20x10 image"),
    ("a", "zero-based", "outside the 20x10 image.*1-based"),
    ("a", "zero area", "zero or negative area"),
    ("a", "negative area", "zero or negative area"),
    ("a", "size mismatch", "says 20x15 but a.jpg is 20x10"),
    ("a", "missing image", "image for annotation a.xml is missing"),
    ("v", "unknown class", r"\['horse'\] not among the training classes \['cat', 'dog'\]"),
])
def test_voc_bad_input_names_the_file(tmp_path, image_id, how, problem):
    root = _voc(tmp_path / "VOC", splits={"train": ["a", "b", "bg", "c"], "val": ["v"], "test": ["t"]})
    _break(root, image_id, how)
    with pytest.raises(DataError, match=problem) as e:
        open_source(f"voc:{root}", "detect")
    assert f"{image_id}." in e.value.path


def test_voc_listed_id_without_annotation_and_classes_not_in_option(tmp_path):
    root = _voc(tmp_path / "VOC", splits={"train": ["a", "b", "bg", "c", "gone"], "val": ["v"], "test": ["t"]})
    with pytest.raises(DataError, match="annotation file is missing") as e:
        open_source(f"voc:{root}", "detect")
    assert e.value.path.endswith("gone.xml")
    root = _voc(tmp_path / "VOC2", splits={"train": ["a", "b", "bg", "c"], "val": ["v"], "test": ["t"]})
    with pytest.raises(DataError, match=r"\['dog'\] not among the classes= list \['cat'\]"):
        open_source(f"voc:{root},classes=cat", "detect")


def test_voc_skip_bad_counts_what_it_skipped(tmp_path):
    root = _voc(tmp_path / "VOC", splits={"train": ["a", "b", "bg", "c"], "val": ["v"], "test": ["t"]})
    _break(root, "b", "outside")
    _break(root, "c", "missing image")
    src = open_source(f"voc:{root}", "detect", skip_bad=True)
    assert src.split_sizes == {"train": 2, "validation": 1, "test": 1}
    assert sorted(s.path.rsplit("/", 1)[-1] for s in src.skipped) == ["b.xml", "c.jpg"]
    assert all(s.problem for s in src.skipped)


def test_voc_spec_errors(tmp_path):
    root = _voc(tmp_path / "VOC", splits={"train": ["a", "b"], "val": ["b"], "test": ["t"]})
    with pytest.raises(DataError, match="also in train.txt") as e:
        open_source(f"voc:{root}", "detect")
    assert e.value.path.endswith("val.txt")
    with pytest.raises(ConfigError, match="detection source.*TASK=detect"):
        open_source(f"voc:{root}", "classify")
    with pytest.raises(ConfigError, match="unknown option 'colour=red'"):
        open_source(f"voc:{root},colour=red", "detect")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Annotations/"):
        open_source(f"voc:{tmp_path / 'empty'}", "detect")
    with pytest.raises(DataError, match="not found"):
        open_source(f"voc:{tmp_path / 'nowhere'}", "detect")


def test_a_truncated_image_is_named_before_anything_is_written_and_remembered(tmp_path, monkeypatch):
    """voc: decodes every image once when opened (in-graph, in parallel); the manifest in the data
    dir spares a rerun that decode."""
    root = _voc(tmp_path / "VOC")
    rng = np.random.default_rng(5)
    path = root / "JPEGImages" / "b.jpg"
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=100, subsampling=0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(data) // 4])  # the header intact, a quarter of the scan gone
    with pytest.raises(DataError, match=r"b\.jpg: corrupt or truncated image.*SKIP_BAD=1"):
        open_source(f"voc:{root}", "detect", data_dir=tmp_path / "data")
    src = open_source(f"voc:{root}", "detect", data_dir=tmp_path / "data", skip_bad=True)
    assert [s.path for s in src.skipped] == [str(path)]
    decoded = []
    real = file_check._fast_pass
    monkeypatch.setattr(file_check, "_fast_pass", lambda paths, *a: decoded.extend(paths) or real(paths, *a))
    again = open_source(f"voc:{root}", "detect", data_dir=tmp_path / "data", skip_bad=True)
    assert decoded == [] and again.split_sizes == src.split_sizes
