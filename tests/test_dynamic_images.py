"""Tests for avd_tf.classify.dynamic_images (approximate rank pooling)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from avd_tf.classify import dynamic_images as di

LENGTHS = [1, 2, 3, 5, 10, 17, 32, 100]


def _alpha_sum_form(n):
    return [math.fsum((2 * j - n - 1) / j for j in range(t, n + 1)) for t in range(1, n + 1)]


def _official(n):
    """vl_nnarpooltemporal.m (Bilen et al.): fw = 1 when N == 1, else sum((2*(i:N)-N-1) ./ (i:N))."""
    if n == 1:
        return [1.0]
    return [sum((2 * j - n - 1) / j for j in range(i, n + 1)) for i in range(1, n + 1)]


def _alpha_harmonic_form(n):
    harmonic = [math.fsum(1.0 / i for i in range(1, k + 1)) for k in range(n + 1)]
    return [2 * (n - t + 1) - (n + 1) * (harmonic[n] - harmonic[t - 1]) for t in range(1, n + 1)]


@pytest.mark.parametrize("n", [n for n in LENGTHS if n > 1])
def test_weights_match_both_closed_forms(n):
    weights = di.rank_pool_weights(n)
    assert weights.dtype == np.float64 and weights.shape == (n,)
    np.testing.assert_allclose(weights, _alpha_sum_form(n), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(weights, _alpha_harmonic_form(n), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("n", [1, 2, 10, 25])
def test_weights_and_images_match_the_official_code(n):
    expected = np.array(_official(n))
    np.testing.assert_allclose(di.rank_pool_weights(n), expected, rtol=1e-4)
    np.testing.assert_allclose(di.tf_rank_pool_weights(n).numpy(), expected, rtol=1e-4, atol=1e-6)
    frames = np.random.default_rng(n).uniform(0, 255, (n, 4, 3, 3)).astype(np.float32)
    reference = np.tensordot(expected, frames.astype(np.float64), axes=1)
    np.testing.assert_allclose(di.dynamic_image(frames), reference, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(di.tf_dynamic_image(frames).numpy(), reference, rtol=1e-4, atol=1e-3)
    if n == 1:  # one frame: the image is the frame
        np.testing.assert_allclose(di.dynamic_image(frames), frames[0])


def test_weights_sum_to_zero_from_two_frames():
    for n in range(2, 300):
        assert abs(di.rank_pool_weights(n).sum()) < 1e-9, n
    # n = 3 by hand: alpha_3 = 2/3, alpha_2 = 2/3 + 0/2, alpha_1 = 2/3 - 2/1.
    np.testing.assert_allclose(di.rank_pool_weights(3), [-4 / 3, 2 / 3, 2 / 3])


@pytest.mark.parametrize("bad", [0, -2, 2.5])
def test_weights_reject_bad_length(bad):
    with pytest.raises(ValueError, match="rank_pool_weights"):
        di.rank_pool_weights(bad)


def _brightening_clip(rng, n=10, shape=(6, 5, 3)):
    base = rng.uniform(0, 50, shape)
    steps = rng.uniform(0.5, 10, (n,) + shape)
    return base + np.cumsum(steps, axis=0)


def test_brightening_clip_is_positive_and_darkening_negative():
    rng = np.random.default_rng(0)
    clip = _brightening_clip(rng)
    image = di.dynamic_image(clip)
    assert image.dtype == np.float32 and image.shape == (6, 5, 3)
    assert (image > 0).all()
    assert (di.dynamic_image(clip[::-1]) < 0).all()


def test_uint8_frames_and_still_clip():
    ramp = (np.arange(8, dtype=np.uint8) * 20)[:, None, None, None]
    frames = np.broadcast_to(ramp + np.uint8(10), (8, 4, 4, 3)).copy()
    assert (di.dynamic_image(frames) > 0).all()
    # Weights summing to 0 make a still clip vanish (a port without the "-1"
    # would return N times the frame).
    still = np.full((9, 4, 4, 3), 200, np.uint8)
    np.testing.assert_allclose(di.dynamic_image(still), 0.0, atol=1e-3)


def test_dynamic_image_rejects_non_clip():
    with pytest.raises(ValueError, match=r"dynamic_image.*\[N, H, W, C\]"):
        di.dynamic_image(np.zeros((4, 4, 3)))


def test_to_uint8_scales_all_channels_together():
    image = np.zeros((2, 2, 2), np.float32)
    image[..., 0] = [[0.0, 1.0], [0.5, 0.25]]
    image[..., 1] = [[0.0, 10.0], [5.0, -10.0]]
    out = di.to_uint8(image)
    assert out.dtype == np.uint8
    expected = np.rint((image - -10.0) * 255.0 / 20.0).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    # Per-channel scaling would stretch channel 0 to the full range.
    assert out[..., 0].max() < 255 and out[..., 0].min() > 0
    np.testing.assert_array_equal(di.to_uint8(np.full((3, 3, 3), 7.0)), 0)


def test_tf_version_equals_numpy_with_dynamic_length():
    rng = np.random.default_rng(1)
    frames = rng.uniform(0, 255, (12, 5, 4, 3)).astype(np.float32)
    graph_fn = tf.function(di.tf_dynamic_image,
                           input_signature=[tf.TensorSpec([None, 5, 4, 3], tf.float32)])
    for n in (1, 7, 12):
        np.testing.assert_allclose(graph_fn(frames[:n]).numpy(), di.dynamic_image(frames[:n]),
                                   rtol=1e-5, atol=1e-3)
    for n in LENGTHS:
        np.testing.assert_allclose(di.tf_rank_pool_weights(n).numpy(),
                                   di.rank_pool_weights(n), rtol=1e-6, atol=1e-6)
    # Inside tf.data, where the clip length is a run-time value.
    dataset = tf.data.Dataset.from_tensor_slices([5, 9]).map(
        lambda n: di.tf_dynamic_image(tf.constant(frames)[:n]))
    for n, image in zip((5, 9), dataset):
        np.testing.assert_allclose(image.numpy(), di.dynamic_image(frames[:n]),
                                   rtol=1e-5, atol=1e-3)


def test_window_convention():
    assert di.window_starts(30, 10, 6) == [0, 6, 12, 18]
    assert di.window_starts(10, 10, 6) == [0]
    assert di.window_starts(16, 10, 6) == [0, 6]
    assert di.window_starts(4, 10, 6) == [0]
    with pytest.raises(ValueError, match="window_starts"):
        di.window_starts(30, 0, 6)


def test_dynamic_images_over_windows():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    images = di.dynamic_images(frames)
    assert images.shape == (4, 4, 4, 3) and images.dtype == np.float32
    for k, start in enumerate((0, 6, 12, 18)):
        np.testing.assert_allclose(images[k], di.dynamic_image(frames[start:start + 10]))
    short = di.dynamic_images(frames[:7])
    assert short.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(short[0], di.dynamic_image(frames[:7]))


def test_layer_matches_numpy_rescales_and_serialises(tmp_path):
    rng = np.random.default_rng(3)
    clips = rng.uniform(0, 255, (3, 6, 5, 4, 3)).astype(np.float32)
    clips[2] = 100.0  # a still clip
    inputs = keras.Input((None, 5, 4, 3))
    raw = di.DynamicImage(name="raw")(inputs)
    scaled = di.DynamicImage(rescale=True, name="scaled")(inputs)
    model = keras.Model(inputs, [raw, scaled])
    raw_out, scaled_out = (np.asarray(t) for t in model(clips))
    expected = np.stack([di.dynamic_image(c) for c in clips])
    np.testing.assert_allclose(raw_out, expected, rtol=1e-5, atol=1e-3)
    for k in range(2):
        d = expected[k]
        np.testing.assert_allclose(scaled_out[k], 2 * (d - d.min()) / (d.max() - d.min()) - 1,
                                   atol=1e-5)
        assert scaled_out[k].min() == pytest.approx(-1) and scaled_out[k].max() == pytest.approx(1)
    np.testing.assert_allclose(scaled_out[2], 0.0, atol=1e-6)
    # Another clip length through the same model.
    np.testing.assert_allclose(np.asarray(model(clips[:, :4])[0]),
                               np.stack([di.dynamic_image(c[:4]) for c in clips]),
                               rtol=1e-5, atol=1e-3)

    path = tmp_path / "dynamic_image.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.get_layer("scaled"), di.DynamicImage)
    assert restored.get_layer("scaled").rescale and not restored.get_layer("raw").rescale
    for before, after in zip(model(clips), restored(clips)):
        np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-6)
