"""E as a SavedModel for serving (docs/design.md, section 5): uint8 clips in, uint8 images out.

The serving function holds the whole numeric path of `avd_tf.models.distill`
after sampling and resizing: q / 255 * 2 - 1, E in inference mode, and
round((x + 1) * 127.5) back to uint8. Clips must already have the model's T
frames of S x S pixels (`distill.prepare_clip` makes them from any clip);
for flow encoders the two channels are the quantised x / y images.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from avd_tf.inputs.augment import to_signed_unit
from avd_tf.models.distill import encoder_spec, images_to_uint8, load_encoder

ENDPOINT = "distill"
INPUT_NAME = "clips"
OUTPUT_NAME = "images"


def export_encoder(model_dir_or_encoder, export_dir: str) -> dict:
    """Writes E as a SavedModel to `export_dir`; returns what it reads and writes.

    Signatures "serving_default" and "distill" (the same function): input
    "clips" uint8 (B, T, S, S, C) -> output "images" uint8 (B, S, S, 3).
    After `loaded = tf.saved_model.load(export_dir)`,
    `loaded.distill(clips)["images"]` is the same tensor. Written with Keras' `ExportArchive`,
    which tracks the Keras variables for `tf.saved_model.save`.
    """
    encoder = load_encoder(model_dir_or_encoder)
    spec = encoder_spec(encoder)

    def serve(clips):
        return {OUTPUT_NAME: images_to_uint8(encoder(to_signed_unit(clips), training=False))}

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint(
        ENDPOINT,
        serve,
        input_signature=[
            tf.TensorSpec(
                [None, spec.num_frames, spec.image_size, spec.image_size, spec.channels],
                tf.uint8,
                name=INPUT_NAME,
            )
        ],
    )
    archive.write_out(export_dir, verbose=False)
    return {
        "export_dir": os.path.abspath(export_dir),
        "stream": spec.stream,
        "input": {"name": INPUT_NAME, "dtype": "uint8",
                  "shape": [None, spec.num_frames, spec.image_size, spec.image_size,
                            spec.channels]},
        "output": {"name": OUTPUT_NAME, "dtype": "uint8",
                   "shape": [None, spec.image_size, spec.image_size, 3]},
        "signatures": ["serving_default", ENDPOINT],
    }


__all__ = ["ENDPOINT", "INPUT_NAME", "OUTPUT_NAME", "export_encoder"]
