"""A prepared folder for choosing settings: the training split, split again into train and test.

`holdout_folder` reads only the TRAINING shards of a folder written by
avd-prepare, holds out a seeded share of its video groups
(`avd_tf.inputs.holdout.split_videos`: whole UCF101 groups, stratified by
class) and writes a new prepared folder whose "test" split is the held-out
videos and whose "train" split is the rest. The SequenceExamples are copied
byte for byte into new shards (`avd_tf.records.shards`) and the manifest is
built from the source manifest's per-video entries, as avd-prepare builds
it, plus a "holdout" record (source, fraction, seed, groups). Every program
then runs on the new folder unchanged, and the source's test split is never
read, so figures measured on it may choose settings.
"""
from __future__ import annotations

import glob
import os
import shutil
from typing import Callable

import tensorflow as tf

from avd_tf.files import TMP_SUFFIX, write_json_atomically
from avd_tf.inputs import holdout
from avd_tf.inputs.shards import list_shards, manifest_fingerprint, read_manifest
from avd_tf.layout import MANIFEST, PROGRESS_DIR, shard_glob, shard_name
from avd_tf.records import schema, shards
from avd_tf.records.prepare import build_manifest

HOLDOUT_KEY = "holdout"
SPLITS = ("train", "test")


def _existing(output_dir: str, record: dict) -> dict | None:
    """The finished folder's manifest when it holds this holdout; refuses another one."""
    path = os.path.join(output_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    manifest = read_manifest(output_dir)
    previous = manifest.get(HOLDOUT_KEY) or {}
    wanted = {k: record[k] for k in ("source", "source_manifest", "fraction", "seed")}
    if {k: previous.get(k) for k in wanted} != wanted:
        changed = sorted(k for k in wanted if previous.get(k) != wanted[k])
        raise ValueError(
            f"{output_dir}: holds another held-out folder ({', '.join(changed)} differ); "
            "delete it or use another folder")
    return manifest


def _video_ids(files: list[str]) -> tf.data.Dataset:
    """(video id, serialised record) pairs of the shards, in shard order."""
    features = {schema.VIDEO_ID: schema.CONTEXT_FEATURES[schema.VIDEO_ID]}

    def parse(record):
        context, _ = tf.io.parse_single_sequence_example(record, context_features=features)
        return context[schema.VIDEO_ID], record

    return tf.data.TFRecordDataset(files).map(parse)


def holdout_folder(data_dir: str, output_dir: str, *, fraction: float = 0.2, seed: int = 0,
                   videos_per_shard: int = 10,
                   log: Callable[[str], None] = print) -> dict:
    """Writes (or reuses) the held-out folder of prepared `data_dir`; returns its manifest.

    `fraction` of each class's groups of training videos (seeded by `seed`)
    become the new test split. A finished `output_dir` made from the same
    source (its manifest unchanged), fraction and seed is reused; one made
    otherwise is refused; an unfinished one (no manifest.json) is redone.
    """
    source = read_manifest(data_dir)
    files = list_shards(data_dir, "train")
    entries = (source.get("videos") or {}).get("train") or []
    if not entries:
        raise ValueError(f"{os.path.join(data_dir, MANIFEST)}: lists no training video")
    labels = {entry["id"]: int(entry["label"]) for entry in entries}
    split = holdout.split_videos(labels, fraction, seed)
    record = {
        "source": os.path.abspath(data_dir),
        "source_manifest": manifest_fingerprint(data_dir),
        "fraction": float(fraction),
        "seed": int(seed),
        "groups": split.groups,
        "test_groups": list(split.val_groups),
        "train_videos": len(split.train_ids),
        "test_videos": len(split.val_ids),
        "unvalidated_classes": [source["classes"][label] for label in split.unvalidated_labels],
    }
    finished = _existing(output_dir, record)
    if finished is not None:
        log(f"holdout: reusing {output_dir}")
        return finished

    os.makedirs(output_dir, exist_ok=True)
    for path in glob.glob(os.path.join(output_dir, shard_glob() + "*")):
        os.remove(path)
    shutil.rmtree(os.path.join(output_dir, PROGRESS_DIR), ignore_errors=True)
    os.makedirs(os.path.join(output_dir, PROGRESS_DIR))

    test_ids = set(split.val_ids)
    sides = {side: [e for e in entries if (e["id"] in test_ids) == (side == "test")]
             for side in SPLITS}
    plan, shard_of = {}, {}
    for side, videos in sides.items():
        ranges = shards.plan(len(videos), videos_per_shard)
        for i, indices in enumerate(ranges):
            name = shard_name(side, i, len(ranges))
            plan[name] = (side, [videos[j] for j in indices])
            shard_of.update({videos[j]["id"]: name for j in indices})
    writers, left = {}, {name: len(members) for name, (_, members) in plan.items()}
    try:
        for video_id, serialized in _video_ids(files).as_numpy_iterator():
            name = shard_of.get(video_id.decode("utf-8"))
            if name is None:
                raise ValueError(f"{data_dir}: training video {video_id.decode('utf-8')!r} is "
                                 f"not in {MANIFEST} (or appears twice in the shards)")
            del shard_of[video_id.decode("utf-8")]
            if name not in writers:
                writers[name] = tf.io.TFRecordWriter(
                    os.path.join(output_dir, name + TMP_SUFFIX))
            writers[name].write(serialized)
            left[name] -= 1
            if not left[name]:
                writers.pop(name).close()
                shards.finish(output_dir, name,
                              {"videos": plan[name][1], "failures": []})
    finally:
        for writer in writers.values():
            writer.close()
    if shard_of:
        raise ValueError(f"{data_dir}: {len(shard_of)} training video(s) of {MANIFEST} are in "
                         f"no complete train shard, e.g. {sorted(shard_of)[0]!r}")

    settings = {"dataset": source.get("dataset", ""), "options": source.get("options"),
                "classes": source["classes"]}
    manifest = build_manifest(output_dir, plan, settings)
    # Dataset-level facts the copy keeps (e.g. the flip label map).
    for key, value in source.items():
        manifest.setdefault(key, value)
    manifest[HOLDOUT_KEY] = record
    write_json_atomically(os.path.join(output_dir, MANIFEST), manifest)
    log(f"holdout: {record['test_videos']} of {len(entries)} training videos "
        f"({len(split.val_groups)} of {split.groups} groups) held out as the test split of "
        f"{output_dir}")
    return manifest


__all__ = ["HOLDOUT_KEY", "holdout_folder"]
