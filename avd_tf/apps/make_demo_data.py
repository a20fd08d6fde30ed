r"""avd-make-demo-data: write the built-in demo data set (UCF101 layout).

  avd-make-demo-data --output_dir demo
  avd-prepare --dataset ucf101 --video_dir demo/videos --split_dir demo/splits \
      --output_dir prepared/demo

Each class is a kind of object times a camera motion ("RoundTranslateLeft",
"BoxRotateCW"; see avd_tf.video.synthetic): one frame shows the kind, optical
flow the motion, and the default motions come in mirror pairs (left/right,
clockwise/counter-clockwise) that the mean frame cannot tell apart. Only a
representation of appearance and ordered motion solves all 8 default classes.
splits/flip_label_map.json names each class's mirror class (for
avd-prepare --flip_label_map). `--kinds ""` makes motion-only classes over
mixed scenes. The defaults make 80 videos of 40 frames at 64x64.
"""
from __future__ import annotations

import sys

from absl import flags

from avd_tf.apps import describe, run_program
from avd_tf.video import synthetic
from avd_tf.video.decode import VideoError

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output_dir", None, "Folder to create; gets videos/, splits/ and demo_data.json."
)
flags.DEFINE_list(
    "kinds",
    list(synthetic.DEFAULT_KINDS),
    f"Object kinds, of: {', '.join(synthetic.KINDS)}. Empty: plain motion classes (mixed scenes).",
)
flags.DEFINE_list(
    "motions",
    list(synthetic.DEFAULT_MOTIONS),
    f"Camera motions, of: {', '.join(synthetic.motion_classes())}.",
)
flags.DEFINE_integer(
    "num_classes",
    None,
    "Keep only the first N classes of --kinds x --motions (kind-major order); default: all.",
)
flags.DEFINE_list(
    "translate_speed",
    [str(v) for v in synthetic.DEFAULT_SPEEDS.translate],
    "LOW,HIGH translation speed in pixels per frame at 64 px (scales with --size).",
)
flags.DEFINE_list(
    "rotate_speed",
    [str(v) for v in synthetic.DEFAULT_SPEEDS.rotate_deg],
    "LOW,HIGH rotation speed in degrees per frame.",
)
flags.DEFINE_list(
    "zoom_speed",
    [str(v) for v in synthetic.DEFAULT_SPEEDS.zoom],
    "LOW,HIGH zoom speed in log-scale per frame.",
)
flags.DEFINE_integer("videos_per_class", 10, "Videos per class, spread evenly over the groups.")
flags.DEFINE_integer("frames", 40, "Frames per video.")
flags.DEFINE_integer("size", 64, "Frame width and height in pixels.")
flags.DEFINE_float("fps", 25.0, "Frame rate written in the video files.")
flags.DEFINE_integer("seed", 0, "Random seed; equal flags give identical frames.")
flags.DEFINE_integer("groups", 5, "UCF101-style groups per class (clips of a group share a scene).")
flags.DEFINE_float(
    "test_fraction",
    synthetic.TEST_FRACTION,
    "Share of groups (the last ones, rounded, at least one) in the test list: 2 of 5 by default.",
)
flags.DEFINE_boolean("overwrite", False, "Replace the videos of an earlier run in --output_dir.")
flags.mark_flag_as_required("output_dir")


def main(argv):
    del argv
    try:
        speeds = synthetic.Speeds(
            translate=_speed_range("translate_speed"),
            rotate_deg=_speed_range("rotate_speed"),
            zoom=_speed_range("zoom_speed"),
        )
        summary = synthetic.make_demo_dataset(
            FLAGS.output_dir,
            num_classes=FLAGS.num_classes,
            videos_per_class=FLAGS.videos_per_class,
            frames=FLAGS.frames,
            size=FLAGS.size,
            seed=FLAGS.seed,
            groups=FLAGS.groups,
            fps=FLAGS.fps,
            test_fraction=FLAGS.test_fraction,
            overwrite=FLAGS.overwrite,
            log=lambda line: print(line, flush=True),
            kinds=FLAGS.kinds,
            motions=FLAGS.motions,
            speeds=speeds,
        )
    except (OSError, ValueError, VideoError) as error:
        sys.exit(f"avd-make-demo-data: {describe(error)}")
    print(
        f"Wrote {summary['num_videos']} videos ({summary['num_train']} train, "
        f"{summary['num_test']} test; {len(summary['classes'])} classes, "
        f"{summary['frames']} frames of {summary['size']}x{summary['size']}) to "
        f"{summary['video_dir']}; splits and {synthetic.FLIP_LABEL_MAP_FILE} in "
        f"{summary['split_dir']}",
        flush=True,
    )


def _speed_range(name: str) -> tuple[float, float]:
    values = FLAGS[name].value
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise ValueError(f"--{name}: expected two numbers LOW,HIGH, got {','.join(values)!r}")
    return low, high


def run():
    run_program("avd-make-demo-data", main)


if __name__ == "__main__":
    run()
