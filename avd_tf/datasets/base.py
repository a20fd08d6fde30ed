"""What every dataset reader returns: labelled video files per split."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video listed by a dataset's split files.

    `path` is relative to the dataset's video folder (as the split files name
    it, after dataset-specific fixes); `label` is 0-based, or -1 when the
    split file names a class that is not in the class list (the preparation
    program reports such entries as failures instead of crashing).
    """

    path: str
    label: int
    label_name: str
    video_id: str


@dataclasses.dataclass
class DatasetSplits:
    """Class names (index = label) and the videos of each split."""

    classes: list[str]
    splits: dict[str, list[VideoEntry]]
