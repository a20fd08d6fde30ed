"""Which frames make a clip: start positions and frame indices (graph-safe).

A clip is `num_frames` frames `frame_stride` apart, so it covers
`clip_span = (num_frames - 1) * frame_stride + 1` frames of the video.

Short videos are LOOPED (our choice, docs/design.md, section 2):
frame indices are taken modulo the video length, so a 5-frame video read as
an 8-frame clip gives frames 0 1 2 3 4 0 1 2. Looping keeps every clip made of
real frames, where zero padding would show E blank frames that no video has.

Training draws starts uniformly in [0, length - span] (start 0 when the
video is shorter than the span); evaluation spaces `num_clips` starts evenly
over the same range, the first at 0 and the last at length - span (a single
clip is centred). All functions take tensors or Python ints.
"""
from __future__ import annotations

import tensorflow as tf


def clip_span(num_frames: int, frame_stride: int = 1) -> int:
    """How many video frames one clip covers, first to last."""
    if num_frames < 1 or frame_stride < 1:
        raise ValueError(
            f"num_frames and frame_stride must be >= 1, got {num_frames} and {frame_stride}"
        )
    return (num_frames - 1) * frame_stride + 1


def _last_start(video_length, span: int) -> tf.Tensor:
    return tf.maximum(tf.cast(video_length, tf.int32) - span, 0)


def evenly_spaced_starts(video_length, num_clips: int, span: int) -> tf.Tensor:
    """int32 (num_clips,): deterministic starts spread over the whole video."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    last = _last_start(video_length, span)
    if num_clips == 1:
        return tf.reshape(last // 2, [1])
    return last * tf.range(num_clips, dtype=tf.int32) // (num_clips - 1)


def random_starts(video_length, num_clips: int, span: int, seed) -> tf.Tensor:
    """int32 (num_clips,): uniform random starts from a stateless seed (shape [2])."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    return tf.random.stateless_uniform(
        [num_clips], seed, minval=0, maxval=_last_start(video_length, span) + 1, dtype=tf.int32
    )


def clip_indices(starts, video_length, num_frames: int, frame_stride: int = 1) -> tf.Tensor:
    """int32 (num_clips, num_frames): frame indices of each clip, looped modulo the length."""
    offsets = tf.range(num_frames, dtype=tf.int32) * frame_stride
    starts = tf.cast(starts, tf.int32)
    return (starts[:, None] + offsets[None, :]) % tf.cast(video_length, tf.int32)
