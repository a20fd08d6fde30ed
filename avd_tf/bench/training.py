"""Training throughput of AVD on in-memory clips, and the dense peak of the same process.

`measure_training` times `AVD.train_step` (compiled by Keras, one step per
call) on one fixed batch of random clips held in memory, so the figure is
the model's compute alone, with no input pipeline. In the same process,
with the same thread settings, it measures what a dense matmul and a dense
Conv3D reach (`peak_gflops`), before and after training, and the peak
resident memory of training.

`measure_training_in_subprocess` runs it in a fresh Python: TensorFlow's
oneDNN switch (TF_ENABLE_ONEDNN_OPTS) and thread pools are fixed when
TensorFlow starts, and the memory high-water mark must be training's own.

Timings: the machine may be shared, and other work only ever adds time, so
every figure keeps the best of its repeats (as `timeit` advises) next to the
median, with the load averages before and after.
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from avd_tf.bench.child import run_in_child
from avd_tf.bench.memory import peak_rss_mb

# A dense Conv3D shaped like the paper preset's middle layers (3x5x5 kernel,
# 64 -> 64 channels, 56x56 frames to keep one call near 0.1 s on 2 cores).
PEAK_CONV3D_SHAPE = (2, 8, 56, 56, 64, 64)
PEAK_MATMUL_SIZE = 2048
KERNEL = (3, 5, 5)


@dataclasses.dataclass
class TrainSettings:
    """What to time; `None` / 0 fields take the model's or TensorFlow's defaults.

    At least `steps` steps are timed after the first (which traces the step),
    and more until they add up to `min_seconds`.
    """

    preset: str = "small"
    stream: str = "rgb"
    batch_size: int = 0
    steps: int = 3
    min_seconds: float = 0.0
    jit_compile: bool = False
    dtype_policy: str | None = None
    native_strides: bool | None = None
    inter_op_threads: int = 0
    intra_op_threads: int = 0
    peak_repeats: int = 5
    profile_dir: str | None = None
    profile_steps: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.peak_repeats < 1 or self.profile_steps < 1:
            raise ValueError(
                f"TrainSettings: steps, peak_repeats and profile_steps must be >= 1, got "
                f"{self.steps}, {self.peak_repeats}, {self.profile_steps}"
            )


def _best_and_median(seconds: list[float]) -> tuple[float, float]:
    return min(seconds), float(np.median(seconds))


def _time_calls(function, repeats: int) -> list[float]:
    function()  # warm-up: tracing, allocation
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_gflops(size: int = PEAK_MATMUL_SIZE, repeats: int = 5, dtype: str = "float32") -> dict:
    """GFLOP/s of a size x size matmul in `dtype`: best and median of `repeats`."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_uniform([size, size], seed=[1, 2]), dtype)
    b = tf.cast(tf.random.stateless_uniform([size, size], seed=[3, 4]), dtype)
    matmul = tf.function(lambda: tf.linalg.matmul(a, b))
    best, median = _best_and_median(_time_calls(lambda: matmul().numpy(), repeats))
    flops = 2 * size**3
    return {"best": flops / best / 1e9, "median": flops / median / 1e9}


def conv3d_gflops(shape=PEAK_CONV3D_SHAPE, kernel=KERNEL, repeats: int = 5,
                  dtype: str = "float32") -> dict:
    """GFLOP/s of a stride-1 'same' Conv3D in `dtype`; shape is (B, T, H, W, C_in, C_out)."""
    import tensorflow as tf

    batch, frames, height, width, c_in, c_out = shape
    x = tf.cast(tf.random.stateless_uniform([batch, frames, height, width, c_in], seed=[5, 6]), dtype)
    w = tf.cast(tf.random.stateless_uniform(list(kernel) + [c_in, c_out], seed=[7, 8]), dtype)
    conv = tf.function(lambda: tf.nn.conv3d(x, w, [1, 1, 1, 1, 1], "SAME"))
    best, median = _best_and_median(_time_calls(lambda: conv().numpy(), repeats))
    flops = 2 * np.prod(kernel) * c_in * c_out * batch * frames * height * width
    return {"best": flops / best / 1e9, "median": flops / median / 1e9}


def peak_gflops(repeats: int = 5, dtype: str = "float32") -> dict:
    """Dense matmul and Conv3D GFLOP/s in `dtype`; "peak" is the higher of the two bests.

    Mixed-precision training is compared with the peak of its compute dtype
    (bfloat16 / float16): on CPUs with AMX or AVX512-FP16 that peak is
    several times float32's, and an MFU against float32 would flatter it.
    """
    matmul = matmul_gflops(repeats=repeats, dtype=dtype)
    conv = conv3d_gflops(repeats=repeats, dtype=dtype)
    return {"matmul": matmul, "conv3d": conv, "peak": max(matmul["best"], conv["best"])}


