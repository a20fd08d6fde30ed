"""avd_tf.inputs.holdout: validation videos held out of the training split by group."""
from __future__ import annotations

import pytest
import tensorflow as tf

from avd_tf.inputs import holdout


def ucf_labels(classes=("ApplyLipstick", "Archery", "Basketball"), groups=6, clips=3,
               prefix=""):
    """{video id: label} in the UCF101 naming, groups 8.. like split 1's training groups."""
    return {f"{prefix}v_{name}_g{g:02d}_c{c:02d}": label
            for label, name in enumerate(classes)
            for g in range(8, 8 + groups) for c in range(1, clips + 1)}


def test_video_group_reads_ucf_names_and_keeps_other_ids():
    assert holdout.video_group("v_ApplyEyeMakeup_g08_c01") == "ApplyEyeMakeup_g08"
    assert holdout.video_group("Archery/v_Archery_g21_c07") == "Archery_g21"
    assert holdout.video_group("v_Yo_Yo_g01_c02") == "Yo_Yo_g01"
    for other in ("April_09_brush_hair_u_nm_np1_ba_goo_0", "abc_000010_000020",
                  "train/TranslateLeft/TranslateLeft_0", "v_Archery_g21"):
        assert holdout.video_group(other) == other


def test_whole_groups_stay_on_one_side():
    labels = {**ucf_labels(), "brush_hair_1": 0, "brush_hair_2": 0}
    split = holdout.split_videos(labels, 0.34, seed=3)
    assert set(split.train_ids) | set(split.val_ids) == set(labels)
    assert not set(split.train_ids) & set(split.val_ids)
    # Group of a UCF id: its name up to "_cYY", without "v_".
    train_groups = {v.rsplit("_c", 1)[0].removeprefix("v_") for v in split.train_ids}
    val_groups = {v.rsplit("_c", 1)[0].removeprefix("v_") for v in split.val_ids}
    assert not train_groups & val_groups
    assert sorted(val_groups) == list(split.val_groups)
    assert split.groups == 3 * 6 + 2
    # Class 0: 8 groups (6 UCF + 2 ungrouped) -> 3 held out; classes 1, 2: 6 -> 2.
    held = [sum(labels[v] == label for v in split.val_ids) for label in range(3)]
    assert held[1] == held[2] == 2 * 3
    assert len([g for g in split.val_groups if g.startswith("ApplyLipstick")
                or g.startswith("brush_hair")]) == 3


def test_the_split_is_fixed_by_the_seed():
    labels = ucf_labels(prefix="videos/")
    first = holdout.split_videos(labels, 0.2, seed=7)
    assert holdout.split_videos(dict(reversed(list(labels.items()))), 0.2, seed=7) == first
    assert holdout.split_videos(labels, 0.2, seed=8).val_groups != first.val_groups


def test_every_class_keeps_training_videos():
    labels = {**ucf_labels(("Alone",), groups=1, clips=4),
              **{k: 1 for k in ucf_labels(("Pair",), groups=2)},
              **{k: 2 for k in ucf_labels(("Trio",), groups=3)}}
    split = holdout.split_videos(labels, 0.9, seed=0)
    train_labels = {labels[v] for v in split.train_ids}
    assert train_labels == {0, 1, 2}
    assert split.unvalidated_labels == (0,)  # its one group trains
    assert [labels[v] for v in split.val_ids].count(1) == 3  # one of two groups
    assert [labels[v] for v in split.val_ids].count(2) == 6  # two of three groups
    # A small fraction still validates each class that has two groups.
    assert {labels[v] for v in holdout.split_videos(labels, 0.01, seed=0).val_ids} == {1, 2}


def test_bad_fraction_or_nothing_to_hold_out():
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.0"):
        holdout.split_videos(ucf_labels(), 1.0, seed=0)
    with pytest.raises(ValueError, match="no class has two or more groups"):
        holdout.split_videos(ucf_labels(groups=1), 0.2, seed=0)


def test_only_videos_filters_a_dataset():
    ids = ["a", "b", "a", "c", "b", "d"]
    dataset = tf.data.Dataset.from_tensor_slices({"video_id": ids, "label": list(range(6))})
    kept = list(holdout.only_videos(dataset, ["b", "d", "z"]).as_numpy_iterator())
    assert [e["label"] for e in kept] == [1, 4, 5]
    with pytest.raises(ValueError, match="at least one video id"):
        holdout.only_videos(dataset, [])
