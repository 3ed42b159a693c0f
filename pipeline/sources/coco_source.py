"""`coco:FILE.json[,images=DIR]`: COCO instances annotations, for detection.

Splits: for ``instances_<split><suffix>.json`` (split: train, val, test) the sibling files with the
same suffix (``instances_train2017.json``, ``instances_val2017.json``, ...; when no sibling shares
the suffix, the only ``instances_<split>*.json``) are the splits; a missing validation or test is
carved from train with the seed. With no train file (or a file named otherwise) the one file is
split 80/10/10.

Images: ``images=DIR`` (looking in ``DIR/<split>/`` then ``DIR/``); else, beside the JSON file,
``<dir>/<split>/``, ``<dir>/images/``, ``<dir>/``, and for the usual ``annotations/`` folder the
same under its parent, then ``file_name`` as given; ``<split>`` is the file's name after
``instances_`` (``train2017``). The folder holding most of a sample of the images is used.

Labels: categories sorted by id map to contiguous indices 0..C-1 (ids need not be contiguous);
names from the train file's categories. ``bbox`` is [x, y, w, h] in pixels (0-based, continuous);
``iscrowd`` becomes the ``difficult`` flag. Images without annotations are background (N = 0).

Errors in the file's structure (not JSON, missing lists, duplicate image / annotation / category
ids) always stop: skipping cannot make them right. Per-sample errors (a missing or mis-sized
image, a bad box, an unknown category, an annotation for an unknown image) stop, or with
skip_bad are skipped and counted.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from common.errors import ConfigError, DataError
from pipeline.sources.annotation_files import (Annotated, detection_source, image_info, keep_or_skip, orientation_note,
                                               parallel)
from pipeline.sources.options import parse_options, split_spec
from pipeline.sources.schema import Skipped, Source
from pipeline.sources.splits import carve_splits

BOX_SLACK_PX = 1.0  # exported boxes may overshoot the image edge by rounding; within this they are clipped
_SPLIT_PREFIXES = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
_ROOT_SAMPLE = 20  # images checked to choose the image folder


def coco_box_to_normalized(x: float, y: float, w: float, h: float, width: int, height: int):
    """COCO pixel box [x, y, w, h] (top-left corner, size) -> normalized (ymin, xmin, ymax, xmax)."""
    return y / height, x / width, (y + h) / height, (x + w) / width


def coco_split_files(file: Path) -> dict[str, Path]:
    """The annotation file per split found beside ``file``: the same suffix, else the only file of that split;
    {"all": file} when there is no train file."""
    m = re.fullmatch(r"instances_(train|val|validation|test)(.*)\.json", file.name)
    if not m:
        return {"all": file}
    suffix = m.group(2)
    exact, loose = {}, {}
    for split, prefixes in _SPLIT_PREFIXES.items():
        same = [p for p in (file.parent / f"instances_{prefix}{suffix}.json" for prefix in prefixes) if p.is_file()]
        if same:
            exact[split] = same[0]
        others = sorted({p for prefix in prefixes for p in file.parent.glob(f"instances_{prefix}*.json")})
        if len(others) == 1:
            loose[split] = others[0]
    # Files of another suffix (another year) only stand in when none share this file's suffix.
    found = exact if len(exact) > 1 else {**loose, **exact}
    return found if "train" in found else {"all": file}


def _load(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(file, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(file, "not a COCO annotation file (expected a JSON object with images, annotations, categories)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(file, f"missing the {key!r} list of a COCO instances file")
    return data


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def coco_categories(data: dict, file: Path) -> dict[int, str]:
    """category id -> name, sorted by id."""
    cats = {}
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise DataError(file, f"categories[{k}] needs an integer 'id' and a string 'name'")
        if c["id"] in cats:
            raise DataError(file, f"duplicate category id {c['id']}")
        cats[c["id"]] = c["name"]
    if not cats:
        raise DataError(file, "no categories; a detector needs classes")
    return dict(sorted(cats.items()))


def _image_root(file: Path, split_name: str, images_opt: Path | None, file_names: list[str]) -> Path:
    here = file.parent
    if images_opt is not None:
        roots = [images_opt / split_name, images_opt]
    else:
        roots = [here / split_name, here / "images", here]
        if here.name == "annotations":
            roots += [here.parent / split_name, here.parent / "images", here.parent]
        roots.append(Path())  # file_name as given: absolute, or relative to the working directory
    sample = file_names[:_ROOT_SAMPLE]
    hits = [sum((root / n).is_file() for n in sample) for root in roots]
    if not sample:
        return roots[0]
    if max(hits) == 0:
        looked = ", ".join(str(r) if str(r) != "." else "as given" for r in roots)
        raise DataError(file, f"none of its images (e.g. {sample[0]}) found; looked in: {looked}; "
                              f"pass coco:{file},images=DIR")
    return roots[hits.index(max(hits))]


def _image_entry(k: int, im) -> str | None:
    if not isinstance(im, dict) or not _is_int(im.get("id")):
        return f"images[{k}] has no integer 'id'"
    if not isinstance(im.get("file_name"), str) or not im["file_name"]:
        return f"image id {im['id']} has no 'file_name'"
    for key in ("width", "height"):
        v = im.get(key)
        if not _is_num(v) or v <= 0 or v != int(v):
            return f"image id {im['id']} ({im['file_name']}) needs a positive whole '{key}', got {v!r}"
    return None


def _box_problem(ann: dict, width: int, height: int) -> str | None:
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_num(v) for v in bbox):
        return f"'bbox' must be [x, y, w, h] numbers, got {bbox!r}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {bbox} has zero or negative area"
    s = BOX_SLACK_PX
    if x < -s or y < -s or x + w > width + s or y + h > height + s:
        return f"bbox {bbox} is outside the {width}x{height} image"
    return None


def read_coco_split(file: Path, data: dict, index: dict[int, int], images_opt: Path | None) -> list:
    """One annotation file -> per image an ``Annotated`` or a ``DataError``, then a ``DataError`` per
    annotation that points at no image. Structural faults raise."""
    images, problems = {}, {}
    for k, im in enumerate(data["images"]):
        problem = _image_entry(k, im)
        if problem and not (isinstance(im, dict) and _is_int(im.get("id"))):
            raise DataError(file, problem)
        if im["id"] in images:
            raise DataError(file, f"duplicate image id {im['id']}")
        images[im["id"]] = im
        if problem:
            problems[im["id"]] = problem
    objects: dict[int, list[dict]] = {i: [] for i in images}
    seen, orphans = set(), []
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            raise DataError(file, f"annotations[{k}] has no integer 'id'")
        if ann["id"] in seen:
            raise DataError(file, f"duplicate annotation id {ann['id']}")
        seen.add(ann["id"])
        if ann.get("image_id") not in images:
            orphans.append(DataError(file, f"annotation id {ann['id']} refers to unknown "
                                           f"image_id {ann.get('image_id')!r}"))
            continue
        objects[ann["image_id"]].append(ann)
    good_names = [im["file_name"] for i, im in images.items() if i not in problems]
    m = re.fullmatch(r"instances_(.*)\.json", file.name)
    root = _image_root(file, m.group(1) if m else file.stem, images_opt, good_names)

    def one(image_id: int) -> Annotated:
        im = images[image_id]
        if image_id in problems:
            raise DataError(file, problems[image_id])
        width, height = int(im["width"]), int(im["height"])
        path = root / im["file_name"]
        boxes, labels, crowd = [], [], []
        for ann in objects[image_id]:
            where = f"annotation id {ann['id']} (image {im['file_name']})"
            if ann.get("category_id") not in index:
                raise DataError(file, f"{where} has unknown category_id {ann.get('category_id')!r}")
            problem = _box_problem(ann, width, height)
            if problem:
                raise DataError(file, f"{where}: {problem}")
            if ann.get("iscrowd", 0) not in (0, 1):
                raise DataError(file, f"{where}: 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
            boxes.append(np.clip(coco_box_to_normalized(*ann["bbox"], width, height), 0.0, 1.0))
            labels.append(index[ann["category_id"]])
            crowd.append(ann.get("iscrowd", 0) == 1)
        if not path.is_file():
            raise DataError(path, f"image listed in {file.name} is missing")
        info = image_info(path)
        if (info.width, info.height) != (width, height):
            raise DataError(path, f"image is {info.width}x{info.height}{orientation_note(info)} but {file.name} "
                                  f"says {width}x{height}")
        return Annotated(path, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int32),
                         np.array(crowd, bool), info.decoder, info.orientation)

    return parallel(one, list(images)) + orphans


def open_coco(spec: str, rest: str, *, seed: int = 0, skip_bad: bool = False,
             data_dir: Path | None = None) -> Source:
    path_text, option_text = split_spec(rest)
    if not path_text:
        raise ConfigError(f"DATA={spec}: coco: needs an annotation file, e.g. coco:annotations/instances_train2017.json")
    opts = parse_options(option_text, {"images": str}, spec)
    file = Path(path_text).expanduser()
    if not file.is_file():
        raise DataError(file, "not found" if not file.exists() else "not a file (coco: expects an instances .json)")
    images_opt = Path(opts["images"]).expanduser() if "images" in opts else None
    if images_opt is not None and not images_opt.is_dir():
        raise DataError(images_opt, "images= folder not found")
    files = coco_split_files(file)
    loaded = {split: _load(f) for split, f in files.items()}
    main = "train" if "train" in files else "all"
    categories = coco_categories(loaded[main], files[main])
    for split, f in files.items():
        if split != main:
            other = coco_categories(loaded[split], f)
            clash = [i for i in other if i in categories and other[i] != categories[i]]
            if clash:
                raise DataError(f, f"category id {clash[0]} is {other[clash[0]]!r} here but {categories[clash[0]]!r} "
                                   f"in {files[main].name}")
    index = {cat_id: k for k, cat_id in enumerate(categories)}
    skipped: list[Skipped] = []
    read = {split: keep_or_skip(read_coco_split(f, loaded[split], index, images_opt), skipped, skip_bad)
            for split, f in files.items()}
    data = carve_splits(read[main], {s: read[s] for s in ("validation", "test") if s in read}, seed)
    return detection_source(spec, list(categories.values()), data, skipped, file, kind="coco", skip_bad=skip_bad,
                            data_dir=data_dir)
