"""`voc:PATH[,classes=NAME,NAME...]`: a Pascal VOC tree, for detection.

Layout (PATH may also be a folder holding one ``VOC*/`` or ``VOCdevkit/VOC*/`` tree)::

    PATH/Annotations/<id>.xml          <size>, <object><name>, <bndbox>, optional <difficult>
    PATH/JPEGImages/<id>.jpg           (the XML's <filename>, else <id> with any image extension)
    PATH/ImageSets/Main/<split>.txt    train, val, test, trainval: one image id a line

Splits: ``train.txt`` / ``val.txt`` / ``test.txt`` are used as given (val -> validation). Without
train.txt, train is ``trainval.txt`` less the val / test ids. A missing validation or test is carved
from train with the seed; without any split file every annotation is used, split 80/10/10.

Label names are the class names found in the training annotations (the pool the train split
comes from), sorted, as written (case kept); or exactly ``classes=`` in the order given. A class
in another split that is not among them is an error. ``difficult`` objects are kept and flagged.

Every annotation is parsed, every image's header read and every image decoded once up front (in
parallel, in-graph; annotation_files._checked_pixels, remembered in a manifest beside the prepared
data), so a bad sample is reported (or, with skip_bad, skipped and counted) before anything is
written; the training pixels are decoded again in the first epoch, in tf.data.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError, DataError
from pipeline.sources.images import IMAGE_EXTENSIONS
from pipeline.sources.annotation_files import (Annotated, detection_source, image_info, keep_or_skip, orientation_note,
                                               parallel)
from pipeline.sources.options import parse_options, split_spec
from pipeline.sources.schema import SPLITS, Skipped, Source
from pipeline.sources.splits import carve_splits

_VOC_SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}


def voc_box_to_normalized(xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int):
    """VOC pixel box (1-based, inclusive: a box covering only the first pixel is 1, 1, 1, 1) ->
    normalized (ymin, xmin, ymax, xmax). The first pixel spans 0..1/width, so xmin - 1 and xmax."""
    return (ymin - 1) / height, (xmin - 1) / width, ymax / height, xmax / width


@dataclass(frozen=True)
class _Parsed:
    """One annotation file, class names not yet turned into indices."""

    xml: Path
    image: Path
    names: tuple[str, ...]
    boxes: np.ndarray
    difficult: np.ndarray
    decoder: int
    orientation: int


def _text(node: ET.Element, tag: str, xml: Path, where: str = "") -> str:
    el = node.find(tag)
    if el is None or not (el.text or "").strip():
        raise DataError(xml, f"missing <{tag}>{where}")
    return el.text.strip()


def _number(node: ET.Element, tag: str, xml: Path, where: str = "") -> float:
    text = _text(node, tag, xml, where)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(xml, f"<{tag}>{where} is not a number: {text!r}")
    return value


def _find_image(images_dir: Path, image_id: str, filename: str | None) -> Path:
    candidates = ([images_dir / filename] if filename else []) + [images_dir / (image_id + e) for e in IMAGE_EXTENSIONS]
    for p in candidates:
        if p.is_file():
            return p
    raise DataError(candidates[0], f"image for annotation {image_id}.xml is missing")


def parse_voc_xml(xml: Path, images_dir: Path) -> _Parsed:
    """Parse and check one annotation file against its image's header.

    Raises DataError naming the file: unparsable XML, a missing field, a box of zero or negative
    area or outside the image, <size> not matching the image, a missing image.
    """
    if not xml.is_file():
        raise DataError(xml, "annotation file is missing (its id is listed in a split file)")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise DataError(xml, f"not valid XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise DataError(xml, "missing <size>")
    width, height = _number(size, "width", xml, " in <size>"), _number(size, "height", xml, " in <size>")
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise DataError(xml, f"<size> must be positive whole pixels, got {width:g}x{height:g}")
    width, height = int(width), int(height)
    filename = root.findtext("filename")
    image = _find_image(images_dir, xml.stem, filename.strip() if filename and filename.strip() else None)
    info = image_info(image)
    if (info.width, info.height) != (width, height):
        raise DataError(xml, f"<size> says {width}x{height} but {image.name} is {info.width}x{info.height}"
                             f"{orientation_note(info)}")
    names, boxes, difficult = [], [], []
    for k, obj in enumerate(root.findall("object"), start=1):
        name = _text(obj, "name", xml, f" in object {k}")
        where = f" in object {k} ({name})"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(xml, f"missing <bndbox>{where}")
        xmin, ymin, xmax, ymax = (_number(bnd, t, xml, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        box = f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}"
        if xmax - xmin + 1 <= 0 or ymax - ymin + 1 <= 0:
            raise DataError(xml, f"{box}{where} has zero or negative area")
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise DataError(xml, f"{box}{where} is outside the {width}x{height} image "
                                 f"(VOC pixels are 1-based: 1..width, 1..height)")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise DataError(xml, f"<difficult>{where} must be 0 or 1, got {flag!r}")
        names.append(name)
        boxes.append(voc_box_to_normalized(xmin, ymin, xmax, ymax, width, height))
        difficult.append(flag == "1")
    return _Parsed(xml, image, tuple(names), np.array(boxes, np.float32).reshape(-1, 4), np.array(difficult, bool),
                   info.decoder, info.orientation)


def _voc_root(path: Path) -> Path:
    if not path.exists():
        raise DataError(path, "not found")
    if not path.is_dir():
        raise DataError(path, "not a folder (voc: expects a Pascal VOC tree with Annotations/ and JPEGImages/)")
    if (path / "Annotations").is_dir():
        return path
    nested = [p for p in (*path.glob("VOC*"), *path.glob("VOCdevkit/VOC*")) if (p / "Annotations").is_dir()]
    if len(nested) == 1:
        return nested[0]
    if nested:
        raise DataError(path, f"several VOC trees inside ({', '.join(sorted(p.name for p in nested))}); point voc: at one")
    raise DataError(path, "no Annotations/ folder (expected PATH/Annotations/*.xml and PATH/JPEGImages/)")


def _read_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def voc_split_ids(root: Path, seed: int) -> tuple[dict[str, list[str]], list[str]]:
    """Image ids per split, and the pool the train split was drawn from (its classes name the labels).

    The pool is train.txt, else trainval.txt, else every annotation, less the ids that val.txt /
    test.txt hold out; a held-out split without a file is carved from the pool.
    """
    sets = root / "ImageSets" / "Main"
    files = {name: sets / f"{name}.txt" for name in ("train", "val", "test", "trainval")}
    have = {name: _read_ids(f) for name, f in files.items() if f.is_file()}
    held = {split: have[name] for split, name in _VOC_SPLIT_FILES.items() if split != "train" and name in have}
    if "train" in have:
        pool = have["train"]
        for split, ids in held.items():
            shared = sorted(set(pool) & set(ids))
            if shared:
                raise DataError(files[_VOC_SPLIT_FILES[split]], f"{len(shared)} image id(s) also in train.txt "
                                                               f"(e.g. {shared[0]}); splits must not overlap")
    else:
        if "trainval" in have:
            base = have["trainval"]
        else:
            base = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
            if not base:
                raise DataError(root / "Annotations", "no .xml annotation files")
        listed = {i for ids in held.values() for i in ids}
        pool = [i for i in base if i not in listed]
    return carve_splits(pool, held, seed), pool


def open_voc(spec: str, rest: str, *, seed: int = 0, skip_bad: bool = False,
             data_dir: Path | None = None) -> Source:
    path_text, option_text = split_spec(rest)
    if not path_text:
        raise ConfigError(f"DATA={spec}: voc: needs a path, e.g. voc:~/VOCdevkit/VOC2007")
    opts = parse_options(option_text, {"classes": str}, spec, lists=("classes",))
    classes = opts.get("classes")
    if classes is not None and (len(set(classes)) != len(classes) or "" in classes):
        raise ConfigError(f"DATA={spec}: classes= must list distinct, non-empty names")
    root = _voc_root(Path(path_text).expanduser())
    splits, pool = voc_split_ids(root, seed)
    ids = sorted({i for split in splits.values() for i in split})
    skipped: list[Skipped] = []
    parsed = parallel(lambda i: parse_voc_xml(root / "Annotations" / f"{i}.xml", root / "JPEGImages"), ids)
    by_id = {i: p for i, p in zip(ids, parsed)}
    keep_or_skip(parsed, skipped, skip_bad)  # raise on the first bad file, or record each; by_id keeps the rest
    if classes is not None:
        label_names, source_of_names = list(classes), "the classes= list"
    else:
        pool_set = set(pool)
        label_names = sorted({n for i, p in by_id.items() if i in pool_set and isinstance(p, _Parsed) for n in p.names})
        source_of_names = "the training classes"
        if not label_names:
            raise DataError(root / "Annotations", "the training annotations have no objects; a detector needs classes")
    index = {n: k for k, n in enumerate(label_names)}

    def to_record(p: _Parsed) -> Annotated | DataError:
        unknown = sorted(set(p.names) - set(index))
        if unknown:
            return DataError(p.xml, f"class(es) {unknown} not among {source_of_names} {label_names}")
        return Annotated(p.image, p.boxes, np.array([index[n] for n in p.names], np.int32).reshape(-1), p.difficult,
                         p.decoder, p.orientation)

    data = {}
    for split in SPLITS:
        records = [to_record(by_id[i]) for i in splits[split] if isinstance(by_id[i], _Parsed)]
        data[split] = keep_or_skip(records, skipped, skip_bad)
    return detection_source(spec, label_names, data, skipped, root, kind="voc", skip_bad=skip_bad, data_dir=data_dir)
