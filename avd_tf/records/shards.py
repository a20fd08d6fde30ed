"""Which videos go to which shard, and how a shard becomes visible atomically.

A shard is the unit of resumption: its records are written to a temporary
file, its per-video summary to `.progress/<shard>.json`, and only then is the
temporary file renamed to its final name. A final shard name therefore always
means a complete shard with a summary; anything else is redone. The summary
also records the shard file's size and sha256, so that a shard damaged after
it was published (truncated by a full disk, bits flipped by a copy) is found
and redone too.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os

from avd_tf.files import TMP_SUFFIX, write_json_atomically
from avd_tf.layout import PROGRESS_DIR, SHARD_SUFFIX

FILE_KEY = "file"


def plan(num_videos: int, videos_per_shard: int) -> list[range]:
    """Contiguous index ranges, one per shard (at least one shard per split)."""
    if videos_per_shard < 1:
        raise ValueError(f"videos_per_shard must be >= 1, got {videos_per_shard}")
    count = max(1, math.ceil(num_videos / videos_per_shard))
    return [
        range(i * videos_per_shard, min(num_videos, (i + 1) * videos_per_shard))
        for i in range(count)
    ]


def summary_path(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, PROGRESS_DIR, name.replace(SHARD_SUFFIX, ".json"))


def is_complete(output_dir: str, name: str) -> bool:
    return os.path.exists(os.path.join(output_dir, name)) and os.path.exists(
        summary_path(output_dir, name)
    )


def file_record(path: str) -> dict:
    """{"bytes": size, "sha256": hex digest} of the file at `path`."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


def finish(output_dir: str, name: str, summary: dict) -> None:
    """Publishes a shard whose records are complete in `<name>.tmp`.

    The shard was just written, so hashing it reads the page cache, not the disk.
    """
    tmp = os.path.join(output_dir, name + TMP_SUFFIX)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    write_json_atomically(summary_path(output_dir, name), {**summary, FILE_KEY: file_record(tmp)})
    os.replace(tmp, os.path.join(output_dir, name))


def damage(output_dir: str, name: str) -> str | None:
    """Why the published shard `name` differs from its summary's record, or None.

    Summaries written before the record existed have nothing to compare: None.
    """
    recorded = read_summary(output_dir, name).get(FILE_KEY)
    if not recorded:
        return None
    path = os.path.join(output_dir, name)
    size = os.path.getsize(path)
    if size != recorded["bytes"]:
        return f"{size} bytes, {recorded['bytes']} when it was written"
    if file_record(path)["sha256"] != recorded["sha256"]:
        return "sha256 differs from the one recorded when it was written"
    return None


def remove_stale(output_dir: str) -> int:
    """Deletes temporary files a killed run left behind; returns how many."""
    stale = glob.glob(os.path.join(output_dir, "*" + TMP_SUFFIX))
    stale += glob.glob(os.path.join(output_dir, PROGRESS_DIR, "*" + TMP_SUFFIX))
    for path in stale:
        os.remove(path)
    return len(stale)


def read_summary(output_dir: str, name: str) -> dict:
    with open(summary_path(output_dir, name)) as f:
        return json.load(f)
