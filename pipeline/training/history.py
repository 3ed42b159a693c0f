"""The per-epoch history that Keras' CSVLogger writes, read as far as it is valid.

The file is appended to across runs of one training (``CSVLogger(append=True)`` on resume), so
it can hold what no single clean run writes: two headers (two commands that started at once),
a torn last line (a kill or a full disk mid-write), and rows of an epoch that was run again
after a resume. None of that may make the run unrecoverable, so reading skips what is not a
valid row instead of raising, and ``repair_history`` rewrites the file to its valid rows
before training appends to it again.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.run_folder import atomic_path

# CSVLogger writes "NA" for val_* columns when there is no validation data; an empty field is
# what an older Keras wrote for the same.
_MISSING = ("", "NA")
# What csv.DictWriter (the excel dialect, as CSVLogger uses it) ends lines with; repair writes the same.
_NEWLINE = "\r\n"
# Only the line ends a CSV writer makes; str.splitlines would also split on form feeds and the like.
_LINE_END = re.compile(r"\r\n|\r|\n")
# int() would also take " 3", "+3" and "3_0", none of which CSVLogger writes.
_EPOCH = re.compile(r"\d+")


@dataclass
class _Parsed:
    header: list[str] | None = None      # the first valid header's column names
    header_line: str = ""                # ... and its text, as it was in the file
    rows: list[tuple[str, list[str]]] = field(default_factory=list)  # (text, fields) of valid rows
    dropped: int = 0                     # lines that are neither the header nor a valid row
    terminated: bool = True              # the file is empty or ends with a line end


def read_history(csv_path: Path) -> dict[str, list[float]]:
    """Per-epoch metrics from the CSV log: ``{column: [value per epoch, in epoch order]}``.

    A resumed epoch's row replaces the earlier one. Columns that are missing ("NA") in every
    row are left out; a missing value in a kept column is NaN. Lines that are not valid rows
    (repeated headers, blank or garbage lines, a torn last line) are skipped, never raised on;
    a missing file, or one without a header, gives ``{}``.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        return {}
    parsed = _parse(csv_path)
    if parsed.header is None:
        return {}
    by_epoch = {int(fields[0]): fields for _, fields in parsed.rows}
    epochs = sorted(by_epoch)
    columns = [(i, name) for i, name in enumerate(parsed.header)
               if i > 0 and any(by_epoch[e][i] not in _MISSING for e in epochs)]
    return {name: [math.nan if by_epoch[e][i] in _MISSING else float(by_epoch[e][i]) for e in epochs]
            for i, name in columns}


def repair_history(csv_path: Path) -> int:
    """Rewrite the CSV log to one header and its valid rows, atomically; return how many lines it dropped.

    Run it before training appends to the file again: CSVLogger(append=True) appends to whatever
    is there, so a torn last line would glue onto the next epoch's row and both would be lost.
    Every valid row is kept, in its order (an epoch's later row still replaces its earlier one
    when read), with its text unchanged. A file with nothing to drop that ends with a line end
    is left untouched; a missing file stays missing. Without a valid header nothing can be kept:
    the file is emptied, and CSVLogger writes a fresh header into it.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        return 0
    parsed = _parse(csv_path)
    if parsed.dropped == 0 and parsed.terminated:
        return 0
    lines = ([parsed.header_line] + [text for text, _ in parsed.rows]) if parsed.header is not None else []
    with atomic_path(csv_path) as tmp:
        # newline="" writes the line ends as given, like CSVLogger's own writer.
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write("".join(line + _NEWLINE for line in lines))
    return parsed.dropped


def _parse(csv_path: Path) -> _Parsed:
    """Sort the file's lines into the header, valid rows and dropped lines.

    The header is the first line whose first field is ``epoch``, whose column names are distinct
    and not numbers (a header torn and glued onto a row is not a header), and that is not a last
    line without its line end. A valid row comes after it, has as many fields as it, a
    whole-number epoch, and a number or "NA" in every other field. Everything else is dropped:
    repeated headers, rows before any header, blank lines, garbage, a torn line (too few or too
    many fields, a value cut into a non-number). A whole last row without its line end is kept:
    nothing in it is known to be wrong, and repair_history gives it its line end.
    """
    # Bytes decoded leniently: a torn multi-byte character or a block of NULs from a crash is
    # garbage to skip, not a UnicodeDecodeError.
    text = csv_path.read_bytes().decode("utf-8", "replace")
    parsed = _Parsed(terminated=not text or text.endswith(("\n", "\r")))
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":  # what follows the last line end is not a line
        lines.pop()
    for n, line in enumerate(lines, 1):
        fields = _fields(line)
        # CSVLogger flushes its header together with the first row, so a header that ends the file
        # without a line end was cut short ("epoch,lo"): kept, it would make every later row too long.
        whole = n < len(lines) or parsed.terminated
        if fields and fields[0] == "epoch" and parsed.header is None and whole and _is_header(fields):
            parsed.header, parsed.header_line = fields, line
        elif parsed.header is not None and _is_row(fields, len(parsed.header)):
            parsed.rows.append((line, fields))
        else:
            parsed.dropped += 1
    return parsed


def _fields(line: str) -> list[str]:
    if not line.strip() or "\x00" in line:
        return []
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return []


def _is_header(fields: list[str]) -> bool:
    return all(fields) and len(set(fields)) == len(fields) and not any(_is_number(f) for f in fields)


def _is_row(fields: list[str], width: int) -> bool:
    return (len(fields) == width and _EPOCH.fullmatch(fields[0]) is not None
            and all(v in _MISSING or _is_number(v) for v in fields[1:]))


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