def _merge_peaks(before: dict, after: dict) -> dict:
    merged = {}
    for kind in ("matmul", "conv3d"):
        merged[kind] = {
            "best": max(before[kind]["best"], after[kind]["best"]),
            "median": float(np.median([before[kind]["median"], after[kind]["median"]])),
        }
    merged["peak"] = max(merged["matmul"]["best"], merged["conv3d"]["best"])
    return merged


def configure_threads(inter_op: int, intra_op: int) -> None:
    """Sets TF's thread pools (0 keeps TF's choice); call before any TF op runs."""
    import tensorflow as tf

    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)


def synthetic_batch(config, batch_size: int, stream: str, seed: int = 0):
    """Random clips (B, T, S, S, C) and real frames (B, S, S, 3) in [-1, 1], as tensors."""
    import tensorflow as tf

    from avd_tf.models import STREAM_CHANNELS

    size = config.image_size
    rng = np.random.default_rng(seed)
    clips = rng.uniform(-1, 1, (batch_size, config.num_frames, size, size,
                                STREAM_CHANNELS[stream])).astype("float32")
    frames = rng.uniform(-1, 1, (batch_size, size, size, 3)).astype("float32")
    return tf.constant(clips), tf.constant(frames)


def build_training_model(config, stream: str, native_strides: bool | None, jit_compile: bool):
    """`build_avd` + `compile_avd`, with the stride implementation chosen explicitly."""
    from avd_tf.models import build_avd, compile_avd

    model = build_avd(config, stream, native_strides=native_strides)
    return compile_avd(model, config, jit_compile=jit_compile)


def measure_training(settings: TrainSettings) -> dict:
    """Times training steps in this process (see the module docstring)."""
    configure_threads(settings.inter_op_threads, settings.intra_op_threads)
    import keras
    import tensorflow as tf

    from avd_tf.models import get_preset
    from avd_tf.models.encoder import onednn_enabled

    if settings.dtype_policy:
        keras.mixed_precision.set_global_policy(settings.dtype_policy)
    config = get_preset(settings.preset)
    batch_size = settings.batch_size or config.batch_size
    load_before = os.getloadavg()
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    peak_before = peak_gflops(settings.peak_repeats, compute_dtype)

    keras.utils.set_random_seed(settings.seed)
    model = build_training_model(config, settings.stream, settings.native_strides,
                                 settings.jit_compile)
    clips, frames = synthetic_batch(config, batch_size, settings.stream, settings.seed)
    start = time.perf_counter()
    model.train_on_batch(clips, frames)
    first_step = time.perf_counter() - start
    step_seconds = []
    while len(step_seconds) < settings.steps or sum(step_seconds) < settings.min_seconds:
        start = time.perf_counter()
        model.train_on_batch(clips, frames)
        step_seconds.append(time.perf_counter() - start)
    memory = peak_rss_mb()

    profile = None
    if settings.profile_dir:
        from avd_tf.bench.profile import op_time_summary

        tf.profiler.experimental.start(settings.profile_dir)
        for _ in range(settings.profile_steps):
            model.train_on_batch(clips, frames)
        tf.profiler.experimental.stop()
        profile = op_time_summary(settings.profile_dir)

    peaks = _merge_peaks(peak_before, peak_gflops(settings.peak_repeats, compute_dtype))
    best, median = _best_and_median(step_seconds)
    return {
        "settings": dataclasses.asdict(settings),
        "batch_size": batch_size,
        "first_step_seconds": first_step,
        "step_seconds": step_seconds,
        "train_clips_per_s": batch_size / best,
        "train_clips_per_s_median": batch_size / median,
        "peak_rss_mb": memory,
        "matmul_gflops_per_s": peaks["matmul"],
        "conv3d_gflops_per_s": peaks["conv3d"],
        "peak_gflops_per_s": peaks["peak"],
        "peak_dtype": compute_dtype,
        "onednn": onednn_enabled(),
        "native_strides": bool(model.encoder._native),
        "jit_compile": bool(model.jit_compile),
        "dtype_policy": keras.mixed_precision.global_policy().name,
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "profile": profile,
    }


def _measure_fields(**fields) -> dict:
    return measure_training(TrainSettings(**fields))


def measure_training_in_subprocess(
    settings: TrainSettings, onednn: bool | None = None, timeout: float | None = None
) -> dict:
    """`measure_training` in a fresh Python process; returns its result.

    `onednn` sets TF_ENABLE_ONEDNN_OPTS for that process (None: inherit).
    """
    env = {} if onednn is None else {"TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
    return run_in_child("avd_tf.bench.training._measure_fields", dataclasses.asdict(settings),
                        f"training benchmark of preset {settings.preset!r}", env=env,
                        timeout=timeout)
