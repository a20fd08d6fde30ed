r"""avd-distill: AVD distilled images of one video file, or of a whole prepared dataset.

  avd-distill --model_dir runs/avd_rgb --video clip.mp4 --output clip.png

  avd-distill --model_dir runs/avd_rgb --data_dir prepared/ucf101_s1 \
      --output_dir distilled/avd_rgb --clips_per_video 4 --png

With --video: decodes the file with OpenCV, distils the clip at its middle
(TV-L1 flow first for a flow model) and writes the image as a PNG.

Runs E of an AVD model trained by avd-train over `--clips_per_video` evenly
spaced clips of every train and test video (the model's stream, clip length
and image size) and writes the uint8 images as image-record shards
(`avd_tf.records.images`) plus stream.json (written last). With --png, also
`output_dir/png/<split>/<video_id>_<clip>.png` and `output_dir/contact_sheet.png`:
for a few test videos, frames of a clip (flow colour coded) next to E's image.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags

from avd_tf.apps import describe, run_program

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "AVD model folder written by avd-train.")
flags.DEFINE_string("video", None, "One video file to distil (instead of --data_dir).")
flags.DEFINE_string("output", None, "With --video: the PNG file to write.")
flags.DEFINE_string("data_dir", None, "Folder prepared by avd-prepare.")
flags.DEFINE_string("output_dir", None, "Where the image shards (and PNGs) go.")
flags.DEFINE_integer("clips_per_video", 4, "Evenly spaced clips distilled per video.")
flags.DEFINE_integer("batch_size", 16, "Clips per batch through E.")
flags.DEFINE_boolean("png", False, "Also write PNG files and a contact sheet.")
flags.DEFINE_integer("sheet_videos", 8, "Test videos (rows) on the contact sheet.")
flags.DEFINE_integer("sheet_frames", 8, "Clip frames shown per row of the contact sheet.")
flags.DEFINE_boolean("progress", True, "Progress bars.")
flags.mark_flags_as_required(["model_dir"])

CONTACT_SHEET = "contact_sheet.png"


def _distill_video() -> dict:
    from avd_tf import visualize
    from avd_tf.models import distill

    if not FLAGS.output:
        raise ValueError("--video needs --output, the PNG file to write")
    image = distill.distill_video(FLAGS.model_dir, FLAGS.video)
    return {"video": FLAGS.video, "output": visualize.save_png(FLAGS.output, image),
            "shape": list(image.shape)}


def main(argv):
    del argv
    from avd_tf import visualize
    from avd_tf.inputs.shards import readable_shards
    from avd_tf.models import distill
    from avd_tf.video.decode import VideoError

    if FLAGS.video is not None:
        try:
            print(json.dumps(_distill_video()))
        except (OSError, ValueError, RuntimeError, VideoError) as error:
            sys.exit(f"avd-distill: {describe(error)}")
        return 0
    missing = [f"--{name}" for name in ("data_dir", "output_dir") if not getattr(FLAGS, name)]
    if missing:
        sys.exit(f"avd-distill: give --video FILE --output FILE.png, or {' and '.join(missing)} "
                 "for a prepared dataset")
    try:
        with readable_shards(FLAGS.data_dir):
            info = distill.distill_dataset(
                FLAGS.model_dir, FLAGS.data_dir, FLAGS.output_dir,
                clips_per_video=FLAGS.clips_per_video, batch_size=FLAGS.batch_size,
                progress=FLAGS.progress)
        report = {"output_dir": FLAGS.output_dir, "stream": info["stream"],
                  "splits": {k: {"videos": v["videos"], "images": v["images"]}
                             for k, v in info["splits"].items()},
                  "clips_per_second": info["clips_per_second"]}
        if FLAGS.png:
            report["pngs"] = distill.write_pngs(FLAGS.output_dir,
                                                os.path.join(FLAGS.output_dir, "png"))
            with readable_shards(FLAGS.data_dir):
                rows = distill.contact_sheet_rows(FLAGS.model_dir, FLAGS.data_dir,
                                                  num_videos=FLAGS.sheet_videos,
                                                  frames_shown=FLAGS.sheet_frames)
            report["contact_sheet"] = visualize.save_png(
                os.path.join(FLAGS.output_dir, CONTACT_SHEET), visualize.contact_sheet(rows))
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"avd-distill: {describe(error)}")
    print(json.dumps(report))
    return 0


def run():
    run_program("avd-distill", main)


if __name__ == "__main__":
    run()
