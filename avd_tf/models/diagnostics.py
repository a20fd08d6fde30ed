"""Does a distilled image hold the clip's motion? Measured through D's reconstruction.

E maps a clip V (T frames) to one image and D rebuilds the clip from it
(Eq. 1). A still picture can at best give back the clip's mean frame on
every frame, so D(E(V)) beats that only if the image carries temporal
information. Two figures say how much (our diagnostic; the paper reports
none):

* `motion_gain_db = psnr - still_psnr`: PSNR of D(E(V)) against V minus the
  PSNR of the best still reconstruction (V's mean frame repeated). Above 0:
  the image holds something no still picture holds.
* `motion_r2 = 1 - sum |(R - mean_t R) - (V - mean_t V)|^2 / sum |V - mean_t V|^2`
  with R = D(E(V)): the share of the clip's temporal variance that the
  reconstruction's own temporal variation recovers, pooled over all clips.
  It ignores appearance errors (a wrong mean frame costs nothing here), so it
  isolates motion. 0 for any still reconstruction; 1 when the motion is exact.

PSNRs are per frame on frames mapped from [-1, 1] to [0, 1], averaged over
frames, capped at MAX_PSNR_DB (a static clip's still reconstruction is exact).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

MAX_PSNR_DB = 100.0
# Summed squared temporal deviation below which clips count as static (float
# rounding of a mean); one 8-bit level in [-1, 1] squared is 6e-5.
STATIC_VARIANCE = 1e-6


def frame_psnr(predicted, target):
    """PSNR (dB) per frame of (B, T, H, W, C) clips in [-1, 1]: shape (B, T), capped at MAX_PSNR_DB."""
    # Frames in [-1, 1] map to [0, 1] by (x + 1) / 2, which divides the squared error by 4.
    mse = ops.mean(ops.square(predicted - target), axis=(2, 3, 4)) / 4.0
    floor = 10.0 ** (-MAX_PSNR_DB / 10.0)
    return -10.0 * ops.log(ops.maximum(mse, floor)) / ops.log(10.0)


def still_reconstruction(clips):
    """Each clip's mean frame repeated over its T frames: the best still picture for L2."""
    return ops.broadcast_to(ops.mean(clips, axis=1, keepdims=True), ops.shape(clips))


def clip_psnrs(clips, reconstruction) -> dict:
    """Per clip (B,): "psnr" of `reconstruction`, "still_psnr", and "motion_gain_db", their difference."""
    psnr = ops.mean(frame_psnr(reconstruction, clips), axis=1)
    still = ops.mean(frame_psnr(still_reconstruction(clips), clips), axis=1)
    return {"psnr": psnr, "still_psnr": still, "motion_gain_db": psnr - still}


def temporal_errors(clips, reconstruction):
    """Per clip (B,): the residual of the recovered temporal variation, and the clip's temporal variance."""
    motion = clips - ops.mean(clips, axis=1, keepdims=True)
    recovered = reconstruction - ops.mean(reconstruction, axis=1, keepdims=True)
    axes = (1, 2, 3, 4)
    return ops.sum(ops.square(recovered - motion), axis=axes), ops.sum(ops.square(motion), axis=axes)


class _PooledRatio(keras.metrics.Metric):
    """Two sums accumulated over every batch (and added over replicas); `result` combines them."""

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.numerator = self.add_variable(shape=(), initializer="zeros", name="numerator")
        self.denominator = self.add_variable(shape=(), initializer="zeros", name="denominator")

    def _add(self, numerator, denominator):
        self.numerator.assign_add(ops.cast(numerator, "float32"))
        self.denominator.assign_add(ops.cast(denominator, "float32"))

    def _ratio(self):
        return self.numerator / ops.maximum(self.denominator, 1e-30)

    def reset_state(self):
        self.numerator.assign(0.0)
        self.denominator.assign(0.0)


@keras.saving.register_keras_serializable(package="avd_tf")
class MotionR2(_PooledRatio):
    """`motion_r2` (module docstring), pooled over every clip seen: 1 - sum(residual) / sum(variance).

    Pooling (not a mean of per-clip ratios) keeps near-static clips, whose
    ratio is unstable, from dominating. Without temporal variance (below
    STATIC_VARIANCE, a fraction of one 8-bit level's squared step) it is 0.
    """

    def __init__(self, name="motion_r2", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, clips, reconstruction, sample_weight=None):
        residual, variance = temporal_errors(
            ops.cast(clips, "float32"), ops.cast(reconstruction, "float32")
        )
        self._add(ops.sum(residual), ops.sum(variance))

    def result(self):
        return ops.where(self.denominator > STATIC_VARIANCE, 1.0 - self._ratio(), 0.0)


@keras.saving.register_keras_serializable(package="avd_tf")
class GradientRatio(_PooledRatio):
    """sqrt(sum |g_a|^2 / sum |g_b|^2) of two gradients over every step seen.

    AVD logs it as `grad_ratio`: Eq. 3's adversarial term against its
    reconstruction term, both differentiated at E's output. Summing squared
    norms makes the figure of several replicas (each holding a slice of the
    batch's gradient) that of one device. A step whose gradients are not
    finite (a mixed-precision step that the loss scaler skips) is left out.
    """

    def __init__(self, name="grad_ratio", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, gradient_a, gradient_b, sample_weight=None):
        a = ops.sum(ops.square(ops.cast(gradient_a, "float32")))
        b = ops.sum(ops.square(ops.cast(gradient_b, "float32")))
        finite = ops.logical_and(ops.isfinite(a), ops.isfinite(b))
        self._add(ops.where(finite, a, 0.0), ops.where(finite, b, 0.0))

    def result(self):
        return ops.sqrt(self._ratio())


def motion_diagnostics(clips, reconstruction) -> dict:
    """The module's figures over a whole batch, as Python floats (for tests and reports)."""
    clips = tf.convert_to_tensor(clips, tf.float32)
    reconstruction = tf.convert_to_tensor(reconstruction, tf.float32)
    figures = {k: float(ops.mean(v)) for k, v in clip_psnrs(clips, reconstruction).items()}
    metric = MotionR2()
    metric.update_state(clips, reconstruction)
    figures["motion_r2"] = float(metric.result())
    return figures


__all__ = [
    "GradientRatio",
    "MAX_PSNR_DB",
    "MotionR2",
    "clip_psnrs",
    "frame_psnr",
    "motion_diagnostics",
    "still_reconstruction",
    "temporal_errors",
]
