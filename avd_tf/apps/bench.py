r"""avd-bench: how fast AVD trains, reads its input, distils, and prepares data here.

  avd-bench [--quick] [--output bench.json] [--markdown bench.md] [--readme README.md]
            [--preset paper,small]
  avd-bench --scale [--scale_sizes 1000,4000,13320] [--output scale.json] [--readme README.md]

For each preset (paper: 32-frame 112x112 clips; small: 8-frame 32x32;
`avd_tf.bench.suite`):

* training: `AVD.train_step` on random clips in memory, in a fresh process
  (`avd_tf.bench.training`), with its model FLOPs counted from the layer
  shapes and by TF's profiler (`avd_tf.bench.flops`), the dense matmul /
  Conv3D peak of the same process, their ratio (MFU), and peak memory;
* input: the tf.data pipeline alone on shards prepared in a temporary folder
  (`avd_tf.bench.inputs`), and its ratio to training;
* distill: E alone, compiled, and as the SavedModel of avd-export;
* TV-L1 flow pairs/s with 1 and N = os.cpu_count() worker processes, and
  dynamic images per second (`avd_tf.bench.preparation`, `.inference`).

--scale measures instead how preparation, the frame stream's cache and an
epoch of the input pipeline grow with the number of videos
(`avd_tf.bench.scale`), each step in a fresh process for its peak memory.

--quick runs few steps and, for the paper preset, a batch of 2 instead of 16
(one paper step at batch 16 takes minutes on 2 cores). Timings keep the best
of their repeats, next to the median, with the load averages: on a shared
machine other work only adds time. oneDNN is switched on by default
(--onednn); it must be set before TensorFlow starts, which is why training
runs in a subprocess and this program imports TensorFlow only in `main`.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import flags, logging

from avd_tf.apps import describe, run_program
from avd_tf.bench import suite
from avd_tf.files import write_text_atomically
from avd_tf.streams import CLIP_CHANNELS

FLAGS = flags.FLAGS
flags.DEFINE_boolean("quick", False, "Few steps and repeats; paper preset at batch 2.")
flags.DEFINE_string("output", "", "Write the results to this JSON file.")
flags.DEFINE_string("markdown", "", "Write the results as a Markdown table to this file.")
flags.DEFINE_string("readme", "", "Replace the 'avd-bench table' section of this Markdown file "
                    "(see avd_tf.readme_section) with the results table.")
flags.DEFINE_list("preset", ["paper", "small"], "AVD presets to measure.")
flags.DEFINE_enum("stream", "rgb", list(CLIP_CHANNELS), "Stream of the trained / distilling model.")
flags.DEFINE_integer("batch_size", 0, "Training and distillation batch (0: the preset's; 2 for "
                     "the paper preset with --quick).")
flags.DEFINE_integer("steps", 0, "Timed training steps after the first (0: 2 with --quick, else 5).")
flags.DEFINE_float("min_seconds", -1.0, "Time more training steps until they add up to this "
                   "(-1: 10 s with --quick, else 60 s).")
flags.DEFINE_integer("repeats", 0, "Repeats of the other timings (0: 5 with --quick, else 10).")
flags.DEFINE_integer("tvl1_pairs", 0, "TV-L1 frame pairs per worker (0: 8 with --quick, else 24).")
flags.DEFINE_integer("workers", 0, "TV-L1 worker processes for the N-worker figure (0: all cores).")
flags.DEFINE_enum("onednn", "on", ["on", "off", "inherit"],
                  "TF_ENABLE_ONEDNN_OPTS for this run (inherit: leave the environment's).")
flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy of the trained model.")
flags.DEFINE_enum("native_strides", "auto", ["auto", "on", "off"],
                  "Strided Conv3D kernels, or stride 1 + slicing (auto: the model's choice).")
flags.DEFINE_integer("inter_op_threads", 0, "TF inter-op threads (0: TF's default).")
flags.DEFINE_integer("intra_op_threads", 0, "TF intra-op threads (0: TF's default).")
flags.DEFINE_string("profile_dir", "", "Trace one more training step per preset with the TF "
                    "profiler into <dir>/<preset> (TensorBoard's profile plugin reads it) and "
                    "report the ops that took the most time.")
flags.DEFINE_list("measure", ["train", "input", "distill", "tvl1", "dynamic", "batch_norm"],
                  "Which measurements to run.")
flags.DEFINE_string("work_dir", "", "Folder for the prepared data and the SavedModel "
                    "(default: a temporary folder, removed at the end).")
flags.DEFINE_boolean("scale", False, "Instead of the presets: how preparation, the frame "
                     "stream's cache and the input pipeline grow with the number of videos "
                     "(avd_tf.bench.scale); --readme then replaces the 'avd-bench scale table' "
                     "section.")
flags.DEFINE_list("scale_sizes", ["1000", "4000", "13320"], "--scale: numbers of generated "
                  "videos (at least 101, one per class).")
flags.DEFINE_integer("scale_tvl1_videos", 12, "--scale: videos prepared with TV-L1 flow.")

def _scale(work_dir: str) -> int:
    from avd_tf.bench.report import SCALE_SECTION, scale_markdown_table
    from avd_tf.bench.scale import check_sizes

    try:
        sizes = check_sizes([int(size) for size in FLAGS.scale_sizes])
    except ValueError as error:
        sys.exit(f"avd-bench: --scale_sizes={','.join(FLAGS.scale_sizes)}: {error}")
    if FLAGS.scale_tvl1_videos < 1:
        sys.exit(f"avd-bench: --scale_tvl1_videos={FLAGS.scale_tvl1_videos}: must be at least 1")
    report = suite.scale_report(work_dir, sizes, tvl1_videos=FLAGS.scale_tvl1_videos,
                                jit_compile=FLAGS.jit_compile)
    table = scale_markdown_table(report)
    print("\n" + table)
    _write_results(report, table, SCALE_SECTION)
    return 0


def _write_results(report: dict, table: str, section: str) -> None:
    """--output (the report as JSON), --markdown (its table) and --readme (its section)."""
    from avd_tf.readme_section import replace_section

    if FLAGS.output:
        write_text_atomically(FLAGS.output, json.dumps(report, indent=2) + "\n")
        print(f"wrote {FLAGS.output}")
    if FLAGS.markdown:
        write_text_atomically(FLAGS.markdown, table)
        print(f"wrote {FLAGS.markdown}")
    if FLAGS.readme:
        replace_section(FLAGS.readme, section, table)
        print(f"updated the {section} in {FLAGS.readme}")


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.measure) - set(suite.PARTS))
    if unknown:
        sys.exit(f"avd-bench: unknown --measure parts {unknown}; choose from {list(suite.PARTS)}")
    folders = [FLAGS.work_dir] + [os.path.dirname(f) for f in (FLAGS.output, FLAGS.markdown) if f]
    for folder in filter(None, folders):
        # Made before minutes of measuring, not when the results are written.
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            sys.exit(f"avd-bench: {describe(error)}")
    if FLAGS.onednn != "inherit":
        # Read when TensorFlow starts: nothing has imported it yet.
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if FLAGS.onednn == "on" else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.WARNING)  # SavedModel export logs every file it writes

    if FLAGS.scale:
        with tempfile.TemporaryDirectory(prefix="avd-bench-scale-") as temporary:
            return _scale(FLAGS.work_dir or temporary)

    from avd_tf.bench.training import configure_threads
    from avd_tf.models import PRESETS

    unknown = sorted(set(FLAGS.preset) - set(PRESETS))
    if unknown:
        sys.exit(f"avd-bench: unknown presets {unknown}; known presets: {sorted(PRESETS)}")
    configure_threads(FLAGS.inter_op_threads, FLAGS.intra_op_threads)
    settings = suite.make_settings(
        FLAGS.quick, steps=FLAGS.steps, min_seconds=FLAGS.min_seconds, repeats=FLAGS.repeats,
        tvl1_pairs=FLAGS.tvl1_pairs, workers=FLAGS.workers, stream=FLAGS.stream,
        onednn=FLAGS.onednn, jit_compile=FLAGS.jit_compile,
        mixed_precision=FLAGS.mixed_precision, native_strides=FLAGS.native_strides,
        inter_op_threads=FLAGS.inter_op_threads, intra_op_threads=FLAGS.intra_op_threads)
    with tempfile.TemporaryDirectory(prefix="avd-bench-") as temporary:
        report = suite.measure_presets(FLAGS.preset, settings, FLAGS.work_dir or temporary,
                                       measure=FLAGS.measure, batch_size=FLAGS.batch_size,
                                       profile_dir=FLAGS.profile_dir)
    from avd_tf.bench.report import SECTION, markdown_table

    print()
    _write_results(report, markdown_table(report), SECTION)
    return 0


def run():
    run_program("avd-bench", main)


if __name__ == "__main__":
    run()
