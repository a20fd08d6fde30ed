"""HMDB51 from the official `testTrainMulti_7030_splits` folder.

One file per class and split, `<class>_test_split{1,2,3}.txt`, each line
"<video file name> <0|1|2>": 1 = train, 2 = test, 0 = unused in that split.
Class names contain underscores ("brush_hair", "climb_stairs"), so the class
is the file name minus the `_test_splitN.txt` suffix. Videos sit in
`<class>/<file>` under the video folder, as the per-class archives unpack.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from avd_tf.datasets.base import (
    DatasetSplits,
    SplitFileError,
    VideoEntry,
    check_split,
    read_lines,
    unique_entries,
)

_SPLIT_FILE = re.compile(r"(?P<cls>.+)_test_split(?P<split>[123])\.txt")
_ROLES = {"1": "train", "2": "test"}


def split_files(split_dir: str | os.PathLike, split: int) -> dict[str, Path]:
    """Class name -> its split file for split `split`, sorted by class name."""
    check_split(split, "HMDB51")
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise SplitFileError(
            f"{split_dir}: HMDB51 split folder not found (expected "
            "<class>_test_split1.txt ... <class>_test_split3.txt files)"
        )
    files = {}
    for path in split_dir.iterdir():
        match = _SPLIT_FILE.fullmatch(path.name)
        if match and int(match["split"]) == split:
            files[match["cls"]] = path
    if not files:
        raise SplitFileError(f"{split_dir}: no <class>_test_split{split}.txt files")
    return dict(sorted(files.items()))


def load_hmdb51(split_dir: str | os.PathLike, split: int = 1) -> DatasetSplits:
    """Reads HMDB51 split `split` (1-3); labels follow the sorted class names."""
    files = split_files(split_dir, split)
    classes = list(files)
    entries: dict[str, list[tuple[VideoEntry, str]]] = {"train": [], "test": []}
    for label, (name, path) in enumerate(files.items()):
        for lineno, text in read_lines(path):
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise SplitFileError(
                    f"{path}:{lineno}: expected '<video file> <0|1|2>', got {text!r}"
                )
            role = _ROLES.get(parts[1])
            if role is None:
                continue
            file_name = PurePosixPath(parts[0])
            if len(file_name.parts) != 1:
                raise SplitFileError(
                    f"{path}:{lineno}: expected a bare file name, got {parts[0]!r}"
                )
            entry = VideoEntry(f"{name}/{file_name}", label, name, file_name.stem)
            entries[role].append((entry, f"{path}:{lineno}"))
    return DatasetSplits(
        classes=classes, splits={role: unique_entries(items) for role, items in entries.items()}
    )
