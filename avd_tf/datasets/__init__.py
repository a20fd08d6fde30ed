"""Dataset split readers: labelled video files per split.

`load_dataset` reads UCF101, HMDB51 or Kinetics split files, or any folder
of class sub-folders, into `DatasetSplits` (0-based labels, entry paths
relative to the video folder). `resolve_path` finds an entry's file on disk,
tolerating the case and extension differences real copies of the data sets
have.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
from pathlib import PurePosixPath

from avd_tf.datasets.base import DatasetSplits, SplitFileError, VideoEntry
from avd_tf.datasets.folder import VIDEO_EXTENSIONS, is_video_file, load_folder
from avd_tf.datasets.hmdb51 import load_hmdb51
from avd_tf.datasets.kinetics import load_kinetics
from avd_tf.datasets.ucf101 import load_ucf101

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "SplitFileError",
    "VIDEO_EXTENSIONS",
    "VideoEntry",
    "clear_path_cache",
    "load_dataset",
    "load_folder",
    "load_hmdb51",
    "load_kinetics",
    "load_ucf101",
    "resolve_path",
]

DATASETS = ("ucf101", "hmdb51", "kinetics", "folder")
_SPLIT_FILES = {
    "ucf101": "classInd.txt, trainlist0N.txt and testlist0N.txt (UCF101's ucfTrainTestlist)",
    "hmdb51": "<class>_test_split1.txt ... <class>_test_split3.txt (HMDB51's test_train_splits)",
    "kinetics": "train.csv and/or validate.csv (Kinetics annotations)",
}


def load_dataset(
    name: str,
    video_dir: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    split: int = 1,
    test_fraction: float = 0.3,
) -> DatasetSplits:
    """Reads the splits of data set `name`, one of `DATASETS`.

    "ucf101" and "hmdb51" read official split `split` (1-3) from `split_dir`,
    "kinetics" reads the CSVs in `split_dir`, and "folder" scans `video_dir`
    (its split folders, or a `test_fraction` hash split).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "folder":
        if video_dir is None:
            raise ValueError("data set 'folder' needs video_dir: a folder of class sub-folders")
        return load_folder(video_dir, test_fraction=test_fraction)
    if split_dir is None:
        raise ValueError(
            f"data set {name!r} needs split_dir: the folder with {_SPLIT_FILES[name]}"
        )
    if name == "ucf101":
        return load_ucf101(split_dir, split=split)
    if name == "hmdb51":
        return load_hmdb51(split_dir, split=split)
    return load_kinetics(split_dir)


@dataclasses.dataclass
class _FolderIndex:
    """Every file under a video folder, keyed the ways `resolve_path` looks up."""

    by_path_lower: dict[str, list[str]]
    by_folder_stem_lower: dict[tuple[str, str], list[str]]
    by_name: dict[str, list[str]]
    by_stem: dict[str, list[str]]


@functools.lru_cache(maxsize=16)
def _folder_index(root: str) -> _FolderIndex:
    index = _FolderIndex(*(collections.defaultdict(list) for _ in range(4)))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # Sorted walk: when several files match, the first is the same on every run.
        dirnames.sort()
        rel_dir = PurePosixPath(os.path.relpath(dirpath, root).replace(os.sep, "/"))
        for name in sorted(filenames):
            rel = rel_dir / name
            index.by_path_lower[str(rel).lower()].append(str(rel))
            index.by_name[name].append(str(rel))
            if is_video_file(name):
                folder_stem = (str(rel_dir).lower(), rel.stem.lower())
                index.by_folder_stem_lower[folder_stem].append(str(rel))
                index.by_stem[rel.stem].append(str(rel))
    return index


def resolve_path(video_dir: str | os.PathLike, entry: VideoEntry) -> str | None:
    """The absolute path of `entry`'s file under `video_dir`, or None if missing.

    The path as listed is tried first. Then, for entries with a folder
    (UCF101, HMDB51, folder data sets), the same path with any letter case
    (HandstandPushups vs HandStandPushups), then the same stem with any video
    extension in that folder. For bare file names (Kinetics) the name is
    looked up anywhere under `video_dir`, then the stem with any video
    extension; case must match there, since YouTube ids are case-sensitive.

    The fallbacks use an index of `video_dir` built on first need and cached
    (per folder, for the process), so resolving many entries walks the folder
    once; call `clear_path_cache` after moving files around.
    """
    root = os.path.abspath(video_dir)
    listed = os.path.join(root, *PurePosixPath(entry.path).parts)
    if os.path.isfile(listed):
        return listed
    if not os.path.isdir(root):
        return None
    index = _folder_index(root)
    rel = PurePosixPath(entry.path)
    if len(rel.parts) > 1:
        candidates = index.by_path_lower.get(str(rel).lower()) or index.by_folder_stem_lower.get(
            (str(rel.parent).lower(), rel.stem.lower())
        )
    else:
        candidates = index.by_name.get(rel.name) or index.by_stem.get(rel.stem)
    if not candidates:
        return None
    return os.path.join(root, *PurePosixPath(candidates[0]).parts)


def clear_path_cache() -> None:
    """Forgets the folder indexes `resolve_path` built."""
    _folder_index.cache_clear()
