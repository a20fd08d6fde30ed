"""The motion diagnostic (avd_tf.models.diagnostics) on hand-built clips, and Eq. 1-3's forms in AVD."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from avd_tf.models import build_avd, compile_avd, get_preset
from avd_tf.models.diagnostics import MAX_PSNR_DB, GradientRatio, motion_diagnostics

SIZE = 16
TINY = dict(image_size=SIZE, teacher_input_resolution=SIZE, encoder_filters=(4, 4, 4, 4),
            decoder_filters=(4, 4, 4, 4), teacher_units=(8, 8, 8, 8))


def moving_clips(count=3, frames=8, seed=0):
    """Random textures translating one pixel a frame, in [-1, 1]: (count, frames, S, S, 3)."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        texture = rng.uniform(-1, 1, (SIZE, SIZE + frames, 3)).astype("float32")
        clips.append(np.stack([texture[:, t:t + SIZE] for t in range(frames)]))
    return np.stack(clips)


def test_static_clip_has_no_motion_gain():
    clip = np.repeat(moving_clips(1)[:, :1], 8, axis=1)  # one frame, eight times
    noise = np.random.default_rng(1).normal(0, 0.05, clip.shape).astype("float32")
    for reconstruction in (clip, clip + noise, np.zeros_like(clip)):
        figures = motion_diagnostics(clip, reconstruction)
        assert figures["motion_gain_db"] <= 0.0
        assert figures["motion_r2"] == 0.0  # no temporal variance to recover
    assert motion_diagnostics(clip, clip)["still_psnr"] == pytest.approx(MAX_PSNR_DB)


def test_moving_clip_gain_and_r2_against_hand_computed_values():
    clips = moving_clips()
    still = np.broadcast_to(clips.mean(axis=1, keepdims=True), clips.shape)
    # A still reconstruction recovers no motion, whatever its appearance error.
    figures = motion_diagnostics(clips, still)
    assert figures["motion_gain_db"] == pytest.approx(0.0, abs=1e-4)
    assert figures["motion_r2"] == pytest.approx(0.0, abs=1e-6)
    shifted = still + 0.3  # a wrong mean frame: worse PSNR, still no motion
    assert motion_diagnostics(clips, shifted)["motion_gain_db"] < -1
    assert motion_diagnostics(clips, shifted)["motion_r2"] == pytest.approx(0.0, abs=1e-6)
    # Half of the motion, by hand: R = mean + 0.5 (V - mean).
    half = still + 0.5 * (clips - still)
    figures = motion_diagnostics(clips, half)
    assert figures["motion_r2"] == pytest.approx(0.75, abs=1e-5)  # 1 - 0.5^2
    # PSNR per frame on [0, 1] frames, averaged over frames and clips.
    def psnr(a, b):
        mse = ((a - b) ** 2).mean(axis=(2, 3, 4)) / 4
        return (10 * np.log10(1 / mse)).mean(axis=1)
    expected_gain = np.mean(psnr(half, clips) - psnr(still, clips))
    assert figures["motion_gain_db"] == pytest.approx(expected_gain, rel=1e-4)
    assert expected_gain == pytest.approx(10 * np.log10(4), abs=0.05)  # error halved: +6 dB
    # The appearance error of a wrong mean frame does not touch motion_r2.
    assert motion_diagnostics(clips, half + 0.3)["motion_r2"] == pytest.approx(0.75, abs=1e-5)


def test_gradient_ratio_pools_squared_norms_and_skips_non_finite_steps():
    metric = GradientRatio()
    metric.update_state(tf.constant([3.0, 4.0]), tf.constant([1.0, 0.0]))  # 25 / 1
    metric.update_state(tf.constant([0.0, 0.0]), tf.constant([0.0, 7.0]))  # 0 / 49
    metric.update_state(tf.constant([np.inf, 0.0]), tf.constant([1.0, 0.0]))
    assert float(metric.result()) == pytest.approx(np.sqrt(25 / 50))


def model_and_batch(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    config = get_preset("small", **{**TINY, **overrides})
    model = compile_avd(build_avd(config, "rgb"), config, run_eagerly=True)
    clips = moving_clips(4)
    real = moving_clips(4, seed=1)[:, 0]
    return model, clips, real


@pytest.mark.parametrize("rec_loss", ["sum", "mean"])
def test_eq1_reduction(rec_loss):
    model, clips, real = model_and_batch(rec_loss=rec_loss)
    errors = (model.decoder(model.encoder(clips, training=False), training=False) - clips) ** 2
    reduce = np.sum if rec_loss == "sum" else np.mean
    expected = np.mean(reduce(np.asarray(errors), axis=(1, 2, 3, 4)))
    logs = model.evaluate(clips, verbose=0, return_dict=True)
    assert logs["rec_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("gen_loss", ["nonsaturating", "saturating"])
@pytest.mark.slow
def test_generator_loss_form_and_gradient_ratio(gen_loss):
    """gen_loss is Eq. 2's E side in the chosen form; grad_ratio compares Eq. 3's two terms at E's output."""
    model, clips, real = model_and_batch(gen_loss=gen_loss, lam=0.5)
    # T frozen (learning rate 0), so the step's Eq. 3 sees the T we read here.
    model.compile(ed_optimizer=keras.optimizers.Adam(1e-3), t_optimizer=keras.optimizers.SGD(0.0),
                  run_eagerly=True)
    images = model.encoder(clips, training=True)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        rec = tf.reduce_mean(tf.reduce_sum((model.decoder(images, training=True) - clips) ** 2,
                                           axis=(1, 2, 3, 4)))
        logits = model.teacher(images, training=True, return_logits=True)[:, 0]
        probability = tf.sigmoid(logits)
        gen = tf.reduce_mean(-tf.math.log(probability) if gen_loss == "nonsaturating"
                             else tf.math.log(1 - probability))
        rec_term, gen_term = 0.5 * rec, 0.5 * gen
    expected_ratio = float(tf.norm(tape.gradient(gen_term, images))
                           / tf.norm(tape.gradient(rec_term, images)))
    logs = model.train_on_batch(clips, real, return_dict=True)
    assert (logs["gen_loss"] < 0) == (gen_loss == "saturating")  # log(1 - T) <= 0 <= -log T
    assert logs["gen_loss"] == pytest.approx(float(gen), rel=1e-4)
    assert logs["grad_ratio"] == pytest.approx(expected_ratio, rel=1e-3)
    # With lam = 1 the teacher does not reach E: the ratio is 0.
    model, clips, real = model_and_batch(gen_loss=gen_loss, lam=1.0)
    assert model.train_on_batch(clips, real, return_dict=True)["grad_ratio"] == 0.0
