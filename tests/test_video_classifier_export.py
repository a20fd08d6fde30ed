"""The whole video classifier (E + fine-tuned backbone) as a SavedModel: a real fine-tuning
step on distilled images, export, reload, and the same video scores as avd-evaluate's path."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from avd_tf import streams
from avd_tf.classify import evaluate as ev
from avd_tf.classify import scores
from avd_tf.classify.export import INFO_FILE, export_video_classifier
from avd_tf.classify.finetune import finetune
from avd_tf.classify.stream_images import decoded_videos
from avd_tf.inputs import clip_dataset
from avd_tf.inputs.images import stream_dataset
from avd_tf.models import build_avd
from conftest import prepared_motion_videos

CLASSES = ["TranslateLeft", "TranslateRight"]
FRAMES, SIZE, INPUT_SIZE, CLIPS = 14, 32, 64, 3


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_motion_videos(tmp_path_factory.mktemp("classifier_export"), CLASSES, FRAMES, SIZE)


def avd_model(root, source):
    """An AVD model folder as avd-train writes it; exporting needs only E, trained or not."""
    model_dir = root / f"avd_{source}"
    model_dir.mkdir()
    keras.utils.set_random_seed(3)
    build_avd("small", stream=source, image_size=SIZE).encoder.save(model_dir / "encoder.keras")
    (model_dir / "config.json").write_text(json.dumps({"stream": source, "preset": "small"}))
    return str(model_dir)


@pytest.mark.parametrize("source", list(streams.CLIP_CHANNELS))
@pytest.mark.slow
def test_saved_video_classifier_gives_avd_evaluates_video_scores(data_dir, tmp_path, source):
    stream = streams.avd_stream(source)
    avd_dir = avd_model(tmp_path, source)
    classifier_dir = str(tmp_path / "classifier")
    finetune(data_dir, stream, classifier_dir, backbone="alexnet", weights="none", epochs=1,
             steps_per_epoch=2, batch_size=4, input_size=INPUT_SIZE, seed=0, lr=0.01,
             avd_model_dir=avd_dir, clips_per_video=CLIPS, progress=False, log=lambda _: None)
    export_dir = tmp_path / "export"
    info = export_video_classifier(classifier_dir, str(export_dir))
    assert info["classes"] == CLASSES and info["clips_per_video"] == CLIPS
    assert json.loads((export_dir / INFO_FILE).read_text()) == info
    loaded = tf.saved_model.load(str(export_dir))
    assert {"serving_default", "classify_video", "classify_clips"} <= set(loaded.signatures)

    # avd-evaluate's path: the cached stream of distilled images, the Keras classifier,
    # clip scores averaged per video.
    config = ev.read_model_config(classifier_dir)
    model = ev.load_model(classifier_dir)
    stream_dir = config["stream_dir"]
    probs, ids, labels = ev.predict(model, stream_dataset(
        stream_dir, "test", size=INPUT_SIZE, training=False, batch_size=8))
    video_ids, video_probs, _ = scores.video_scores(probs, ids, labels)
    expected = dict(zip(video_ids, video_probs))
    # The clips of a video score differently, so taking other clips would show.
    spread = max(np.ptp(probs[ids == video_id], axis=0).max() for video_id in expected)
    assert spread > 1e-5

    serve = loaded.signatures["serving_default"]
    seen = 0
    for video in decoded_videos(data_dir, "test", flow=source == "flow"):
        video_id = video["video_id"].numpy().decode()
        out = serve(frames=video["frames"])
        np.testing.assert_allclose(out["probabilities"].numpy(), expected[video_id], atol=1e-6)
        assert int(out["class_index"]) == int(np.argmax(expected[video_id]))
        seen += 1
    assert seen == len(expected) == 2

    # Clips already at E's size: one row per clip, each the classifier's score of E's image.
    batch = next(iter(clip_dataset(data_dir, "test", stream=source, num_frames=8, size=SIZE,
                                   training=False, clips_per_video=CLIPS, batch_size=CLIPS)))
    clips = np.round((batch["clip"].numpy() + 1.0) * 127.5).astype(np.uint8)
    by_clip = loaded.classify_clips(tf.constant(clips))["probabilities"].numpy()
    assert by_clip.shape == (CLIPS, len(CLASSES))
    np.testing.assert_allclose(by_clip.mean(axis=0), expected[batch["video_id"][0].numpy().decode()],
                               atol=1e-6)


@pytest.mark.slow
def test_only_avd_classifiers_export_and_the_program_says_why(data_dir, tmp_path):
    classifier_dir = str(tmp_path / "frame_classifier")
    finetune(data_dir, "frame", classifier_dir, backbone="alexnet", weights="none", epochs=1,
             steps_per_epoch=1, batch_size=4, input_size=INPUT_SIZE, seed=0, progress=False,
             log=lambda _: None)
    with pytest.raises(ValueError, match="config.json: stream 'frame' is not an AVD stream"):
        export_video_classifier(classifier_dir, str(tmp_path / "export"))
    with pytest.raises(ValueError, match="an AVD model folder .* avd-export --model_dir"):
        export_video_classifier(avd_model(tmp_path, "rgb"), str(tmp_path / "export"))
    run = subprocess.run([sys.executable, "-m", "avd_tf.apps.export", "--classifier_dir",
                          classifier_dir, "--export_dir", str(tmp_path / "export")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"avd-export: {classifier_dir}/config.json")


@pytest.mark.slow
def test_the_signatures_say_what_input_they_expect(data_dir, tmp_path):
    classifier_dir = str(tmp_path / "classifier")
    finetune(data_dir, "avd_rgb", classifier_dir, backbone="alexnet", weights="none", epochs=1,
             steps_per_epoch=1, batch_size=4, input_size=INPUT_SIZE, seed=0,
             avd_model_dir=avd_model(tmp_path, "rgb"), clips_per_video=CLIPS, progress=False,
             log=lambda _: None)
    export_dir = str(tmp_path / "export")
    export_video_classifier(classifier_dir, export_dir)
    loaded = tf.saved_model.load(export_dir)
    # A signature called directly (as TF Serving does) and the restored function.
    calls = {"signature": lambda frames: loaded.signatures["serving_default"](frames=frames),
             "function": loaded.classify_video}
    expected = "classify_video: input frames must be uint8 (frames, height, width, channels)"
    bad = [
        (np.zeros((0, 32, 32, 3), np.uint8), "with frames >= 1"),
        (np.zeros((4, 0, 32, 3), np.uint8), "with height >= 1"),
        (np.zeros((4, 32, 0, 3), np.uint8), "with width >= 1"),
        (np.zeros((4, 32, 32, 2), np.uint8), "with channels = 3"),
        (np.zeros((32, 32, 3), np.uint8), "a tensor of rank 4"),
        (np.zeros((1, 4, 32, 32, 3), np.uint8), "a tensor of rank 4"),
        (np.uint8(7), "a tensor of rank 4"),
    ]
    for call in calls.values():
        for frames, reason in bad:
            with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(f"{expected}, {reason}")):
                call(tf.constant(frames))
        # One frame of an odd size is a video.
        probabilities = call(tf.constant(np.full((1, 5, 7, 3), 90, np.uint8)))["probabilities"]
        np.testing.assert_allclose(float(tf.reduce_sum(probabilities)), 1.0, rtol=1e-5)

    floats = tf.zeros((4, 32, 32, 3), tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor but is a float"):
        calls["signature"](floats)
    with pytest.raises(TypeError, match=re.escape("dtype=tf.uint8")):
        calls["function"](floats)

    clips = loaded.signatures["classify_clips"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
            "classify_clips: input clips must be uint8 (clips, frames, height, width, channels), "
            "with frames = 8")):
        clips(clips=tf.zeros((2, 4, SIZE, SIZE, 3), tf.uint8))
    assert clips(clips=tf.zeros((2, 8, SIZE, SIZE, 3), tf.uint8))["probabilities"].shape == (2, len(CLASSES))
