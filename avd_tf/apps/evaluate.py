r"""avd-evaluate: video-level accuracy of fine-tuned models and of their late fusions.

  avd-evaluate --model_dirs ft/flow,ft/avd_flow,ft/avd_rgb --output results.json \
      --confusion_png confusion.png --markdown table.md

Each model's test images are classified, their softmax scores averaged per
video (paper section 4.3), and every combination of two or more streams is
fused by averaging video scores (Table 1), unless --fusions names some.
results.json holds top-1/top-5 (fractions) and video counts per stream and
fusion; a Markdown table like the paper's is printed.

Cross-dataset (Table 3): a model fine-tuned on dataset A, tested on B:

  avd-evaluate --model_dirs ucf_ft/avd_rgb --data_dir prepared/hmdb51_s1 \
      --label_map name --output cross.json

Only B's test videos whose class matches one of A's count (names compared
ignoring case and separators; or --label_map FILE.json {B class: A class}).
"""
from __future__ import annotations

import sys

from absl import app, flags

from avd_tf.apps import describe, run_program

FLAGS = flags.FLAGS
flags.DEFINE_list("model_dirs", None, "Fine-tuned model folders (model.keras + config.json), one per stream.")
flags.DEFINE_string("data_dir", None, "Prepared dataset to test on; default: the first model's config data_dir.")
flags.DEFINE_string("split", "test", "Split of --data_dir to evaluate.")
flags.DEFINE_enum("fuse", "mean", ["mean", "weighted"], "Late fusion: equal weights, or --fusion_weights.")
flags.DEFINE_list("fusion_weights", None, "With --fuse weighted: one weight per model folder, e.g. 1,1.5.")
flags.DEFINE_string(
    "fusions", None,
    "Fusions to report, e.g. 'flow+avd_flow+avd_rgb,avd_flow+avd_rgb'; default: all of 2+ streams.",
)
flags.DEFINE_integer("batch_size", 64, "Images per prediction batch.")
flags.DEFINE_string("output", None, "Where results.json goes.")
flags.DEFINE_string("confusion_png", None, "Confusion matrix of the best stream or fusion, as PNG.")
flags.DEFINE_string("markdown", None, "Also write the Markdown table to this file.")
flags.DEFINE_string(
    "label_map", None,
    "Test on another dataset: 'name' matches classes by name, or a JSON file {test class: model class}.",
)
flags.DEFINE_list("stream_dirs", None, "stream=folder pairs of already made image-stream shards to read.")
flags.DEFINE_boolean(
    "allow_partial", False,
    "Fuse over the videos all members scored when streams cover different videos (default: error).",
)
flags.DEFINE_boolean("progress", True, "Show progress while making streams.")
flags.mark_flags_as_required(["model_dirs", "output"])


def _stream_dirs(pairs):
    dirs = {}
    for pair in pairs or ():
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise app.UsageError(f"--stream_dirs: expected stream=folder, got {pair!r}")
        dirs[name] = folder
    return dirs


def main(argv):
    del argv
    try:
        weights = [float(w) for w in FLAGS.fusion_weights] if FLAGS.fusion_weights else None
    except ValueError:
        raise app.UsageError(f"--fusion_weights: not numbers: {','.join(FLAGS.fusion_weights)}") from None
    stream_dirs = _stream_dirs(FLAGS.stream_dirs)
    from avd_tf.classify.evaluate import evaluate, read_model_config
    from avd_tf.inputs.shards import readable_shards

    try:
        data_dir = FLAGS.data_dir or read_model_config(FLAGS.model_dirs[0])["data_dir"]
        with readable_shards(data_dir):
            evaluate(
                FLAGS.model_dirs,
                data_dir=data_dir,
                split=FLAGS.split,
                fuse=FLAGS.fuse,
                fusions=FLAGS.fusions,
                weights=weights,
                batch_size=FLAGS.batch_size,
                output=FLAGS.output,
                confusion_png=FLAGS.confusion_png,
                markdown=FLAGS.markdown,
                label_map=FLAGS.label_map,
                stream_dirs=stream_dirs,
                strict=not FLAGS.allow_partial,
                progress=FLAGS.progress,
            )
    except (OSError, ValueError) as error:
        sys.exit(f"avd-evaluate: {describe(error)}")
    print(f"results: {FLAGS.output}")
    return 0


def run():
    run_program("avd-evaluate", main)


if __name__ == "__main__":
    run()
