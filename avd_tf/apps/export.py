r"""avd-export: a trained model as a SavedModel for serving.

  avd-export --model_dir runs/avd_rgb --export_dir exported/avd_rgb/1
  avd-export --classifier_dir runs/cls_avd_rgb --export_dir exported/video_classifier/1

With --model_dir (an AVD model, avd-train): E alone. Signature
"serving_default" (also "distill"): input "clips", uint8 (B, T, S, S, C)
with the model's clip length T, size S and channels C (3 RGB, 2 quantised
flow x / y); output "images", uint8 (B, S, S, 3).

With --classifier_dir (an avd_rgb / avd_flow classifier, avd-finetune): the
whole video classifier, E + backbone. Signature "serving_default" (also
"classify_video"): input "frames", uint8 (N, H, W, C), one video of any
length and size; outputs "probabilities" (K,), the mean softmax of its
evenly spaced clips, and "class_index". "classify_clips" takes uint8 clips
(B, T, S, S, C) and returns "probabilities" (B, K).

Load either with `tf.saved_model.load(export_dir)` or serve it with TF Serving.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags

from avd_tf.apps import describe, run_program

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "AVD model folder written by avd-train (or a .keras "
                    "file): export E.")
flags.DEFINE_string("classifier_dir", None, "Classifier folder written by avd-finetune for "
                    "avd_rgb or avd_flow: export E + the backbone as a video classifier.")
flags.DEFINE_string("avd_model_dir", None, "With --classifier_dir: the AVD model to use "
                    "instead of the one its config.json names.")
flags.DEFINE_integer("clips_per_video", None, "With --classifier_dir: clips averaged per video "
                     "(default: as the classifier's stream was distilled).")
flags.DEFINE_string("export_dir", None, "SavedModel folder to write.")
flags.mark_flags_as_required(["export_dir"])
flags.mark_flags_as_mutual_exclusive(["model_dir", "classifier_dir"], required=True)


def main(argv):
    del argv
    try:
        # Made first: TensorFlow's writer reports a path that cannot be a folder
        # with its own error type and no file name.
        os.makedirs(FLAGS.export_dir, exist_ok=True)
        if FLAGS.classifier_dir:
            from avd_tf.classify.export import export_video_classifier

            info = export_video_classifier(FLAGS.classifier_dir, FLAGS.export_dir,
                                           avd_model_dir=FLAGS.avd_model_dir,
                                           clips_per_video=FLAGS.clips_per_video)
        else:
            from avd_tf.models.export import export_encoder

            info = export_encoder(FLAGS.model_dir, FLAGS.export_dir)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"avd-export: {describe(error)}")
    print(json.dumps(info))
    return 0


def run():
    run_program("avd-export", main)


if __name__ == "__main__":
    run()
