"""Finding the complete shards of a prepared split and reading its manifest.

The preparation program (`avd-prepare`) writes each shard under a temporary
name and renames it to `{split}-{i:05d}-of-{n:05d}.tfrecord` only when it is
complete, so a name that matches this pattern exactly is a complete shard and
anything else (`*.tmp`, `*.tmp.*`) is a shard still being written.
"""
from __future__ import annotations

import json
import os
import re

import tensorflow as tf
from absl import logging

MANIFEST = "manifest.json"


def _shard_pattern(split: str) -> re.Pattern:
    return re.compile(rf"{re.escape(split)}-(\d+)-of-(\d+)\.tfrecord")


def list_shards(data_dir: str, split: str) -> list[str]:
    """Returns the sorted paths of the complete shards of `split` in `data_dir`.

    Temporary files are ignored. Raises FileNotFoundError naming the folder
    and the split when there is no complete shard. When some of the `n`
    shards a name announces are missing (a preparation still running or
    killed), the present ones are returned and a warning says how many.
    """
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(
            f"{data_dir}: no such folder (expected TFRecord shards made by avd-prepare)"
        )
    pattern = _shard_pattern(split)
    found = {}
    for path in tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*-of-*.tfrecord")):
        match = pattern.fullmatch(os.path.basename(path))
        if match:
            found[path] = int(match.group(2))
    if not found:
        raise FileNotFoundError(
            f"{data_dir}: no complete shards for split '{split}' "
            f"({split}-*-of-*.tfrecord); avd-prepare makes them"
        )
    announced = max(found.values())
    if len(found) < announced:
        logging.warning(
            "%s: split '%s' has %d of %d shards; avd-prepare may not have finished",
            data_dir, split, len(found), announced,
        )
    return sorted(found)


def read_manifest(data_dir: str) -> dict:
    """Reads `manifest.json` of a prepared data folder."""
    path = os.path.join(data_dir, MANIFEST)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no manifest (avd-prepare writes it when it finishes)")
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("classes"), list):
        raise ValueError(f"{path}: the manifest has no 'classes' list")
    return manifest


def class_names(data_dir: str) -> list[str]:
    """The class names of a prepared data folder; index = label."""
    return list(read_manifest(data_dir)["classes"])


def num_videos(data_dir: str, split: str) -> int:
    """How many videos `split` holds: for `steps_per_epoch` with repeated datasets.

    Uses the manifest's per-split "videos" count when there is one, otherwise
    counts the records of the complete shards.
    """
    files = list_shards(data_dir, split)
    try:
        count = read_manifest(data_dir)["splits"][split]["videos"]
    except (FileNotFoundError, KeyError, TypeError):
        count = None
    if isinstance(count, int):
        return count
    return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))
