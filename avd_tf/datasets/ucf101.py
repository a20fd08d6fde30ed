"""UCF101 from the official `ucfTrainTestlist` folder.

Files: `classInd.txt` ("1 ApplyEyeMakeup", 1-based), `trainlist0N.txt`
("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1") and `testlist0N.txt` (path
only; the label comes from the class folder), N = 1, 2, 3.

The real files have CRLF line endings, and classInd names "HandstandPushups"
while the videos are "v_HandStandPushups_*.avi" (and some copies of the data
set spell the folder "HandStandPushups" too). So class names are matched
case-insensitively, entry paths are kept as listed, and
`avd_tf.datasets.resolve_path` finds the file on disk whatever its case.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from avd_tf.datasets.base import (
    DatasetSplits,
    SplitFileError,
    VideoEntry,
    check_split,
    read_lines,
    unique_entries,
)

CLASS_INDEX_FILE = "classInd.txt"


def split_file_names(split: int) -> dict[str, str]:
    """The list file of each of our splits ("train", "test") for UCF101 split N."""
    check_split(split, "UCF101")
    return {"train": f"trainlist{split:02d}.txt", "test": f"testlist{split:02d}.txt"}


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names in label order (label = classInd index - 1)."""
    by_index: dict[int, tuple[str, int]] = {}
    for lineno, text in read_lines(path):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SplitFileError(f"{path}:{lineno}: expected '<index> <ClassName>', got {text!r}")
        index = int(parts[0])
        if index in by_index:
            raise SplitFileError(
                f"{path}:{lineno}: index {index} already used at line {by_index[index][1]}"
            )
        by_index[index] = (parts[1], lineno)
    if not by_index:
        raise SplitFileError(f"{path}: no classes listed")
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise SplitFileError(
            f"{path}: class indices must run 1..{len(by_index)} without gaps, "
            f"got {min(by_index)}..{max(by_index)}"
        )
    classes = [by_index[i][0] for i in range(1, len(by_index) + 1)]
    seen: dict[str, int] = {}
    for i, name in enumerate(classes, start=1):
        if name.lower() in seen:
            raise SplitFileError(
                f"{path}:{by_index[i][1]}: class {name!r} repeats index {seen[name.lower()]} "
                "(class names are compared case-insensitively)"
            )
        seen[name.lower()] = i
    return classes


def read_video_list(path: str | os.PathLike, classes: list[str]) -> list[VideoEntry]:
    """Entries of one train/test list.

    A trailing label is optional (test lists have none); when present it must
    name the same class as the folder. A folder that is not in classInd gives
    label -1 so that the preparation program can report the video instead of
    crashing; with an explicit label it is an error, as the two disagree.
    """
    by_lower = {name.lower(): label for label, name in enumerate(classes)}
    entries = []
    for lineno, text in read_lines(path):
        parts = text.split()
        where = f"{path}:{lineno}"
        if len(parts) not in (1, 2) or (len(parts) == 2 and not parts[1].isdigit()):
            raise SplitFileError(f"{where}: expected '<Class>/<file> [label]', got {text!r}")
        rel = PurePosixPath(parts[0])
        if len(rel.parts) != 2:
            raise SplitFileError(f"{where}: expected a '<Class>/<file>' path, got {parts[0]!r}")
        folder = rel.parts[0]
        label = by_lower.get(folder.lower(), -1)
        if len(parts) == 2:
            listed = int(parts[1])
            if not 1 <= listed <= len(classes):
                raise SplitFileError(
                    f"{where}: label {listed} is outside {CLASS_INDEX_FILE}'s 1..{len(classes)}"
                )
            if listed - 1 != label:
                raise SplitFileError(
                    f"{where}: label {listed} is {classes[listed - 1]!r} in {CLASS_INDEX_FILE} "
                    f"but the video's folder is {folder!r}"
                )
        name = classes[label] if label >= 0 else folder
        entries.append((VideoEntry(rel.as_posix(), label, name, rel.stem), where))
    return unique_entries(entries)


def load_ucf101(split_dir: str | os.PathLike, split: int = 1) -> DatasetSplits:
    """Reads UCF101 split `split` (1-3) from the `ucfTrainTestlist` folder."""
    names = split_file_names(split)
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise SplitFileError(
            f"{split_dir}: UCF101 split folder not found (expected {CLASS_INDEX_FILE}, "
            "trainlist0N.txt and testlist0N.txt from ucfTrainTestlist)"
        )
    classes = read_class_index(split_dir / CLASS_INDEX_FILE)
    splits = {key: read_video_list(split_dir / name, classes) for key, name in names.items()}
    return DatasetSplits(classes=classes, splits=splits)
