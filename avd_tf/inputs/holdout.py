"""A validation set held out of the training videos, whole groups at a time.

Model selection must never look at the test split, so a run that picks its
best epoch validates on training videos it does not train on. UCF101 clips
of one group (`v_<Class>_gXX_cYY`: the same actors and scene) are near
copies, so a group goes entirely to one side; otherwise validation would
measure memorised scenes. Videos without such a name (HMDB51, Kinetics,
folder datasets) are a group of their own. The demo data is named like
UCF101 and is grouped the same way.

The split is stratified by class: each class with two or more groups holds
out round(fraction * groups) of them, at least one and at most all but one,
so every class keeps training data and is validated. A class with a single
group keeps it for training and is not validated (our choice: splitting the
group would leak its scene into validation, and dropping it would remove
the class from training). The groups held out are drawn by a NumPy
generator seeded with (seed, label), so a seed gives the same split
wherever it runs.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import numpy as np
import tensorflow as tf

UCF_NAME = re.compile(r"^v_(?P<name>.+)_g(?P<group>\d+)_c\d+$")


def video_group(video_id: str) -> str:
    """`<Class>_gXX` for a UCF101-style id (any folder prefix), else the id itself."""
    match = UCF_NAME.match(video_id.rsplit("/", 1)[-1])
    if match is None:
        return video_id
    return f"{match['name']}_g{match['group']}"


@dataclasses.dataclass(frozen=True)
class Holdout:
    """Video ids (sorted) on each side of the split and what was held out."""

    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    val_groups: tuple[str, ...]
    groups: int
    unvalidated_labels: tuple[int, ...]


def split_videos(labels: Mapping[str, int], fraction: float, seed: int) -> Holdout:
    """Holds out whole groups of the videos `labels` ({video id: class index}).

    `fraction` in (0, 1): the share of each class's groups held out (see
    the module docstring for the rounding and single-group classes).
    Raises ValueError when no class has two groups, so nothing can be
    held out.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    members: dict[tuple[int, str], list[str]] = {}
    for video_id, label in labels.items():
        members.setdefault((int(label), video_group(video_id)), []).append(video_id)
    by_label: dict[int, list[str]] = {}
    for label, group in sorted(members):
        by_label.setdefault(label, []).append(group)

    val_keys, unvalidated = [], []
    for label, groups in sorted(by_label.items()):
        if len(groups) < 2:
            unvalidated.append(label)
            continue
        count = min(max(1, round(fraction * len(groups))), len(groups) - 1)
        order = np.random.default_rng([int(seed), label]).permutation(len(groups))
        val_keys.extend((label, groups[i]) for i in order[:count])
    if not val_keys:
        raise ValueError(f"no class has two or more groups of training videos ({len(labels)} "
                         "videos), so none can be held out for validation")
    val_ids = {video_id for key in val_keys for video_id in members[key]}
    return Holdout(
        train_ids=tuple(sorted(set(labels) - val_ids)),
        val_ids=tuple(sorted(val_ids)),
        val_groups=tuple(sorted(group for _, group in val_keys)),
        groups=len(members),
        unvalidated_labels=tuple(unvalidated),
    )


def only_videos(dataset: tf.data.Dataset, video_ids) -> tf.data.Dataset:
    """The elements of `dataset` (dicts with a scalar "video_id") whose video is in `video_ids`."""
    ids = sorted(set(video_ids))
    if not ids:
        raise ValueError("only_videos needs at least one video id")
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids, tf.string),
                                            tf.ones([len(ids)], tf.int32)),
        default_value=0)
    return dataset.filter(lambda element: table.lookup(element["video_id"]) > 0)


__all__ = ["Holdout", "only_videos", "split_videos", "video_group"]
