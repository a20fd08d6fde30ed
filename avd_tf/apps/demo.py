"""avd-demo: the whole AVD pipeline on the built-in motion data, in minutes on a CPU.

  avd-demo --output_dir demo_run

Generates the demo videos (class = kind of object x camera motion),
prepares them (RGB + TV-L1 flow), and for each training seed trains AVD on
both streams, fine-tunes the pretrained EfficientNet-Lite0 on every stream
(frame, mean, dynamic, avd_rgb, flow, avd_flow) and evaluates them and their
late fusions; writes results.json (mean ± std over the seeds), summary.md and
PNG figures. Re-running into the same folder reuses every finished stage.
"""
from __future__ import annotations

import dataclasses
import sys

from absl import flags

from avd_tf.apps import describe, run_program
from avd_tf.pipeline.demo import STREAMS, DemoSettings, run_demo, write_readme

_DEFAULTS = DemoSettings()
FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "demo_run", "Folder for everything the demo makes.")
flags.DEFINE_integer("num_classes", _DEFAULTS.num_classes, "Use the first N kind x motion "
                     "classes (default: all 8; chance = 1/N).")
flags.DEFINE_integer("videos_per_class", _DEFAULTS.videos_per_class, "Videos per class.")
flags.DEFINE_integer("frames", _DEFAULTS.frames, "Frames per demo video.")
flags.DEFINE_integer("size", _DEFAULTS.size, "Frame size of the demo videos and prepared data.")
flags.DEFINE_integer("avd_epochs", _DEFAULTS.avd_epochs, "AVD training epochs per stream.")
flags.DEFINE_integer("avd_steps", _DEFAULTS.avd_steps, "AVD steps per epoch.")
flags.DEFINE_string("backbone", _DEFAULTS.backbone, "Classifier backbone (see avd-finetune).")
flags.DEFINE_string("weights", _DEFAULTS.weights, "Backbone weights: imagenet, none or a file.")
flags.DEFINE_integer("input_size", _DEFAULTS.input_size, "Backbone input size.")
flags.DEFINE_integer("finetune_epochs", _DEFAULTS.finetune_epochs, "Fine-tuning epochs per stream.")
flags.DEFINE_integer("finetune_steps", _DEFAULTS.finetune_steps, "Fine-tuning steps per epoch.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Fine-tuning batch size.")
flags.DEFINE_list("streams", list(STREAMS), "Streams to fine-tune and evaluate.")
flags.DEFINE_integer("workers", _DEFAULTS.workers, "Preparation worker processes.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the demo videos.")
flags.DEFINE_list("seeds", [str(x) for x in _DEFAULTS.seeds], "Training seeds (AVD training and "
                  "fine-tuning, on the same videos); the tables give mean ± std over them.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")
flags.DEFINE_string("readme", "", "After the demo, write its table and figures into the "
                    "'avd-demo results' section of this Markdown file (and its contact sheet "
                    "to docs/images/ beside it).")


def main(argv):
    del argv
    settings = dataclasses.replace(
        _DEFAULTS,
        num_classes=FLAGS.num_classes,
        videos_per_class=FLAGS.videos_per_class,
        frames=FLAGS.frames,
        size=FLAGS.size,
        avd_epochs=FLAGS.avd_epochs,
        avd_steps=FLAGS.avd_steps,
        backbone=FLAGS.backbone,
        weights=FLAGS.weights,
        input_size=FLAGS.input_size,
        finetune_epochs=FLAGS.finetune_epochs,
        finetune_steps=FLAGS.finetune_steps,
        batch_size=FLAGS.batch_size,
        streams=tuple(FLAGS.streams),
        workers=FLAGS.workers,
        seed=FLAGS.seed,
        progress=FLAGS.progress,
    )
    try:
        settings.seeds = tuple(int(seed) for seed in FLAGS.seeds)
    except ValueError:
        sys.exit(f"avd-demo: --seeds must be comma-separated integers, got {','.join(FLAGS.seeds)}")
    try:
        run_demo(FLAGS.output_dir, settings)
        if FLAGS.readme:
            print(f"updated {FLAGS.readme} and {write_readme(FLAGS.output_dir, FLAGS.readme)}")
    # Bad settings or files; RuntimeError includes a diverged training's message.
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"avd-demo: {describe(error)}")


def run():
    run_program("avd-demo", main)


if __name__ == "__main__":
    run()
