"""Any folder of class sub-folders as a data set.

Either `<video_dir>/train/<class>/...` plus `<video_dir>/test/<class>/...`
(`val/` or `validation/` also count as the test split; `test/` wins when
several exist), or `<video_dir>/<class>/...` split by a hash of each file's
relative path. The hash is SHA-1, not Python's `hash()`, whose string hashes
change between processes: a video must stay on the same side of the split
every time the data set is read, on every machine.

Our choices where the layout leaves room: videos may sit in nested folders
inside a class folder; hidden files and folders (".DS_Store", macOS "._x.mp4"
resource forks) are skipped; a class is a folder that holds at least one
video.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from avd_tf.datasets.base import DatasetSplits, SplitFileError, VideoEntry

VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv"}
)
TRAIN_FOLDER = "train"
TEST_FOLDERS = ("test", "val", "validation")


def is_video_file(name: str) -> bool:
    """True for a visible file name with a video extension (any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def hash_share(relative_path: str) -> float:
    """A stable number in [0, 1) for a '/'-separated relative path.

    The file goes to the test split when this is below the test fraction.
    """
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _subfolders(folder: Path) -> dict[str, Path]:
    return {
        p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }


def _class_videos(class_dir: Path, root: Path) -> list[str]:
    """Relative '/'-paths of the videos under one class folder, sorted."""
    videos = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        videos.extend(str(rel_dir / name) for name in sorted(filenames) if is_video_file(name))
    return videos


def _scan(split_root: Path, root: Path) -> dict[str, list[str]]:
    """Class name -> its videos, for the class folders of `split_root`."""
    found = {}
    for name, class_dir in _subfolders(split_root).items():
        videos = _class_videos(class_dir, root)
        if videos:
            found[name] = videos
    return found


def _entries(videos: dict[str, list[str]], label_of: dict[str, int]) -> list[VideoEntry]:
    # Stems repeat across class folders ("001.mp4"), so the id keeps the path.
    return [
        VideoEntry(path, label_of[name], name, str(PurePosixPath(path).with_suffix("")))
        for name in sorted(videos)
        for path in videos[name]
    ]


def load_folder(video_dir: str | os.PathLike, test_fraction: float = 0.3) -> DatasetSplits:
    """Reads a folder of class sub-folders; see the module docstring for layouts.

    `test_fraction` (0..1) only applies when there are no split folders.
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise SplitFileError(f"{root}: video folder not found")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction!r}")
    top = {name.lower(): path for name, path in _subfolders(root).items()}
    test_dir = next((top[name] for name in TEST_FOLDERS if name in top), None)
    if TRAIN_FOLDER in top or test_dir is not None:
        if TRAIN_FOLDER not in top or test_dir is None:
            raise SplitFileError(
                f"{root}: found only one of the split folders train/ and test/ (or val/, "
                "validation/); give both, or put class folders directly in the video folder"
            )
        by_split = {"train": _scan(top[TRAIN_FOLDER], root), "test": _scan(test_dir, root)}
    else:
        by_split = {"train": {}, "test": {}}
        for name, videos in _scan(root, root).items():
            for path in videos:
                side = "test" if hash_share(path) < test_fraction else "train"
                by_split[side].setdefault(name, []).append(path)
    classes = sorted(set(by_split["train"]) | set(by_split["test"]))
    if not classes:
        raise SplitFileError(
            f"{root}: no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) in class sub-folders"
        )
    label_of = {name: label for label, name in enumerate(classes)}
    return DatasetSplits(
        classes=classes,
        splits={split: _entries(videos, label_of) for split, videos in by_split.items()},
    )
