"""Clip -> image throughput: E's distillation (compiled, and as a SavedModel) and dynamic images."""
from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from avd_tf.classify.dynamic_images import dynamic_image
from avd_tf.models.export import export_encoder


def _rate(function, batch_size: int, batches: int) -> dict:
    """Clips/s of `function()` on a batch: best and median over `batches` calls after a warm-up."""
    function()
    seconds = []
    for _ in range(batches):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return {"best": batch_size / min(seconds), "median": batch_size / float(np.median(seconds))}


def _uint8_clips(encoder, batch_size: int, seed: int = 0) -> np.ndarray:
    _, frames, height, width, channels = encoder.get_build_config()["input_shape"]
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch_size, frames, height, width, channels), dtype=np.uint8)


def distill_clips_per_s(encoder, batch_size: int, batches: int) -> dict:
    """E in inference mode on float clips in [-1, 1], as one compiled tf.function."""
    clips = tf.constant(_uint8_clips(encoder, batch_size).astype("float32") / 127.5 - 1.0)
    predict = tf.function(lambda x: encoder(x, training=False))
    return _rate(lambda: predict(clips).numpy(), batch_size, batches)


def savedmodel_clips_per_s(encoder, export_dir: str, batch_size: int, batches: int) -> dict:
    """E exported by `avd_tf.models.export.export_encoder`, reloaded, fed uint8 clips.

    This is the serving path: uint8 in, scaling, E, uint8 images out.
    """
    export_encoder(encoder, export_dir)
    loaded = tf.saved_model.load(export_dir)
    clips = tf.constant(_uint8_clips(encoder, batch_size))
    return _rate(lambda: loaded.distill(clips)["images"].numpy(), batch_size, batches)


def dynamic_image_clips_per_s(num_frames: int, size: int, clips: int, seed: int = 0) -> dict:
    """`avd_tf.classify.dynamic_images.dynamic_image` on uint8 (T, H, W, 3) clips, one at a time.

    Cycles through 8 different clips, so that not every call finds its
    frames in the CPU's caches.
    """
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (8, num_frames, size, size, 3), dtype=np.uint8)
    calls = iter(range(1 << 62))
    return _rate(lambda: dynamic_image(pool[next(calls) % len(pool)]), 1, clips)
