"""E as a SavedModel for serving (docs/design.md, section 5): uint8 clips in, uint8 images out.

The serving function holds the whole numeric path of `avd_tf.models.distill`
after sampling and resizing: q / 255 * 2 - 1, E in inference mode, and
round((x + 1) * 127.5) back to uint8. Clips must already have the model's T
frames of S x S pixels (`distill.prepare_clip` makes them from any clip);
for flow encoders the two channels are the quantised x / y images.

A wrong dtype is refused when the signature is called. Shapes are checked
in the graph (`checked_input`), by assertions whose message says what was
expected: the signatures take a uint8 tensor of any shape, because a
signature called directly (as TF Serving does) checks only the dtype, and a
fixed-rank input spec would let a wrong rank through to fail deep in the
graph. `avd_tf.classify.export` checks its inputs the same way.
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
CLIPS_LAYOUT = "(clips, frames, height, width, channels)"


def checked_input(tensor, endpoint: str, name: str, layout: str, sizes: list) -> tf.Tensor:
    """`tensor` once the graph has asserted its rank and sizes.

    `layout` names the axes, e.g. "(frames, height, width, channels)";
    `sizes` has one entry per axis: an int the size must equal, "positive"
    (at least 1), or None (any).
    """
    # No quotes: the assertion message shows them escaped.
    expected = f"{endpoint}: input {name} must be uint8 {layout}"
    rank = tf.debugging.assert_equal(tf.rank(tensor), len(sizes),
                                     message=f"{expected}, a tensor of rank {len(sizes)}")
    # After the rank check, so that indexing a shape of another rank cannot fail first.
    with tf.control_dependencies([rank]):
        shape = tf.shape(tensor)
    checks = []
    for axis, (size, label) in enumerate(zip(sizes, layout.strip("()").split(", "))):
        if size == "positive":
            checks.append(tf.debugging.assert_positive(
                shape[axis], message=f"{expected}, with {label} >= 1"))
        elif size is not None:
            checks.append(tf.debugging.assert_equal(
                shape[axis], size, message=f"{expected}, with {label} = {size}"))
    with tf.control_dependencies(checks):
        tensor = tf.identity(tensor)
    # Static shape only: tf.ensure_shape would be evaluated before the assertions.
    tensor.set_shape([size if isinstance(size, int) else None for size in sizes])
    return tensor


def export_encoder(model_dir_or_encoder, export_dir: str) -> dict:
    """Writes E as a SavedModel to `export_dir`; returns what it reads and writes.

    Signatures "serving_default" and "distill" (the same function): input
    "clips" uint8 (B, T, S, S, C) -> output "images" uint8 (B, S, S, 3);
    another rank or T, S, C is refused by the graph's assertions.
    After `loaded = tf.saved_model.load(export_dir)`,
    `loaded.distill(clips)["images"]` is the same tensor. Written with Keras' `ExportArchive`,
    which tracks the Keras variables for `tf.saved_model.save`.
    """
    encoder = load_encoder(model_dir_or_encoder)
    spec = encoder_spec(encoder)
    shape = [None, spec.num_frames, spec.image_size, spec.image_size, spec.channels]

    def serve(clips):
        clips = checked_input(clips, ENDPOINT, INPUT_NAME, CLIPS_LAYOUT, shape)
        return {OUTPUT_NAME: images_to_uint8(encoder(to_signed_unit(clips), training=False))}

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint(ENDPOINT, serve,
                         input_signature=[tf.TensorSpec(None, tf.uint8, name=INPUT_NAME)])
    archive.write_out(export_dir, verbose=False)
    return {
        "export_dir": os.path.abspath(export_dir),
        "stream": spec.stream,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": shape},
        "output": {"name": OUTPUT_NAME, "dtype": "uint8",
                   "shape": [None, spec.image_size, spec.image_size, 3]},
        "signatures": ["serving_default", ENDPOINT],
    }


__all__ = ["CLIPS_LAYOUT", "ENDPOINT", "INPUT_NAME", "OUTPUT_NAME", "checked_input",
           "export_encoder"]
