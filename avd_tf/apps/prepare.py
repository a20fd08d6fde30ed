r"""avd-prepare: decode videos, compute TV-L1 flow, write SequenceExample shards.

  avd-prepare --dataset ucf101 --video_dir UCF-101 --split_dir ucfTrainTestlist \
      --split 1 --output_dir prepared/ucf101_s1

Frames are resized (short side to --size by default, or to a --size square),
JPEG-encoded and stored with TV-L1 flow in `{split}-i-of-n.tfrecord` shards and
a manifest.json. Re-running into the same --output_dir resumes: complete
shards are kept, partial ones redone.

--runner beam runs the same preparation as an Apache Beam pipeline (same
shards and manifest, byte for byte), on the runner --beam_options names:

  avd-prepare ... --runner beam --beam_options \
      "--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing"
"""
from __future__ import annotations

import json
import os
import shlex
import sys

from absl import flags

from avd_tf.apps import describe, run_program
from avd_tf.layout import MANIFEST
from avd_tf.video import decode, flow

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, ["ucf101", "hmdb51", "kinetics", "folder"], "Dataset layout.")
flags.DEFINE_string("video_dir", None, "Folder holding the video files.")
flags.DEFINE_string("split_dir", None, "Folder of split files (ucf101, hmdb51, kinetics).")
flags.DEFINE_integer("split", 1, "Split number (1-3) for ucf101 and hmdb51.")
flags.DEFINE_float("test_fraction", 0.3, "folder datasets without split folders: test share.")
flags.DEFINE_string("output_dir", None, "Where the shards and manifest.json go.")
flags.DEFINE_enum("flow", "tvl1", ["tvl1", "none"], "Optical flow to compute.")
flags.DEFINE_enum("flow_device", "auto", list(flow.DEVICES), "TV-L1 on cpu, cuda, or cuda if available.")
flags.DEFINE_integer("size", 128, "Target size in pixels (see --resize); 0 keeps the source size.")
flags.DEFINE_enum("resize", "short_side", list(decode.RESIZE_MODES), "Resize the short side to --size, make a --size square, or keep.")
flags.DEFINE_float("fps", 0.0, "Resample to this frame rate; 0 keeps every frame.")
flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of stored frames and flow.")
flags.DEFINE_integer("clip_frames", 16, "Clip length used later; shorter videos are noted in the manifest.")
flags.DEFINE_integer("videos_per_shard", 10, "Videos per shard (the unit of resumption).")
flags.DEFINE_integer("workers", os.cpu_count() or 1, "Worker processes decoding and computing flow (--runner local).")
flags.DEFINE_float("video_timeout", 600.0, "--runner local: a video still converting after this many seconds is stopped and recorded as failed.")
flags.DEFINE_enum("runner", "local", ["local", "beam"], "Prepare in local processes, or as an Apache Beam pipeline.")
flags.DEFINE_string("beam_options", "", "--runner beam: Beam pipeline options, e.g. \"--runner=DirectRunner --direct_num_workers=2\".")
flags.DEFINE_integer("max_failures", -1, "Exit non-zero when more videos fail than this (-1: no limit).")
flags.DEFINE_string("flip_label_map", None, "JSON file mapping a class to its mirror class (names or 0-based indices; see data/README.md), recorded in manifest.json.")
flags.DEFINE_boolean("dry_run", False, "Only check which listed files exist; decode nothing.")
flags.DEFINE_boolean("progress", True, "A progress bar on a terminal (off, or without a terminal: a line every 5 %).")
flags.mark_flags_as_required(["dataset", "video_dir"])


def main(argv):
    del argv
    from avd_tf.datasets import load_dataset

    try:
        dataset = load_dataset(
            FLAGS.dataset,
            video_dir=FLAGS.video_dir,
            split_dir=FLAGS.split_dir,
            split=FLAGS.split,
            test_fraction=FLAGS.test_fraction,
        )
    except (OSError, ValueError) as error:
        sys.exit(f"avd-prepare: {describe(error)}")

    from avd_tf import run_lock
    from avd_tf.datasets import flip_labels
    from avd_tf.records import prepare

    flip_label_map = None
    if FLAGS.flip_label_map:
        try:
            flip_label_map = flip_labels.read_flip_label_map(FLAGS.flip_label_map, dataset.classes)
        except (OSError, ValueError) as error:
            sys.exit(f"avd-prepare: --flip_label_map {error}")

    if FLAGS.dry_run:
        missing, report = prepare.dry_run(dataset, FLAGS.video_dir)
        for path in missing:
            print(f"missing: {path}")
        print(json.dumps(report, sort_keys=True))
        return 1 if missing else 0

    if not FLAGS.output_dir:
        sys.exit("avd-prepare: --output_dir is required (except with --dry_run)")
    if FLAGS.runner == "beam" and FLAGS["workers"].present:
        sys.exit("avd-prepare: --workers is for --runner local; Beam's workers are set in --beam_options")
    if FLAGS.runner == "beam" and FLAGS["video_timeout"].present:
        sys.exit("avd-prepare: --video_timeout is for --runner local")
    if not FLAGS.video_timeout > 0:
        sys.exit(f"avd-prepare: --video_timeout must be more than 0 seconds, got {FLAGS.video_timeout:g}")
    if FLAGS.runner == "local" and FLAGS.beam_options:
        sys.exit("avd-prepare: --beam_options needs --runner beam")
    options = prepare.ConvertOptions(
        size=FLAGS.size,
        resize=FLAGS.resize,
        fps=FLAGS.fps,
        flow=FLAGS.flow,
        flow_device=FLAGS.flow_device,
        jpeg_quality=FLAGS.jpeg_quality,
        clip_frames=FLAGS.clip_frames,
    )
    common = dict(dataset_name=FLAGS.dataset, videos_per_shard=FLAGS.videos_per_shard,
                  flip_label_map=flip_label_map)
    try:
        with run_lock.run_lock(FLAGS.output_dir, "avd-prepare"):
            if FLAGS.runner == "beam":
                try:
                    from avd_tf.records import beam_pipeline
                except ImportError as error:
                    sys.exit(f"avd-prepare: --runner beam needs apache-beam ({error})")
                manifest = beam_pipeline.prepare(
                    dataset, FLAGS.video_dir, FLAGS.output_dir, options,
                    pipeline_args=shlex.split(FLAGS.beam_options), **common,
                )
            else:
                manifest = prepare.prepare(
                    dataset, FLAGS.video_dir, FLAGS.output_dir, options,
                    workers=FLAGS.workers, video_timeout=FLAGS.video_timeout,
                    progress=FLAGS.progress, **common,
                )
    except (prepare.PrepareError, prepare.worker_pool.WorkerError, run_lock.RunLockedError,
            OSError) as error:
        sys.exit(f"avd-prepare: {describe(error)}")
    prepared = sum(s["videos"] for s in manifest["splits"].values())
    failed = len(manifest["failures"])
    for split, counts in sorted(manifest["splits"].items()):
        print(
            f"{split}: {counts['videos']} of {counts['listed']} videos prepared, "
            f"{counts['frames']} frames, {counts['flow_frames']} flow frames, {counts['failed']} failed"
        )
    print(f"manifest: {os.path.join(FLAGS.output_dir, MANIFEST)}")
    if prepared == 0:
        sys.exit("avd-prepare: no video could be prepared")
    if 0 <= FLAGS.max_failures < failed:
        sys.exit(f"avd-prepare: {failed} videos failed, more than --max_failures={FLAGS.max_failures}")
    return 0


def run():
    run_program("avd-prepare", main)


if __name__ == "__main__":
    run()
