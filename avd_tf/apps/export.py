r"""avd-export: E of a trained AVD model as a SavedModel for serving.

  avd-export --model_dir runs/avd_rgb --export_dir exported/avd_rgb/1

Signature "serving_default" (also "distill"): input "clips", uint8
(B, T, S, S, C) with the model's clip length T, size S and channels C (3 RGB,
2 quantised flow x / y); output "images", uint8 (B, S, S, 3). Load it with
`tf.saved_model.load(export_dir)` or serve it with TF Serving.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "AVD model folder written by avd-train (or a .keras file).")
flags.DEFINE_string("export_dir", None, "SavedModel folder to write.")
flags.mark_flags_as_required(["model_dir", "export_dir"])


def main(argv):
    del argv
    from avd_tf.models.export import export_encoder

    try:
        info = export_encoder(FLAGS.model_dir, FLAGS.export_dir)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"avd-export: {error}")
    print(json.dumps(info))
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
