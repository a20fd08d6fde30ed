"""Finding the complete shards of a prepared split and reading its manifest.

The preparation program (`avd-prepare`) writes each shard under a temporary
name and renames it to its shard name (`avd_tf.layout`) only when it is
complete, so a name that `parse_shard_name` accepts is a complete shard and
anything else (`*.tmp`, `*.tmp.*`) is a shard still being written.

A shard damaged after it was written (truncated, bits flipped) makes
TFRecord reading raise `tf.errors.DataLossError` without naming the file;
`readable_shards` checks the sizes manifest.json records before a run and
turns that error into a `DamagedShardError` naming the shard.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re

import tensorflow as tf
from absl import logging

from avd_tf.layout import MANIFEST, SHARD_FILES, SHARD_SUFFIX, parse_shard_name, shard_glob


class DamagedShardError(OSError):
    """A shard that does not match its manifest record or fails to read."""


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
    found = {}
    for path in tf.io.gfile.glob(os.path.join(data_dir, shard_glob(split))):
        parsed = parse_shard_name(os.path.basename(path), split)
        if parsed:
            found[path] = parsed[1]
    if not found:
        raise FileNotFoundError(
            f"{data_dir}: no complete shards for split '{split}' "
            f"({shard_glob(split)}); avd-prepare makes them"
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
        if not tf.io.gfile.isdir(data_dir):
            what = "a file, not a folder" if tf.io.gfile.exists(data_dir) else "no such folder"
            raise FileNotFoundError(f"{data_dir}: {what}; prepared data is a folder that "
                                    "avd-prepare makes")
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST} in this folder, so not prepared "
                                "data (avd-prepare writes it when it finishes)")
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("classes"), list):
        raise ValueError(f"{path}: the manifest has no 'classes' list")
    return manifest


def manifest_fingerprint(data_dir: str) -> str:
    """A short hash of `manifest.json`'s bytes: re-preparing the folder changes it."""
    read_manifest(data_dir)  # names the file when it is missing or broken
    with open(os.path.join(data_dir, MANIFEST), "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:10]


def class_names(data_dir: str) -> list[str]:
    """The class names of a prepared data folder; index = label."""
    return list(read_manifest(data_dir)["classes"])


def check_flow(data_dir: str, split: str) -> None:
    """Raises ValueError naming manifest.json when a video of `split` was prepared without flow.

    Without the check a flow model meets the first such video deep in its
    input pipeline. Folders without a manifest are left to that pipeline's
    per-video assertion.
    """
    try:
        manifest = read_manifest(data_dir)
    except FileNotFoundError:
        return
    for video in manifest.get("videos", {}).get(split, []):
        if not video.get("flow_frames"):
            raise ValueError(
                f"{os.path.join(data_dir, MANIFEST)}: video {video.get('id')!r} has no optical "
                "flow frames; prepare the data with flow (avd-prepare --flow tvl1) to use a "
                "flow stream")


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


def _damaged(path: str, data_dir: str, reason: str) -> DamagedShardError:
    if os.path.abspath(path) == os.path.abspath(data_dir) or (
            os.path.dirname(os.path.abspath(path)) == os.path.abspath(data_dir)):
        remedy = f"re-run avd-prepare on {data_dir} to rebuild it"
    else:
        # A stream cache (avd_tf.classify.stream_cache) is remade when its folder is gone.
        remedy = f"delete {os.path.dirname(path)} to compute it again"
    return DamagedShardError(f"{path}: corrupted TFRecord ({reason}); {remedy}")


def check_shard_sizes(data_dir: str) -> None:
    """Raises DamagedShardError for a shard whose size differs from manifest.json's record.

    Sizes only, so it costs nothing at every start; avd-prepare compares the
    sha256 too when run again. Manifests without the record are not checked.
    """
    try:
        files = read_manifest(data_dir).get(SHARD_FILES) or {}
    except (FileNotFoundError, ValueError):
        return  # the reader that needs the manifest says what is wrong with it
    for name, record in sorted(files.items()):
        path = os.path.join(data_dir, name)
        if tf.io.gfile.exists(path):
            size = tf.io.gfile.stat(path).length
            if size != record["bytes"]:
                raise _damaged(path, data_dir, f"{size} bytes, {record['bytes']} when avd-prepare "
                               "wrote it")


def _reason(error: tf.errors.OpError) -> str:
    """TensorFlow's message without its op and function names: "corrupted record at 23501"."""
    text = re.sub(r"\{\{[^}]*\}\}", "", error.message)
    text = re.split(r"\s*(?:\[\[|\[Op:)", text)[0].strip()
    return text.replace("' failed with ", ": ")


def find_unreadable(folder: str) -> tuple[str, str] | None:
    """(path, reason) of the first TFRecord file in or under `folder` whose records fail to read."""
    paths = []
    for root, _, names in tf.io.gfile.walk(folder):
        paths += sorted(os.path.join(root, name) for name in names if name.endswith(SHARD_SUFFIX))
    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.DataLossError as error:
            return path, _reason(error)
    return None


@contextlib.contextmanager
def readable_shards(data_dir: str, *, cache_dir: str | None = None):
    """Checks the shard sizes of `data_dir`, then names the shard behind a DataLossError.

    The shards read inside the block come from `data_dir`, its stream caches
    or `cache_dir`; on a DataLossError those folders are read again to find
    the damaged shard.
    """
    check_shard_sizes(data_dir)
    try:
        yield
    except tf.errors.DataLossError as error:
        for folder in filter(None, (data_dir, cache_dir)):
            found = find_unreadable(folder)
            if found:
                raise _damaged(found[0], data_dir, found[1]) from None
        raise _damaged(data_dir, data_dir, _reason(error)) from None
