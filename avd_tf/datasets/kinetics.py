"""Kinetics (400, and 600/700 in the same format) from the annotation CSVs.

CSV header `label,youtube_id,time_start,time_end,split` (extra columns such
as `is_cc` are ignored). Our "train" split is train.csv and our "test" split
is validate.csv, the usual Kinetics evaluation since the test labels were not
public; test.csv is not read. The class list is the sorted set of labels in
the files read, so label strings (with spaces, parentheses, quotes) are read
with the csv module rather than split by hand.

Downloaded clips are conventionally named `<youtube_id>_<start:06d>_<end:06d>`
with any extension and may sit anywhere under the video folder, so an
entry's path is the bare `.mp4` file name and `avd_tf.datasets.resolve_path`
finds the file by name, or by stem for other extensions.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from avd_tf.datasets.base import DatasetSplits, SplitFileError, VideoEntry, unique_entries

# The first name found is used; the others are the names of older releases.
SPLIT_FILE_NAMES = {
    "train": ("train.csv", "kinetics_train.csv"),
    "test": ("validate.csv", "val.csv", "kinetics_val.csv"),
}
REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def clip_id(youtube_id: str, time_start: int, time_end: int) -> str:
    """The clip's id and file stem, as the common Kinetics downloaders name files."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def _seconds(text: str, column: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise SplitFileError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SplitFileError(f"{where}: {column} {text!r} is not a non-negative time")
    # Truncation matches the downloaders' "%06d" formatting of the CSV value.
    return int(value)


def read_csv(path: Path) -> list[tuple[str, str, int, int, str]]:
    """(label, youtube_id, start, end, "file:line") of each row of one CSV."""
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise SplitFileError(
                    f"{path}: header lacks column(s) {', '.join(missing)} (expected "
                    "label,youtube_id,time_start,time_end,split)"
                )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if any(row[c] is None for c in REQUIRED_COLUMNS):
                    raise SplitFileError(f"{where}: row has fewer columns than the header")
                label, youtube_id = row["label"].strip(), row["youtube_id"].strip()
                if not label or not youtube_id:
                    raise SplitFileError(f"{where}: empty label or youtube_id")
                start = _seconds(row["time_start"].strip(), "time_start", where)
                end = _seconds(row["time_end"].strip(), "time_end", where)
                rows.append((label, youtube_id, start, end, where))
    except csv.Error as e:
        raise SplitFileError(f"{path}: malformed CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise SplitFileError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    return rows


def find_split_files(split_dir: str | os.PathLike) -> dict[str, Path]:
    """Our split name -> the CSV that provides it, for the CSVs present."""
    split_dir = Path(split_dir)
    expected = "train.csv and/or validate.csv (header label,youtube_id,time_start,time_end,split)"
    if not split_dir.is_dir():
        raise SplitFileError(f"{split_dir}: Kinetics split folder not found (expected {expected})")
    found = {}
    for split, names in SPLIT_FILE_NAMES.items():
        for name in names:
            if (split_dir / name).is_file():
                found[split] = split_dir / name
                break
    if not found:
        raise SplitFileError(f"{split_dir}: no Kinetics CSV found (expected {expected})")
    return found


def load_kinetics(split_dir: str | os.PathLike) -> DatasetSplits:
    """Reads train.csv (-> "train") and validate.csv (-> "test") of `split_dir`.

    Either may be absent (its split is then empty), not both.
    """
    rows = {split: read_csv(path) for split, path in find_split_files(split_dir).items()}
    classes = sorted({row[0] for split_rows in rows.values() for row in split_rows})
    label_of = {name: label for label, name in enumerate(classes)}
    splits = {}
    for split in SPLIT_FILE_NAMES:
        entries = []
        for name, youtube_id, start, end, where in rows.get(split, ()):
            video_id = clip_id(youtube_id, start, end)
            entries.append((VideoEntry(f"{video_id}.mp4", label_of[name], name, video_id), where))
        splits[split] = unique_entries(entries)
    return DatasetSplits(classes=classes, splits=splits)
