"""What synchronised batch norm would cost E on one device.

Keras' `BatchNormalization(synchronized=True)` takes its all-reduce path in
any replica context, and a one-device `fit` has one: per layer it counts
elements with a ones-like tensor the size of the layer's input, sums x and
x² and all-reduces them (for nothing, on one replica), and takes the
variance as E(x²) - E(x)², which loses precision to cancellation where the
local path's two-pass moments do not. E and D therefore synchronise only
under a strategy with more than one replica (`avd_tf.models.encoder`).

`sync_batch_norm_cost` measures both paths on E's batch-norm layers at a
preset's shapes, forward and backward: the time alternating in one process
(so the ratio holds on a loaded machine) and the peak RSS of each path in
a fresh process.
"""
from __future__ import annotations

import time

from avd_tf.bench.child import run_in_child


def encoder_norm_shapes(config, batch_size: int) -> list[tuple[int, ...]]:
    """The input shape of each of E's batch-norm layers (every layer but the last)."""
    frames, shapes = config.num_frames, []
    for width, stride in zip(config.encoder_filters, config.temporal_strides):
        frames //= stride
        shapes.append((batch_size, frames, config.image_size, config.image_size, int(width)))
    return shapes


def _step(shapes, synchronized: bool):
    """A compiled forward + backward pass through one BN layer per shape, and its inputs."""
    import numpy as np
    import tensorflow as tf
    from keras import layers

    rng = np.random.default_rng(0)
    inputs = [tf.constant(rng.standard_normal(shape, dtype=np.float32)) for shape in shapes]
    norms = [layers.BatchNormalization(momentum=0.9, synchronized=synchronized)
             for _ in shapes]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.add_n([tf.reduce_mean(tf.square(norm(x, training=True)))
                             for norm, x in zip(norms, inputs)])
        return tape.gradient(loss, inputs)

    def run():
        for grad in step():
            grad.numpy()

    run()  # trace and build outside any measurement
    return run


def _peak_rss_mb(shapes, synchronized: bool, steps: int) -> float:
    """Peak RSS (MB) of this process after `steps` passes (run in a child).

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child
    would report its parent's peak.
    """
    from avd_tf.bench.memory import peak_rss_mb

    run = _step([tuple(s) for s in shapes], synchronized)
    for _ in range(steps):
        run()
    return peak_rss_mb()


def _child_peak_rss_mb(shapes, synchronized: bool, steps: int) -> float:
    return run_in_child("avd_tf.bench.batch_norm._peak_rss_mb",
                        {"shapes": shapes, "synchronized": synchronized, "steps": steps},
                        "batch-norm memory benchmark")


def sync_batch_norm_cost(config, batch_size: int, repeats: int) -> dict:
    """Median ms per pass through E's BN layers and peak RSS, synchronised vs local."""
    import numpy as np

    shapes = encoder_norm_shapes(config, batch_size)
    runs = {"sync": _step(shapes, True), "local": _step(shapes, False)}
    seconds = {name: [] for name in runs}
    for _ in range(max(int(repeats), 1)):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    sync_ms = 1e3 * float(np.median(seconds["sync"]))
    local_ms = 1e3 * float(np.median(seconds["local"]))
    sync_rss = _child_peak_rss_mb(shapes, True, 3)
    local_rss = _child_peak_rss_mb(shapes, False, 3)
    return {
        "bn_sync_step_ms": sync_ms,
        "bn_local_step_ms": local_ms,
        "bn_sync_over_local": sync_ms / local_ms,
        "bn_sync_peak_rss_mb": sync_rss,
        "bn_local_peak_rss_mb": local_rss,
    }


__all__ = ["encoder_norm_shapes", "sync_batch_norm_cost"]
