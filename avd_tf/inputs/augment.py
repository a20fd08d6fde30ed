"""Clip preprocessing and augmentation (paper section 4.2).

The paper trains with "size jittering, cropping, flipping, and re-scaling".
Our reading, applied with the SAME random parameters to every frame of a clip
so that motion stays coherent:

* re-scaling: uint8 values q become q / 255 * 2 - 1 in [-1, 1]. For flow
  images stored as q = round(255 * (v + 20) / 40) this is v / 20, the
  kinetics-i3d convention (docs/design.md, section 3).
* size jitter + cropping: resize the short side to size * s, s uniform in
  `scale_range` (default [1.0, 1.25], our choice), then crop size x size at a
  uniform random position. We crop first (a square of short_side / s pixels
  in the original frame) and resize the crop: the same view, fewer pixels
  to resize.
* flipping (`flip="mirror"`, the default): horizontal with probability 0.5;
  a flipped flow field points the other way, so its x channel is negated
  (x -> -x in [-1, 1]). Flow vectors are not rescaled with the image (TSN
  practice). `flip="none"` never flips: for data whose classes are
  directions and that declares no mirror classes.

Evaluation uses no randomness: resize the short side to `size` and crop the
centre. Randomness comes from stateless ops with a seed of shape [2], so a
given seed always gives the same clip.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

DEFAULT_SCALE_RANGE = (1.0, 1.25)
FLIPS = ("mirror", "none")


def check_flip(flip: str) -> str:
    """Validates a flip policy: "mirror" (half of the samples mirrored) or "none"."""
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}")
    return flip


def check_scale_range(scale_range: Sequence[float]) -> tuple[float, float]:
    """Validates a size-jitter range: 1 <= low <= high (no zooming out, which would need padding)."""
    low, high = (float(s) for s in scale_range)
    if not 1.0 <= low <= high:
        raise ValueError(f"scale_range must satisfy 1 <= low <= high, got {tuple(scale_range)}")
    return low, high


def to_signed_unit(images: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 q / 255 * 2 - 1, in [-1, 1] (flow: v / 20)."""
    return tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0


def _crop_resize(clip: tf.Tensor, size: int, side, top, left) -> tf.Tensor:
    crop = clip[:, top : top + side, left : left + side, :]
    # Antialiasing keeps downscaled frames free of aliasing; its kernel has
    # non-negative weights, so the clip only guards against rounding.
    resized = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
    return tf.clip_by_value(resized, -1.0, 1.0)


def center_crop_resize(clip: tf.Tensor, size: int) -> tf.Tensor:
    """(T, H, W, C) -> (T, size, size, C): short side resized to `size`, centre crop."""
    shape = tf.shape(clip)
    height, width = shape[1], shape[2]
    side = tf.minimum(height, width)
    return _crop_resize(clip, size, side, (height - side) // 2, (width - side) // 2)


def random_crop_resize(
    clip: tf.Tensor, size: int, seed, scale_range: Sequence[float] = DEFAULT_SCALE_RANGE
) -> tf.Tensor:
    """(T, H, W, C) -> (T, size, size, C): size jitter and random crop, one draw per clip."""
    low, high = check_scale_range(scale_range)
    scale_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    shape = tf.shape(clip)
    height, width = shape[1], shape[2]
    short = tf.minimum(height, width)
    scale = tf.random.stateless_uniform([], scale_seed, minval=low, maxval=high)
    side = tf.cast(tf.round(tf.cast(short, tf.float32) / scale), tf.int32)
    side = tf.clip_by_value(side, 1, short)
    top = tf.random.stateless_uniform([], top_seed, 0, height - side + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], left_seed, 0, width - side + 1, dtype=tf.int32)
    return _crop_resize(clip, size, side, top, left)


def flip_left_right(clip: tf.Tensor, flow: bool = False) -> tf.Tensor:
    """Mirrors (..., H, W, C) images or clips; for flow (C = 2, x first) also negates x."""
    flipped = tf.reverse(clip, axis=[-2])
    if flow:
        flipped = flipped * tf.constant([-1.0, 1.0], dtype=clip.dtype)
    return flipped


def flip_coin(seed) -> tf.Tensor:
    """A boolean scalar, True with probability 0.5: whether a sample is mirrored."""
    return tf.random.stateless_uniform([], seed) < 0.5


def flip_if(clip: tf.Tensor, flipped, flow: bool = False) -> tf.Tensor:
    """`flip_left_right(clip, flow)` where the boolean scalar `flipped` holds, else `clip`."""
    return tf.cond(flipped, lambda: flip_left_right(clip, flow), lambda: tf.identity(clip))


def random_flip(clip: tf.Tensor, seed, flow: bool = False) -> tf.Tensor:
    """`flip_left_right` with probability 0.5, decided once for the whole clip."""
    return flip_if(clip, flip_coin(seed), flow)


def augment_seeds(seed) -> tuple[tf.Tensor, tf.Tensor]:
    """The (crop, flip) seeds `augment_clip` draws its crop and its flip with."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    return crop_seed, flip_seed


def augment_clip(
    clip: tf.Tensor,
    size: int,
    seed,
    *,
    flow: bool = False,
    scale_range: Sequence[float] = DEFAULT_SCALE_RANGE,
    flip: str = "mirror",
) -> tf.Tensor:
    """Training augmentation of a float clip (T, H, W, C) in [-1, 1] -> (T, size, size, C).

    `flip`: "mirror" (random flip) or "none" (see the module docstring).
    """
    crop_seed, flip_seed = augment_seeds(seed)
    clip = random_crop_resize(clip, size, crop_seed, scale_range)
    if check_flip(flip) == "none":
        return clip
    return random_flip(clip, flip_seed, flow)
