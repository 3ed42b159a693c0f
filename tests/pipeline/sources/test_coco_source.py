import json

import numpy as np
import pytest
from PIL import Image

from common.errors import ConfigError, DataError
from pipeline.sources.coco_source import coco_box_to_normalized, coco_split_files
from pipeline.sources.specs import open_source

W, H = 20, 10  # every fixture image: 20 wide, 10 high
# ids need not be contiguous nor sorted: sorted by id -> cat (1) = 0, dog (3) = 1, bird (7) = 2
CATEGORIES = [{"id": 7, "name": "bird"}, {"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]


def _image(path, size=(W, H)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _coco(json_path, image_dir, objects_per_image, first_id=1):
    """Write an instances file and its images. objects_per_image: {file_name: [(category_id, [x, y, w, h], iscrowd)]}."""
    images, annotations = [], []
    for k, (name, objects) in enumerate(objects_per_image.items()):
        image_id = first_id + 10 * k
        _image(image_dir / name)
        images.append({"id": image_id, "file_name": name, "width": W, "height": H})
        for cat, bbox, crowd in objects:
            annotations.append({"id": 1000 + len(annotations) + first_id * 100, "image_id": image_id,
                                "category_id": cat, "bbox": bbox, "iscrowd": crowd, "area": bbox[2] * bbox[3]})
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    json_path.write_text(json.dumps(data))
    return data


TRAIN = {
    "a.png": [(3, [5, 2, 10, 4], 0), (1, [0, 0, 20, 10], 1)],
    "b.png": [(1, [1, 1, 2, 2], 0)],
    "bg.png": [],  # background: kept with N = 0
    "c.png": [(7, [0, 0, 1, 1], 0)],
    "d.png": [(3, [2, 2, 2, 2], 0)],
    "e.png": [(1, [4, 4, 2, 2], 0)],
}
VAL = {"v.png": [(3, [1, 1, 3, 3], 0)]}


def _standard(root):
    """The usual layout: annotations/ beside train2017/ and val2017/."""
    _coco(root / "annotations" / "instances_train2017.json", root / "train2017", TRAIN)
    _coco(root / "annotations" / "instances_val2017.json", root / "val2017", VAL, first_id=5)
    return root / "annotations" / "instances_train2017.json"


def test_coco_pixel_box_to_normalized_by_hand():
    # x 5..15 of 20 wide, y 2..6 of 10 high
    assert coco_box_to_normalized(5, 2, 10, 4, width=20, height=10) == (0.2, 0.25, 0.6, 0.75)
    assert coco_box_to_normalized(0, 0, 20, 10, width=20, height=10) == (0.0, 0.0, 1.0, 1.0)


def test_coco_round_trips_to_the_schema(tmp_path):
    file = _standard(tmp_path)
    src = open_source(f"coco:{file}", "detect")
    assert src.label_names == ("cat", "dog", "bird")
    assert src.split_sizes == {"train": 5, "validation": 1, "test": 1}  # test carved from train
    examples = [e for s in ("train", "test") for e in src.examples(s)]
    assert sorted(int(e["boxes"].shape[0]) for e in examples) == [0, 1, 1, 1, 1, 2]  # the background image is kept
    by_boxes = {tuple(np.round(e["boxes"].numpy().astype(float).ravel(), 4).tolist()): e for e in examples}
    a = by_boxes[(0.2, 0.25, 0.6, 0.75, 0.0, 0.0, 1.0, 1.0)]
    assert a["image"].dtype.name == "uint8" and tuple(a["image"].shape) == (H, W, 3)
    assert a["boxes"].dtype.name == "float32" and a["labels"].dtype.name == "int32"
    assert a["labels"].numpy().tolist() == [1, 0]  # dog, cat
    assert a["difficult"].numpy().tolist() == [False, True]  # iscrowd
    assert by_boxes[(0.0, 0.0, 0.1, 0.05)]["labels"].numpy().tolist() == [2]  # bird, category id 7
    v = next(iter(src.examples("validation")))
    np.testing.assert_allclose(v["boxes"].numpy(), [[0.1, 0.05, 0.4, 0.2]], atol=1e-6)
    assert np.array_equal(v["image"].numpy(), np.asarray(Image.open(tmp_path / "val2017" / "v.png")))
    # the same dataset named by its validation file
    assert open_source(f"coco:{tmp_path / 'annotations' / 'instances_val2017.json'}", "detect").split_sizes \
        == src.split_sizes


def test_coco_single_file_split_and_image_folders(tmp_path):
    _coco(tmp_path / "one" / "labels.json", tmp_path / "one" / "images", TRAIN)
    src = open_source(f"coco:{tmp_path / 'one' / 'labels.json'}", "detect", seed=0)
    assert src.split_sizes == {"train": 4, "validation": 1, "test": 1}
    assert len(list(src.examples("train"))) == 4
    _coco(tmp_path / "two" / "labels.json", tmp_path / "pictures", TRAIN)
    src = open_source(f"coco:{tmp_path / 'two' / 'labels.json'},images={tmp_path / 'pictures'}", "detect")
    assert sum(src.split_sizes.values()) == 6
    with pytest.raises(DataError, match="none of its images.*images=DIR"):
        open_source(f"coco:{tmp_path / 'two' / 'labels.json'}", "detect")


def test_coco_sibling_split_files(tmp_path):
    d = tmp_path / "ann"
    for name in ("instances_train2017.json", "instances_val2017.json", "instances_test2017.json",
                 "instances_train2014.json", "instances_val2014.json"):
        d.mkdir(exist_ok=True)
        (d / name).write_text("{}")
    assert coco_split_files(d / "instances_val2017.json") == {
        "train": d / "instances_train2017.json", "validation": d / "instances_val2017.json",
        "test": d / "instances_test2017.json"}
    assert coco_split_files(d / "instances_train2014.json") == {
        "train": d / "instances_train2014.json", "validation": d / "instances_val2014.json"}
    assert coco_split_files(d / "instances_test2017.json")["train"] == d / "instances_train2017.json"
    (tmp_path / "mixed").mkdir()
    for name in ("instances_train.json", "instances_val_fixed.json"):
        (tmp_path / "mixed" / name).write_text("{}")
    mixed = tmp_path / "mixed"
    assert coco_split_files(mixed / "instances_train.json") == {
        "train": mixed / "instances_train.json", "validation": mixed / "instances_val_fixed.json"}
    (d / "mine.json").write_text("{}")
    assert coco_split_files(d / "mine.json") == {"all": d / "mine.json"}


def _edit(file, fn):
    data = json.loads(file.read_text())
    fn(data)
    file.write_text(json.dumps(data))


def _set_bbox(bbox):
    def fn(data):
        data["annotations"][0]["bbox"] = bbox
    return fn


@pytest.mark.parametrize("change,problem,names", [
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id 1", "instances_train2017.json"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation id", "instances_train2017"),
    (lambda d: d["annotations"][0].update(image_id=999), "refers to unknown image_id 999", "instances_train2017"),
    (lambda d: d["annotations"][0].update(category_id=2), r"annotation id \d+ \(image a.png\) has unknown category_id 2",
     "instances_train2017"),
    (_set_bbox([15, 2, 10, 4]), "outside the 20x10 image", "instances_train2017"),
    (_set_bbox([-3, 2, 10, 4]), "outside the 20x10 image", "instances_train2017"),
    (_set_bbox([5, 2, 0, 4]), "zero or negative area", "instances_train2017"),
    (_set_bbox([5, 2, 10, -1]), "zero or negative area", "instances_train2017"),
    (_set_bbox([5, 2, 10]), r"must be \[x, y, w, h\]", "instances_train2017"),
    (_set_bbox([5, 2, float("nan"), 4]), r"must be \[x, y, w, h\]", "instances_train2017"),
    (lambda d: d["images"][0].update(height=12), "a.png: image is 20x10 but instances_train2017.json says 20x12", "a.png"),
    (lambda d: d["images"][0].pop("width"), "needs a positive whole 'width'", "instances_train2017"),
    (lambda d: d["images"][0].update(file_name="gone.png"), "image listed in instances_train2017.json is missing",
     "gone.png"),
    (lambda d: d.pop("annotations"), "missing the 'annotations' list", "instances_train2017"),
    (lambda d: d["categories"].append({"id": 3, "name": "x"}), "duplicate category id 3", "instances_train2017"),
])
def test_coco_bad_input_names_the_file(tmp_path, change, problem, names):
    file = _standard(tmp_path)
    _edit(file, change)
    with pytest.raises(DataError, match=problem) as e:
        open_source(f"coco:{file}", "detect")
    assert names in e.value.path


def test_coco_unparsable_json_and_category_clash(tmp_path):
    file = _standard(tmp_path)
    val = tmp_path / "annotations" / "instances_val2017.json"
    _edit(val, lambda d: d["categories"][0].update(name="eagle"))
    with pytest.raises(DataError, match="category id 7 is 'eagle' here but 'bird' in instances_train2017.json") as e:
        open_source(f"coco:{file}", "detect")
    assert e.value.path.endswith("instances_val2017.json")
    val.write_text('{"images": [')
    with pytest.raises(DataError, match="not valid JSON"):
        open_source(f"coco:{file}", "detect")


def test_coco_box_rounding_past_the_edge_is_clipped(tmp_path):
    file = _standard(tmp_path)
    _edit(file, _set_bbox([5, 2, 15.4, 4]))  # xmax 20.4 on a 20-wide image: within the slack
    src = open_source(f"coco:{file}", "detect")
    boxes = np.concatenate([e["boxes"].numpy() for s in ("train", "test") for e in src.examples(s)])
    assert boxes.max() <= 1.0 and np.isclose(boxes, [0.2, 0.25, 0.6, 1.0]).all(axis=1).any()


def test_coco_skip_bad_counts_what_it_skipped(tmp_path):
    file = _standard(tmp_path)

    def damage(d):
        d["annotations"][0]["bbox"] = [15, 2, 10, 4]  # a.png: outside
        d["annotations"].append({"id": 5000, "image_id": 999, "category_id": 1, "bbox": [1, 1, 2, 2]})
    _edit(file, damage)
    (tmp_path / "train2017" / "b.png").unlink()
    src = open_source(f"coco:{file}", "detect", skip_bad=True)
    assert sum(src.split_sizes.values()) == 1 + 6 - 2
    problems = sorted(s.problem for s in src.skipped)
    assert len(problems) == 3
    assert any("a.png" in p and "outside" in p for p in problems)
    assert any("unknown image_id 999" in p for p in problems)
    assert any(s.path.endswith("b.png") for s in src.skipped)


def test_coco_spec_errors(tmp_path):
    file = _standard(tmp_path)
    with pytest.raises(ConfigError, match="detection source"):
        open_source(f"coco:{file}", "classify")
    with pytest.raises(ConfigError, match="unknown option 'classes=cat'"):
        open_source(f"coco:{file},classes=cat", "detect")
    with pytest.raises(DataError, match="not found"):
        open_source(f"coco:{tmp_path / 'nope.json'}", "detect")
    with pytest.raises(DataError, match="images= folder not found"):
        open_source(f"coco:{file},images={tmp_path / 'nowhere'}", "detect")
