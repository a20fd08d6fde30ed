"""Dynamic images: approximate rank pooling (Bilen et al., CVPR 2016).

The paper's closest peer (section 4.6, Table 4, "DI [1]") summarises a clip
of frames I_1..I_N in one image d = sum_t alpha_t * I_t with the approximate
rank-pooling weights (docs/design.md, section 3)

    alpha_t = sum_{j=t..N} (2j - N - 1) / j
            = 2(N - t + 1) - (N + 1)(H_N - H_{t-1}),   H_k = sum_{i<=k} 1/i,

which sum to 0 (so a still clip of two or more frames gives d = 0) and grow
towards the end of the clip, so a pixel that gets brighter over time is
positive in d. A one-frame clip gets the weight 1 (the official code's rule).

Two details follow Bilen et al.'s official MATLAB code, not a popular Python
port: the "- 1" in (2j - N - 1) is kept (dropping it makes the weights sum to
N instead of 0 and mixes the clip's mean appearance into d), and an image for
display is min-max scaled over the WHOLE array, all channels together
(scaling each channel separately shifts the colours and is a bug, not a
convention).

NumPy functions serve offline preparation; `tf_rank_pool_weights`,
`tf_dynamic_image` and the `DynamicImage` layer run inside tf.data or a Keras
graph, with the clip length known only at run time.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Bilen et al.'s official setting for the multi-image ("dynamic images")
# variant: windows of 10 frames, stride 6.
DEFAULT_WINDOW = 10
DEFAULT_STRIDE = 6


def rank_pool_weights(n: int) -> np.ndarray:
    """Approximate rank-pooling weights alpha_1..alpha_n (float64[n]).

    Computed as the reverse cumulative sum of (2j - n - 1) / j, the definition
    itself. For n = 1 that sum is 0; Bilen et al.'s `vl_nnarpooltemporal.m`
    sets the weight to 1 instead, so a one-frame clip's image is the frame,
    and so do we.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"rank_pool_weights: need a clip length n >= 1, got {n!r}")
    n = int(n)
    if n == 1:
        return np.ones(1)
    j = np.arange(1, n + 1, dtype=np.float64)
    return np.cumsum(((2.0 * j - n - 1.0) / j)[::-1])[::-1]


def _check_frames(frames: np.ndarray, where: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise ValueError(
            f"{where}: frames must be an array [N, H, W, C] with N >= 1, "
            f"got shape {frames.shape}")
    return frames


def dynamic_image(frames: np.ndarray) -> np.ndarray:
    """The dynamic image sum_t alpha_t * frames[t] of a clip (float32[H, W, C]).

    `frames` is a float or uint8 array [N, H, W, C], used as given (no
    rescaling before pooling, as in Bilen et al.'s code). The result is the
    raw rank-pooled sum; `to_uint8` turns it into a picture.
    """
    frames = _check_frames(frames, "dynamic_image")
    weights = rank_pool_weights(frames.shape[0]).astype(np.float32)
    # tensordot on float32 keeps the copy of a long uint8 video at 4 bytes
    # a value; the weights are O(N) so float32 loses nothing that matters.
    return np.tensordot(weights, frames.astype(np.float32, copy=False), axes=1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Min-max scale a dynamic image to uint8 [0, 255], over the whole array.

    One minimum and one maximum for all pixels AND channels (Bilen et al.'s
    official code). Normalising each channel on its own, as a popular Python
    port does, distorts the colours: that is a bug, not a convention. A
    constant image (max == min) maps to all zeros: our choice.
    """
    image = np.asarray(image, dtype=np.float64)
    low, high = image.min(), image.max()
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    # MATLAB's uint8() rounds, so rint (not truncation) matches the original.
    return np.rint((image - low) * (255.0 / (high - low))).astype(np.uint8)


def window_starts(num_frames: int, window: int = DEFAULT_WINDOW,
                  stride: int = DEFAULT_STRIDE) -> list[int]:
    """First frame of each window: starts s = 0, stride, ... with s + window <= N.

    Frames after the last full window are not used (as in Bilen et al.'s
    code); a video shorter than one window gives the single start 0 and its
    window is the whole video.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window_starts: window and stride must be >= 1, "
                         f"got window={window}, stride={stride}")
    if num_frames < 1:
        raise ValueError(f"window_starts: need at least one frame, got {num_frames}")
    if num_frames <= window:
        return [0]
    return list(range(0, num_frames - window + 1, stride))


def dynamic_images(frames: np.ndarray, window: int = DEFAULT_WINDOW,
                   stride: int = DEFAULT_STRIDE) -> np.ndarray:
    """Dynamic images of sliding windows over a video (float32[K, H, W, C]).

    Window k covers frames [s_k, s_k + window) with the starts of
    `window_starts`; a video shorter than a window gives one image over all
    of its frames.
    """
    frames = _check_frames(frames, "dynamic_images")
    starts = window_starts(frames.shape[0], window, stride)
    return np.stack([dynamic_image(frames[s:s + window]) for s in starts])


def tf_rank_pool_weights(n) -> tf.Tensor:
    """`rank_pool_weights` in TensorFlow (float32[n]); `n` may be a tensor.

    Accumulated in float64 so that the weights match the NumPy ones to float32
    precision for long clips too.
    """
    n = tf.cast(n, tf.float64)
    j = tf.range(1.0, n + 1.0, dtype=tf.float64)
    weights = tf.cumsum((2.0 * j - n - 1.0) / j, reverse=True)
    # One frame: weight 1, as the official code (see rank_pool_weights).
    return tf.cast(tf.where(tf.equal(n, 1.0), tf.ones_like(weights), weights), tf.float32)


def tf_dynamic_image(frames) -> tf.Tensor:
    """`dynamic_image` in TensorFlow: frames [N, H, W, C] -> float32[H, W, C].

    N may be unknown until run time (a tf.data clip of variable length).
    """
    frames = tf.cast(frames, tf.float32)
    tf.debugging.assert_rank(
        frames, 4, message="tf_dynamic_image: frames must be [N, H, W, C]")
    weights = tf_rank_pool_weights(tf.shape(frames)[0])
    return tf.tensordot(weights, frames, axes=1)


@keras.saving.register_keras_serializable(package="avd_tf")
class DynamicImage(keras.layers.Layer):
    """Rank-pools a batch of clips (B, T, H, W, C) into images (B, H, W, C).

    The dynamic-image baseline of section 4.6 (Bilen et al., approximate rank
    pooling, see the module docstring); T may vary between batches. With
    `rescale=True` each image is min-max scaled over all its pixels and
    channels to [-1, 1], the input convention of
    `avd_tf.classify.backbones.build_classifier`; a constant image becomes 0
    (our choice). Computed and returned in float32 whatever the dtype policy:
    raw rank-pooled sums of 0..255 frames overflow float16.
    """

    def __init__(self, rescale: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.rescale = bool(rescale)

    def call(self, clips):
        clips = tf.cast(clips, tf.float32)
        weights = tf_rank_pool_weights(tf.shape(clips)[1])
        images = tf.einsum("t,bthwc->bhwc", weights, clips)
        if not self.rescale:
            return images
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        # Centre on the mid-range so that a constant image maps to 0, not -1.
        return tf.math.divide_no_nan(2.0 * images - (high + low), high - low)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config["rescale"] = self.rescale
        return config
