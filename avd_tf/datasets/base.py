"""What every dataset reader returns: labelled video files per split."""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Iterator


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


class SplitFileError(ValueError):
    """A split file or dataset folder is missing or malformed.

    The message names the file (and line, where there is one) and the reason.
    """


def read_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, stripped text) of the non-blank lines.

    Universal newlines and stripping cover the CRLF endings and trailing
    blanks of the official UCF101/HMDB51 files; `utf-8-sig` drops a BOM that
    some editors add when users rewrite a split file.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                text = line.strip()
                if text:
                    yield lineno, text
    except FileNotFoundError:
        raise SplitFileError(f"{path}: split file not found") from None
    except UnicodeDecodeError as e:
        raise SplitFileError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def unique_entries(entries: Iterable[tuple[VideoEntry, str]]) -> list[VideoEntry]:
    """Keeps each video once, in order; `entries` pairs each with "file:line".

    A repeated identical line is harmless and dropped; the same video_id with
    another path or label means the split file contradicts itself, which
    would silently mislabel a video, so it raises.
    """
    seen: dict[str, tuple[VideoEntry, str]] = {}
    kept = []
    for entry, where in entries:
        first = seen.get(entry.video_id)
        if first is None:
            seen[entry.video_id] = (entry, where)
            kept.append(entry)
        elif first[0] != entry:
            raise SplitFileError(
                f"{where}: video {entry.video_id!r} is listed again with a different "
                f"path or label (first at {first[1]}: {first[0].path}, {first[0].label_name!r})"
            )
    return kept


def check_split(split: int, dataset: str) -> None:
    """UCF101 and HMDB51 each define three official train/test splits."""
    if split not in (1, 2, 3):
        raise ValueError(f"{dataset} split must be 1, 2 or 3, got {split!r}")
