"""The CSVLogger history read as far as it is valid, and repaired before training appends to it."""
from __future__ import annotations

import math

from pipeline.training.history import read_history, repair_history

HEADER = "epoch,accuracy,loss,val_accuracy,val_loss"

# What two CSVLoggers started at once, a kill mid-row and a resume leave behind (CSVLogger ends lines with \r\n).
TORN_LINES = [
    HEADER,
    HEADER,                           # the second command's header
    "0,0.5,1.5,NA,NA",
    "1,0.6,1.25,NA,NA",
    "",                               # blank
    "\x00\x00garbage,,,",             # garbage
    "one,0.7,1.0,NA,NA",              # epoch not a whole number
    "1,0.625,1.125,NA,NA",            # epoch 1 run again after a resume: replaces the row above
    "2,0.75,1.0,NA,0.5,0.25",         # too many fields (a torn row glued to the next)
    "2,0.75,0.875,NA,NA",
]
TORN_TAIL = "3,0.8,0.7"              # the last row cut short by a kill: fewer fields, no line end
VALID = [HEADER, "0,0.5,1.5,NA,NA", "1,0.6,1.25,NA,NA", "1,0.625,1.125,NA,NA", "2,0.75,0.875,NA,NA"]


def _write(path, lines, tail=""):
    path.write_bytes(("".join(line + "\r\n" for line in lines) + tail).encode())


def test_read_skips_what_is_not_a_valid_row(tmp_path):
    csv_path = tmp_path / "history.csv"
    _write(csv_path, TORN_LINES, TORN_TAIL)
    # val_* columns that are "NA" in every row are left out, as before.
    assert read_history(csv_path) == {"accuracy": [0.5, 0.625, 0.75], "loss": [1.5, 1.125, 0.875]}


def test_read_values_cut_into_non_numbers_and_partly_missing_columns(tmp_path):
    csv_path = tmp_path / "history.csv"
    _write(csv_path, [HEADER, "0,0.5,1.5,0.25,2.0", "1,0.625,1.25,NA,NA", "2,0.75,1.0,0.5,1e-"],
           "2,0.75,1.0,0.5,")              # two cut-off values, the second with no line end
    history = read_history(csv_path)
    assert list(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert history["accuracy"] == [0.5, 0.625, 0.75]
    assert history["loss"] == [1.5, 1.25, 1.0]
    assert history["val_accuracy"][0] == 0.25 and math.isnan(history["val_accuracy"][1])
    assert history["val_accuracy"][2] == 0.5
    assert history["val_loss"][0] == 2.0 and math.isnan(history["val_loss"][1]) and math.isnan(history["val_loss"][2])


def test_read_missing_empty_headerless_and_non_utf8(tmp_path):
    csv_path = tmp_path / "history.csv"
    assert read_history(csv_path) == {}
    csv_path.write_text("")
    assert read_history(csv_path) == {}
    csv_path.write_text("0,0.5,1.5\n1,0.6,1.2\n")  # rows without a header cannot be read
    assert read_history(csv_path) == {}
    csv_path.write_bytes(b"epoch,loss\r\n0,1.5\r\n\xff\xfe\x80,\r\n1,1.25\r\n")
    assert read_history(csv_path) == {"loss": [1.5, 1.25]}


def test_repair_keeps_one_header_and_the_valid_rows(tmp_path):
    csv_path = tmp_path / "history.csv"
    _write(csv_path, TORN_LINES, TORN_TAIL)
    before = read_history(csv_path)

    # Dropped: the second header, the blank, garbage, non-integer-epoch and glued lines, and the torn tail.
    assert repair_history(csv_path) == 6
    assert csv_path.read_bytes() == "".join(line + "\r\n" for line in VALID).encode()
    assert read_history(csv_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]  # no temporary left beside it

    # What CSVLogger(append=True) then appends starts on a line of its own, and reads back.
    with open(csv_path, "a", newline="") as f:
        f.write("3,0.875,0.625,NA,NA\r\n")
    assert read_history(csv_path) == {"accuracy": [0.5, 0.625, 0.75, 0.875], "loss": [1.5, 1.125, 0.875, 0.625]}
    assert repair_history(csv_path) == 0


def test_repair_ends_a_valid_last_line_and_leaves_clean_files_alone(tmp_path):
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,loss\n0,1.5\n1,1.25")  # a whole last row without its line end
    assert repair_history(csv_path) == 0
    assert csv_path.read_bytes() == b"epoch,loss\r\n0,1.5\r\n1,1.25\r\n"

    clean = tmp_path / "clean.csv"
    clean.write_text("epoch,loss\n0,1.5\n")
    mtime = clean.stat().st_mtime_ns
    assert repair_history(clean) == 0
    assert clean.read_text() == "epoch,loss\n0,1.5\n" and clean.stat().st_mtime_ns == mtime


def test_repair_without_a_header_empties_the_file_and_missing_stays_missing(tmp_path):
    csv_path = tmp_path / "history.csv"
    assert repair_history(csv_path) == 0
    assert not csv_path.exists()
    csv_path.write_text("epoch,lo")  # the header itself cut short: CSVLogger must write a new one
    assert repair_history(csv_path) == 1
    assert csv_path.read_bytes() == b""
    assert read_history(csv_path) == {}
