"""What a file source remembers between runs: one entry per image file, keyed by path, size and mtime.

    DATA_DIR/prepared/<kind>-<hash of the source's absolute path>/manifest.json

The manifest lives with the prepared data (``DATA_DIR``: $TFDS_DATA_DIR or ./data/tfds, the folder
`make train` prepares the built-in data into), never in the user's folder. An entry says whether the
file was readable (or the problem, word for word, so a rerun reports it without decoding), its
size as shown, the decoder that reproduces ``load_rgb`` for it, its EXIF orientation, and its
class (the folder it sits in). A file whose size or mtime changed, or a new one, is checked again;
the others are trusted, so a rerun on an unchanged folder decodes nothing.

Writers take an exclusive lock (``manifest.lock``, fcntl) and replace the file atomically (write to
a temporary name, then rename), so readers always see a whole manifest and two processes opening
the same folder at once (tuning workers) cannot corrupt it: the last complete write wins. A
manifest that cannot be read (another version, a disk error) is ignored and rebuilt. Each folder
also notes its source's path (``root.txt``); when a manifest is written, the prepared folders of
sources that no longer exist (temporary folders, deleted datasets) are removed.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

from common.run_folder import atomic_path

VERSION = 1
FILE_NAME = "manifest.json"
ROOT_NAME = "root.txt"


@dataclass(frozen=True)
class Entry:
    """One file as last checked. ``problem`` is None for a readable image; width, height (as
    shown), decoder and orientation are then ``images.inspect_image``'s."""

    size: int
    mtime_ns: int
    problem: str | None
    width: int = 0
    height: int = 0
    decoder: int = 0
    orientation: int = 1
    label: str = ""

    def matches(self, stat: os.stat_result) -> bool:
        return self.size == stat.st_size and self.mtime_ns == stat.st_mtime_ns

    def values(self) -> list:
        """The values in field order (``dataclasses.astuple`` deep-copies each: 30x slower on 100k files)."""
        return [getattr(self, name) for name in _FIELD_NAMES]


_FIELD_NAMES = tuple(f.name for f in fields(Entry))


def prepared_dir(data_dir: Path, kind: str, root: Path) -> Path:
    """Where ``kind`` (folder, voc, coco) keeps what it prepared for the source at ``root``."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return Path(data_dir) / "prepared" / f"{kind}-{digest}"


def load(directory: Path) -> dict[str, Entry]:
    """{absolute path: Entry}; {} when there is no readable manifest."""
    try:
        data = json.loads((Path(directory) / FILE_NAME).read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return {}
        return {path: Entry(*fields) for path, fields in data["files"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "manifest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save(directory: Path, root: Path, entries: dict[str, Entry]) -> None:
    """Write ``entries`` (every file the source holds now: removed files drop out) atomically,
    under the lock."""
    directory = Path(directory)
    body = {"version": VERSION, "root": str(root), "fields": list(_FIELD_NAMES),
            "files": {path: e.values() for path, e in sorted(entries.items())}}
    with _locked(directory):
        with atomic_path(directory / FILE_NAME) as tmp:
            tmp.write_text(json.dumps(body, separators=(",", ":")), encoding="utf-8")
        if not (directory / ROOT_NAME).is_file():
            with atomic_path(directory / ROOT_NAME) as tmp:
                tmp.write_text(str(root), encoding="utf-8")
    _prune(directory.parent, keep=directory)


def _prune(prepared: Path, keep: Path) -> None:
    """Remove the prepared folders (siblings of ``keep``) whose source no longer exists."""
    for other in prepared.iterdir():
        try:
            root = (other / ROOT_NAME).read_text(encoding="utf-8")
        except OSError:
            continue  # not ours, or being written
        if other != keep and root and not Path(root).exists():
            shutil.rmtree(other, ignore_errors=True)
