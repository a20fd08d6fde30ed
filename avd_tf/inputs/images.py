"""tf.data over an image stream's folder: batches of augmented or centre-cropped images.

A stream folder (`avd_tf.classify.stream_cache.ensure_stream` makes one)
holds image-record shards (`avd_tf.records.images`) for "train" and "test"
and its `stream.json`, written last. Reading shares `avd_tf.inputs.clips`'
seeding, shard interleaving and options, and `avd_tf.inputs.augment`'s
crops and flips, so a seeded image pipeline is as reproducible as a seeded
clip pipeline.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import tensorflow as tf

from avd_tf import streams
from avd_tf.inputs import augment
from avd_tf.inputs.clips import epochs, pipeline_options, shard_records, sub_seed
from avd_tf.inputs.shards import list_shards
from avd_tf.layout import STREAM_INFO
from avd_tf.records import images as image_records

AUTOTUNE = tf.data.AUTOTUNE
MAX_SHUFFLE_BUFFER = 10000


def stream_info(stream_dir: str) -> dict:
    """The `stream.json` of a complete stream folder (what `ensure_stream` returns)."""
    path = os.path.join(stream_dir, STREAM_INFO)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: missing, so {stream_dir} is not a complete image stream "
            "(ensure_stream makes one)")
    with open(path) as f:
        try:
            info = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(info, dict) or info.get("stream") not in streams.STREAMS:
        raise ValueError(f"{path}: no known 'stream' in this file")
    return info


def num_images(stream_dir: str, split: str) -> int:
    """How many images split `split` of a complete stream folder holds."""
    return int(stream_info(stream_dir)["splits"][split]["images"])


def preprocess_image(image: tf.Tensor, size: int, *, training: bool, flow: bool,
                     seed=None, scale_range: Sequence[float] = augment.DEFAULT_SCALE_RANGE,
                     flip: str = "mirror", mirror: tf.Tensor | None = None
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 (H, W, C) -> (float32 (size, size, C) in [-1, 1] (q / 127.5 - 1), flipped).

    Training: size jitter and random crop as `avd_tf.inputs.augment.augment_clip`
    does (same seeds), and with `flip="mirror"` a flip with probability 0.5
    (paper section 4.2): `mirror` (the mirrored video's image, when the
    stream stores one) replaces the image, else the image is mirrored, `flow`
    negating x. `flipped` (boolean scalar) says whether it flipped.
    Evaluation: short side to `size`, centre crop, never flipped.
    """
    if not training:
        clip = augment.center_crop_resize(augment.to_signed_unit(image)[None], size)
        return clip[0], tf.constant(False)
    crop_seed, flip_seed = augment.augment_seeds(seed)
    flipped = (augment.flip_coin(flip_seed) if augment.check_flip(flip) == "mirror"
               else tf.constant(False))
    if mirror is not None:
        image = tf.where(flipped, mirror, image)
    clip = augment.random_crop_resize(augment.to_signed_unit(image)[None], size, crop_seed,
                                      scale_range)
    if mirror is None:
        clip = augment.flip_if(clip, flipped, flow)
    return clip[0], flipped


def _mirror_class_table(mirror_classes, classes: list, stream_dir: str) -> tf.Tensor:
    """int32 (num_classes,): each class's mirror class, checked."""
    num = len(classes)
    table = [int(c) for c in mirror_classes]
    if len(table) != num or any(not 0 <= c < num for c in table):
        raise ValueError(f"mirror_classes must give a class in 0..{num - 1} for each of the "
                         f"{num} classes of {stream_dir}, got {list(mirror_classes)}")
    return tf.constant(table, tf.int32)


def stream_dataset(
    stream_dir: str,
    split: str,
    *,
    size: int,
    training: bool,
    batch_size: int,
    seed: int | None = None,
    repeat: bool | None = None,
    cache: bool = True,
    scale_range: Sequence[float] = augment.DEFAULT_SCALE_RANGE,
    flip: str = "mirror",
    mirror_classes: Sequence[int] | None = None,
) -> tf.data.Dataset:
    """Batches {"image", "label", "video_id", "clip_index"} of a stream folder.

    "image": float32 (B, size, size, C) in [-1, 1] (q / 127.5 - 1); "label":
    int32 (B,); "video_id": string (B,); "clip_index": int32 (B,).

    Training: images shuffled, augmented as the paper says ("size jittering,
    cropping, flipping, and re-scaling", section 4.2; see `preprocess_image`),
    batches of exactly `batch_size`, repeated forever unless `repeat=False`.
    `flip="mirror"`: half of the samples show the mirrored video (its stored
    image for the registry's mirrored streams, `avd_tf.streams`, else the
    image mirrored) and carry the mirror class of their label,
    `mirror_classes[label]` (a class per class, see
    `avd_tf.datasets.flip_labels.flip_permutation`; default: every class its
    own mirror); `flip="none"` never flips. Evaluation: resize + centre crop, deterministic,
    one pass in file order. With `seed`, training batches are the same in
    every run. `cache` keeps the decoded uint8 images in memory.
    """
    info = stream_info(stream_dir)
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got {size} and {batch_size}")
    augment.check_scale_range(scale_range)
    augment.check_flip(flip)
    mirror_table = (None if mirror_classes is None
                    else _mirror_class_table(mirror_classes, list(info["classes"]), stream_dir))
    stream = streams.get(info["stream"])
    # Only training flips, so only training reads the mirrored video's images.
    stored_mirror = training and flip == "mirror" and stream.mirrored
    if stored_mirror and not info.get("mirrored_images"):
        raise ValueError(f"{stream_dir}: this {stream.name} stream holds no images of the "
                         "mirrored videos (an older format); ensure_stream recomputes it")
    channels = int(info["channels"])
    files = list_shards(stream_dir, split)
    repeat = training if repeat is None else repeat

    ds = shard_records(files, sub_seed(seed, 0), shuffle=training)
    ds = ds.map(lambda _, record: image_records.parse(record, mirror=stored_mirror),
                num_parallel_calls=AUTOTUNE)
    # Only training shuffles (and needs the count).
    buffer = max(1, min(num_images(stream_dir, split), MAX_SHUFFLE_BUFFER)) if training else 1
    ds = epochs(ds, training=training, seed=seed, shuffle_buffer=buffer, cache=cache,
                repeat=repeat)

    def prepare(element, element_seed=None):
        image, flipped = preprocess_image(
            element["image"], size, training=training, flow=stream.flow_channels,
            seed=element_seed, scale_range=scale_range, flip=flip, mirror=element.get("mirror"))
        label = element["label"]
        if mirror_table is not None:
            label = tf.where(flipped, tf.gather(mirror_table, label), label)
        return {"image": tf.ensure_shape(image, [size, size, channels]),
                "label": label, "video_id": element["video_id"],
                "clip_index": element["clip_index"]}

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
    if not repeat:
        # A known length lets Keras end validation without an "ran out of data" warning.
        count = num_images(stream_dir, split)
        batches = count // batch_size if training else -(-count // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(AUTOTUNE).with_options(pipeline_options(seed is not None or not training))


__all__ = ["num_images", "preprocess_image", "stream_dataset", "stream_info"]
