"""The on-disk format of a prepared video: one `tf.train.SequenceExample`.

Follows TF Model Garden's video layout (docs/design.md, section 3): the context holds
the video's identity and label (0-based), feature lists hold JPEG-encoded RGB
frames and the TV-L1 flow x / y images (uint8, `round(255 * (v + 20) / 40)`).
A video of N frames has N-1 flow frames (one per consecutive pair), or none
when flow was not computed.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import tensorflow as tf

VIDEO_ID = "video/id"
LABEL_INDEX = "video/label/index"
LABEL_NAME = "video/label/name"
NUM_FRAMES = "video/num_frames"
NUM_FLOW_FRAMES = "video/num_flow_frames"
HEIGHT = "video/height"
WIDTH = "video/width"
FPS = "video/fps"
IMAGE = "image/encoded"
FLOW_X = "flow/x/encoded"
FLOW_Y = "flow/y/encoded"

CONTEXT_FEATURES = {
    VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
    LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64),
    LABEL_NAME: tf.io.FixedLenFeature([], tf.string),
    NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
    NUM_FLOW_FRAMES: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    FPS: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
}
SEQUENCE_FEATURES = {
    IMAGE: tf.io.FixedLenSequenceFeature([], tf.string),
    FLOW_X: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
    FLOW_Y: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
}


@dataclasses.dataclass
class EncodedVideo:
    """A video ready to be serialised: JPEG frames and PNG/JPEG flow images."""

    video_id: str
    label: int
    label_name: str
    height: int
    width: int
    fps: float
    frames: Sequence[bytes]
    flow_x: Sequence[bytes] = ()
    flow_y: Sequence[bytes] = ()


def _bytes_list(values: Sequence[bytes]) -> tf.train.FeatureList:
    return tf.train.FeatureList(
        feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[v])) for v in values]
    )


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _bytes(value: str) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))


def serialize(video: EncodedVideo) -> bytes:
    """Returns the serialised SequenceExample of one prepared video."""
    if len(video.flow_x) != len(video.flow_y):
        raise ValueError(f"{video.video_id}: flow x and y lengths differ")
    context = tf.train.Features(
        feature={
            VIDEO_ID: _bytes(video.video_id),
            LABEL_INDEX: _int(video.label),
            LABEL_NAME: _bytes(video.label_name),
            NUM_FRAMES: _int(len(video.frames)),
            NUM_FLOW_FRAMES: _int(len(video.flow_x)),
            HEIGHT: _int(video.height),
            WIDTH: _int(video.width),
            FPS: tf.train.Feature(float_list=tf.train.FloatList(value=[float(video.fps)])),
        }
    )
    lists = {IMAGE: _bytes_list(video.frames)}
    if video.flow_x:
        lists[FLOW_X] = _bytes_list(video.flow_x)
        lists[FLOW_Y] = _bytes_list(video.flow_y)
    example = tf.train.SequenceExample(
        context=context, feature_lists=tf.train.FeatureLists(feature_list=lists)
    )
    # deterministic: map fields (the context) otherwise serialise in hash order.
    return example.SerializeToString(deterministic=True)


def parse(serialized: tf.Tensor) -> dict:
    """Parses one serialised video into a flat dict of tensors (graph-safe)."""
    context, sequences = tf.io.parse_single_sequence_example(
        serialized, context_features=CONTEXT_FEATURES, sequence_features=SEQUENCE_FEATURES
    )
    return {**context, **sequences}
