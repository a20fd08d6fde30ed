r"""avd-protocol: one command for a paper protocol (prepare, train, fine-tune, evaluate, average).

  avd-protocol --dataset ucf101 --video_dir UCF-101 --split_dir ucfTrainTestlist \
      --work_dir runs/ucf101_resnet50 --streams frame,flow,avd_rgb,avd_flow \
      --backbone resnet50 --weights imagenet --epochs 4

For each split (UCF101 and HMDB51: 1, 2, 3; Kinetics: one train/validation
run) it runs avd-prepare, avd-train for each AVD input (rgb, flow),
avd-finetune for each stream and avd-evaluate, then writes
protocol_<backbone>.json (per-split results and their mean) and
protocol_<backbone>.md (tables like the paper's Table 1). Protocols with
other backbones in the same --work_dir share the preparation and the AVD
models (paper Table 2). Re-running the same command skips finished stages, so an
interrupted protocol resumes; --dry_run lists the stages and their state.
"""
from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags

from avd_tf.apps import describe, run_program
from avd_tf.pipeline import protocol
from avd_tf.pipeline.stages import StageError

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, list(protocol.DATASET_SPLITS), "Dataset and its protocol.")
flags.DEFINE_string("video_dir", None, "Folder holding the dataset's video files.")
flags.DEFINE_string("split_dir", None, "Folder of the dataset's split files.")
flags.DEFINE_string("work_dir", None, "Where every stage's output goes (re-use it to resume).")
flags.DEFINE_list("streams", ["frame", "flow", "avd_rgb", "avd_flow"], "Streams to fine-tune and fuse.")
flags.DEFINE_string("backbone", "resnet50", "Classification backbone (avd-finetune --backbone).")
flags.DEFINE_string("weights", "imagenet", "Backbone initial weights (avd-finetune --weights).")
flags.DEFINE_integer("epochs", None, "Fine-tuning epochs; default: avd-finetune's.")
flags.DEFINE_list("splits", None, "Official splits to run (UCF101, HMDB51); default 1,2,3.")
flags.DEFINE_string("preset", "paper", "AVD preset for avd-train.")
flags.DEFINE_integer("avd_epochs", None, "AVD training epochs; default: avd-train's.")
flags.DEFINE_integer("size", 128, "avd-prepare --size: frames' short side in pixels.")
flags.DEFINE_integer("workers", os.cpu_count() or 1, "avd-prepare worker processes.")
flags.DEFINE_integer("batch_size", 64, "Evaluation batch size.")
flags.DEFINE_enum("fuse", "mean", ["mean", "weighted"], "Late fusion of the streams' video scores.")
flags.DEFINE_list("fusion_weights", None, "With --fuse weighted: one weight per stream.")
flags.DEFINE_string("fusions", None, "Fusions to report (e.g. 'flow+avd_flow'); default: all of 2+ streams.")
flags.DEFINE_string("train_args", "", "Extra flags for avd-train, e.g. '--batch_size 8'.")
flags.DEFINE_string("finetune_args", "", "Extra flags for avd-finetune, e.g. '--batch_size 32'.")
flags.DEFINE_boolean("dry_run", False, "List the stages (done or to do) and their commands; run nothing.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")
flags.mark_flags_as_required(["dataset", "video_dir", "split_dir", "work_dir"])


def main(argv):
    del argv
    try:
        splits = tuple(int(s) for s in FLAGS.splits) if FLAGS.splits else None
        weights = tuple(float(w) for w in FLAGS.fusion_weights) if FLAGS.fusion_weights else None
    except ValueError as error:
        raise app.UsageError(f"--splits and --fusion_weights take numbers ({error})") from None
    try:
        settings = protocol.ProtocolSettings(
            dataset=FLAGS.dataset,
            video_dir=FLAGS.video_dir,
            split_dir=FLAGS.split_dir,
            work_dir=FLAGS.work_dir,
            streams=tuple(FLAGS.streams),
            backbone=FLAGS.backbone,
            weights=FLAGS.weights,
            epochs=FLAGS.epochs,
            splits=splits,
            preset=FLAGS.preset,
            avd_epochs=FLAGS.avd_epochs,
            size=FLAGS.size,
            workers=FLAGS.workers,
            batch_size=FLAGS.batch_size,
            fuse=FLAGS.fuse,
            fusion_weights=weights,
            fusions=FLAGS.fusions,
            train_args=tuple(shlex.split(FLAGS.train_args)),
            finetune_args=tuple(shlex.split(FLAGS.finetune_args)),
        )
        protocol.run_protocol(settings, dry_run=FLAGS.dry_run, progress=FLAGS.progress)
    except (StageError, OSError, ValueError) as error:
        sys.exit(f"avd-protocol: {describe(error)}")
    if not FLAGS.dry_run:
        print(f"protocol: {protocol.protocol_path(settings)}")
    return 0


def run():
    run_program("avd-protocol", main)


if __name__ == "__main__":
    run()
