"""The on-disk format of image streams: one `tf.train.Example` per image.

Distilled images (avd-distill), dynamic images, mean frames and single frames
are all stored alike, as PNG-encoded uint8 [H, W, C] arrays (C = 3, or 2 for
flow: grey + alpha) with the label and the clip they came from, so
video-level scores can average over a video's clips. PNG because it is
lossless (a distilled image is E's output, not a photograph to recompress);
on the demo's streams it took 0.2x the raw pixels for flow, 0.8x for frames
and dynamic images, 0.9x for distilled RGB images (each stream.json's
`bytes_per_image`).
Shards are named as prepared data's are (`avd_tf.layout`).

A record may also hold a "mirror" image of the same shape: the image the
mirrored video gives, for streams where that is not the mirrored image
(an encoder E: E(mirror(clip)) != mirror(E(clip))). Training reads it when
it flips a sample; evaluation never reads it.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from avd_tf.files import TMP_SUFFIX
from avd_tf.layout import SHARD_SUFFIX, shard_name

IMAGE = "image/png"
SHAPE = "image/shape"
LABEL = "label"
VIDEO_ID = "video_id"
CLIP_INDEX = "clip_index"
MIRROR = "image/mirror/png"

FEATURES = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    SHAPE: tf.io.FixedLenFeature([3], tf.int64),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
    CLIP_INDEX: tf.io.FixedLenFeature([], tf.int64),
}
MIRROR_FEATURES = {**FEATURES, MIRROR: tf.io.FixedLenFeature([], tf.string)}


def encode(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, C] image, C in 1-4 (TensorFlow's codec, so channels keep their order)."""
    return tf.io.encode_png(image).numpy()


def serialize(image: np.ndarray, label: int, video_id: str | bytes, clip_index: int,
              mirror: np.ndarray | None = None) -> bytes:
    """One uint8 [H, W, C] image with its label and origin (and `mirror` image), serialised."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 [H, W, C] image, got {image.dtype} {image.shape}")
    if mirror is not None and (mirror.dtype != np.uint8 or mirror.shape != image.shape):
        raise ValueError(f"the mirror image must be uint8 {image.shape} like the image, "
                         f"got {mirror.dtype} {mirror.shape}")
    if isinstance(video_id, str):
        video_id = video_id.encode("utf-8")
    feature = {
        IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encode(image)])),
        SHAPE: tf.train.Feature(int64_list=tf.train.Int64List(value=list(image.shape))),
        LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        VIDEO_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id])),
        CLIP_INDEX: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(clip_index)])),
    }
    if mirror is not None:
        feature[MIRROR] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encode(mirror)]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def parse(serialized: tf.Tensor, mirror: bool = False) -> dict:
    """Parses one record: {"image": uint8 [H, W, C], "label", "video_id", "clip_index"}.

    With `mirror`, also "mirror" (uint8 [H, W, C]); a record without one fails.
    """
    features = tf.io.parse_single_example(serialized, MIRROR_FEATURES if mirror else FEATURES)
    parsed = {
        "image": _decode(features[IMAGE], features[SHAPE]),
        "label": tf.cast(features[LABEL], tf.int32),
        "video_id": features[VIDEO_ID],
        "clip_index": tf.cast(features[CLIP_INDEX], tf.int32),
    }
    if mirror:
        parsed["mirror"] = _decode(features[MIRROR], features[SHAPE])
    return parsed


def _decode(png: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.io.decode_png(png, channels=0, dtype=tf.uint8), shape)


class ShardedWriter:
    """Writes records of one split into shards of at most `per_shard` records.

    Shards are written under a temporary name and get their shard name
    (`layout.shard_name`) when the writer closes: only then is their count known.
    """

    def __init__(self, output_dir: str, split: str, per_shard: int = 1000):
        self.output_dir, self.split, self.per_shard = output_dir, split, per_shard
        os.makedirs(output_dir, exist_ok=True)
        self._done: list[str] = []
        self._writer = None
        self._count = 0

    def write(self, record: bytes) -> None:
        if self._writer is None or self._count == self.per_shard:
            self._roll()
        self._writer.write(record)
        self._count += 1

    def _roll(self) -> None:
        self._close_current()
        path = os.path.join(self.output_dir, f".{self.split}-{len(self._done):05d}{SHARD_SUFFIX}{TMP_SUFFIX}")
        self._writer = tf.io.TFRecordWriter(path)
        self._current = path
        self._count = 0

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._done.append(self._current)
            self._writer = None

    def close(self) -> list[str]:
        if self._writer is None and not self._done:
            self._roll()  # an empty split still gets one (empty) shard
        self._close_current()
        final = []
        for i, path in enumerate(self._done):
            name = os.path.join(self.output_dir, shard_name(self.split, i, len(self._done)))
            os.replace(path, name)
            final.append(name)
        return final
