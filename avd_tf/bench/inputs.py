"""Throughput of the tf.data input pipeline alone, on real prepared shards.

`make_prepared_dataset` writes a small data set the way users make theirs:
motion videos from `avd_tf.video.synthetic` in the UCF101 layout, converted
by `avd_tf.records.prepare.prepare` into SequenceExample shards of JPEG
frames. `input_clips_per_s` then times `avd_tf.inputs.avd_dataset` (random
clips, augmentation, real frames for T, batching) with
`avd_tf.inputs.measure_throughput`.
"""
from __future__ import annotations

import os

import numpy as np

from avd_tf.datasets import load_dataset
from avd_tf.records.convert import ConvertOptions
from avd_tf.records.prepare import prepare
from avd_tf.video import synthetic

PREPARED = "prepared"
# Our choice: a few short videos, enough for several shards and for the
# shuffle to matter, written in seconds.
NUM_CLASSES = 4
VIDEOS_PER_CLASS = 5
GROUPS = 5
VIDEOS_PER_SHARD = 2
EXTRA_FRAMES = 8


def make_prepared_dataset(output_dir: str, size: int, num_frames: int) -> str:
    """Writes videos of `num_frames + 8` frames at size x size, prepares them (RGB only).

    Returns the folder of the shards and manifest. Flow is not computed:
    the AVD RGB stream reads frames only, and TV-L1 is timed on its own.
    """
    raw = os.path.join(output_dir, "videos")
    summary = synthetic.make_demo_dataset(
        raw,
        num_classes=NUM_CLASSES,
        videos_per_class=VIDEOS_PER_CLASS,
        frames=num_frames + EXTRA_FRAMES,
        size=size,
        groups=GROUPS,
    )
    dataset = load_dataset("ucf101", video_dir=summary["video_dir"], split_dir=summary["split_dir"])
    data_dir = os.path.join(output_dir, PREPARED)
    options = ConvertOptions(size=size, resize="square", flow="none", clip_frames=num_frames)
    prepare(
        dataset,
        summary["video_dir"],
        data_dir,
        options,
        dataset_name="bench",
        videos_per_shard=VIDEOS_PER_SHARD,
        workers=1,
        progress=False,
        log=lambda _: None,
    )
    return data_dir


def input_clips_per_s(
    data_dir: str,
    num_frames: int,
    size: int,
    batch_size: int,
    num_batches: int,
    repeats: int = 2,
    cache: bool = False,
) -> dict:
    """Clips/s of `avd_dataset` (training mode, RGB): best and median of `repeats` runs.

    Each run makes a new dataset and iterator and times `num_batches` batches
    after a warm-up batch. `cache=True` keeps the parsed records in memory,
    as avd-train does for small data sets.
    """
    from avd_tf.inputs import avd_dataset, measure_throughput

    rates = []
    for _ in range(repeats):
        dataset = avd_dataset(data_dir, "train", stream="rgb", num_frames=num_frames, size=size,
                              batch_size=batch_size, training=True, cache=cache)
        rates.append(measure_throughput(dataset, num_batches))
    return {"best": max(rates), "median": float(np.median(rates))}
