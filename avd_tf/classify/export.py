"""The whole AVD video classifier as one SavedModel: uint8 video in, class probabilities out.

E of the AVD model (section 3.1) distils each clip into an image, and the
fine-tuned ImageNet backbone (section 4.2) classifies it; a video's score
is the mean of its clips' softmax scores (section 4.3), as avd-evaluate
computes it. The serving graph holds the numeric path of avd-evaluate
exactly: evenly spaced clips of E's T frames (looped when the video is
shorter), each frame's short side resized to E's size and centre-cropped,
E in inference mode, the image rounded to uint8 as the stream cache stores
it, then resized to the backbone's input size and classified.

Signatures:
* "serving_default" (also "classify_video"): input "frames", uint8
  (N, H, W, C), one whole video of any length and size (C = 3 RGB, or 2
  quantised TV-L1 x / y for an AVD(OF) classifier); outputs
  "probabilities" float32 (K,) and "class_index" int32 ().
* "classify_clips": input "clips", uint8 (B, T, S, S, C), clips already at
  E's length and size (what `avd-export` of E takes); output
  "probabilities" float32 (B, K), one row per clip.

A wrong dtype is refused when the signature is called. Shapes are checked
in the graph, by assertions whose message says what was expected
(`avd_tf.models.export.checked_input`, as E's own export does).
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from avd_tf.classify.evaluate import load_model, read_model_config
from avd_tf.files import write_json_atomically
from avd_tf.inputs import augment, sampling
from avd_tf.layout import AVD_MODEL, CLASSIFIER_MODEL, CONFIG, ENCODER
from avd_tf.models.distill import encoder_spec, images_to_uint8, load_encoder
from avd_tf.models.export import CLIPS_LAYOUT, checked_input
from avd_tf.streams import AVD_STREAMS, avd_stream

VIDEO_ENDPOINT = "classify_video"
CLIPS_ENDPOINT = "classify_clips"
# avd-finetune's default when a config predates stream_parameters.
DEFAULT_CLIPS_PER_VIDEO = 4
INFO_FILE = "avd_classifier.json"


def _avd_model_dir(classifier_dir: str, config: dict, avd_model_dir: str | None) -> str:
    where = os.path.join(classifier_dir, CONFIG)
    if config["stream"] not in AVD_STREAMS:
        raise ValueError(f"{where}: stream {config['stream']!r} is not an AVD stream "
                         f"({', '.join(AVD_STREAMS)}); only those classify videos through E")
    path = avd_model_dir or config.get("avd_model_dir")
    if not path:
        raise ValueError(f"{where}: names no avd_model_dir; pass the AVD model folder")
    return path


def export_video_classifier(classifier_dir: str, export_dir: str, *,
                            avd_model_dir: str | None = None,
                            clips_per_video: int | None = None) -> dict:
    """Writes E + the fine-tuned backbone of `classifier_dir` as a SavedModel; returns its description.

    `classifier_dir`: a folder written by avd-finetune for "avd_rgb" or
    "avd_flow"; its AVD model is the one its config names unless
    `avd_model_dir` is given. `clips_per_video` defaults to the number the
    classifier's stream was distilled with. The description is also
    written to `export_dir/avd_classifier.json` (classes, signatures).
    """
    if not os.path.exists(os.path.join(classifier_dir, CLASSIFIER_MODEL)) and any(
            os.path.exists(os.path.join(classifier_dir, name)) for name in (ENCODER, AVD_MODEL)):
        raise ValueError(f"{classifier_dir}: an AVD model folder (avd-train's), not a classifier "
                         "(avd-finetune's); export E alone with avd-export --model_dir")
    config = read_model_config(classifier_dir)
    avd_dir = _avd_model_dir(classifier_dir, config, avd_model_dir)
    encoder = load_encoder(avd_dir)
    spec = encoder_spec(encoder)
    if avd_stream(spec.stream) != config["stream"]:
        raise ValueError(f"{avd_dir}: its encoder distils {spec.stream} clips, but "
                         f"{classifier_dir} was fine-tuned on {config['stream']!r}")
    classifier = load_model(classifier_dir)
    if clips_per_video is None:
        parameters = config.get("stream_parameters") or {}
        clips_per_video = int(parameters.get("clips_per_video", DEFAULT_CLIPS_PER_VIDEO))
    if clips_per_video < 1:
        raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
    input_size = int(config["input_size"])
    classes = list(config["classes"])
    span = sampling.clip_span(spec.num_frames)

    def scores(clips):
        """float clips (B, T, S, S, C) in [-1, 1] -> softmax scores (B, K)."""
        images = images_to_uint8(encoder(clips, training=False))
        # The backbone sees the cached uint8 image, resized as avd-evaluate does.
        inputs = augment.center_crop_resize(augment.to_signed_unit(images), input_size)
        return tf.cast(classifier(inputs, training=False), tf.float32)

    def classify_clips(clips):
        clips = checked_input(clips, CLIPS_ENDPOINT, "clips", CLIPS_LAYOUT,
                              [None, spec.num_frames, spec.image_size, spec.image_size,
                               spec.channels])
        return {"probabilities": scores(augment.to_signed_unit(clips))}

    def classify_video(frames):
        frames = checked_input(frames, VIDEO_ENDPOINT, "frames",
                               "(frames, height, width, channels)",
                               ["positive", "positive", "positive", spec.channels])
        length = tf.shape(frames)[0]
        starts = sampling.evenly_spaced_starts(length, clips_per_video, span)
        indices = sampling.clip_indices(starts, length, spec.num_frames)
        # Frames resized once, then gathered: the evaluation pipeline's float clips.
        resized = augment.center_crop_resize(augment.to_signed_unit(frames), spec.image_size)
        probabilities = tf.reduce_mean(scores(tf.gather(resized, indices)), axis=0)
        return {"probabilities": probabilities,
                "class_index": tf.argmax(probabilities, output_type=tf.int32)}

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.track(classifier)
    archive.add_endpoint(VIDEO_ENDPOINT, classify_video, input_signature=[
        tf.TensorSpec(None, tf.uint8, name="frames")])
    archive.add_endpoint(CLIPS_ENDPOINT, classify_clips, input_signature=[
        tf.TensorSpec(None, tf.uint8, name="clips")])
    archive.write_out(export_dir, verbose=False)
    info = {
        "export_dir": os.path.abspath(export_dir),
        "stream": config["stream"],
        "classes": classes,
        "clips_per_video": clips_per_video,
        "num_frames": spec.num_frames,
        "image_size": spec.image_size,
        "input_size": input_size,
        "backbone": config["backbone"],
        "signatures": {
            "serving_default": VIDEO_ENDPOINT,
            VIDEO_ENDPOINT: {"frames": ["uint8", [None, None, None, spec.channels]],
                             "outputs": {"probabilities": [len(classes)], "class_index": []}},
            CLIPS_ENDPOINT: {"clips": ["uint8", [None, spec.num_frames, spec.image_size,
                                                 spec.image_size, spec.channels]],
                             "outputs": {"probabilities": [None, len(classes)]}},
        },
    }
    write_json_atomically(os.path.join(export_dir, INFO_FILE), info, sort_keys=False)
    return info


__all__ = ["CLIPS_ENDPOINT", "INFO_FILE", "VIDEO_ENDPOINT", "export_video_classifier"]
