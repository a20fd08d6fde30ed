r"""avd-train: train AVD's encoder E with D and T (paper section 3.4, Eq. 1-3).

  avd-train --data_dir prepared/ucf101_s1 --stream rgb --preset paper \
      --model_dir runs/avd_rgb

  avd-train --data_dir /tmp/demo/prepared --stream flow --preset small \
      --epochs 5 --encoder_filters 16,32,32,32 --model_dir runs/avd_flow_demo

Unlabelled training: clips of the train split (and single RGB frames of it
for the teacher); the test split validates each epoch (rec_loss, psnr).
Writes to --model_dir: checkpoints/epoch-NNN.weights.h5 each epoch,
history.csv, TensorBoard logs (logs/: scalars and distilled images next to
their clips' middle frames), and at the end avd.keras, encoder.keras,
config.json and metrics.json. A killed run resumes at its last finished
epoch when started again with the same flags (backup/).
"""
from __future__ import annotations

import contextlib
import json
import sys

from absl import flags

from avd_tf.apps import describe, run_program
from avd_tf.streams import CLIP_CHANNELS

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder prepared by avd-prepare (TFRecord shards).")
flags.DEFINE_enum("stream", "rgb", list(CLIP_CHANNELS), "Input of E: RGB frames or TV-L1 flow.")
flags.DEFINE_enum("preset", "small", ["paper", "small"], "AVD configuration to start from.")
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and the models go.")
flags.DEFINE_integer("epochs", 5, "Epochs to train.")
flags.DEFINE_integer("steps_per_epoch", None, "Default: train videos // batch_size (>= 1).")
flags.DEFINE_integer("batch_size", None, "Clips per (global) batch; default: the preset's.")
flags.DEFINE_float("lam", None, "Eq. 3's lambda (reconstruction weight) for the trained "
                   "stream; default: the preset's (paper and small: rgb 0.1, flow 0.999).")
flags.DEFINE_enum("rec_loss", None, ["sum", "mean"],
                  "Eq. 1 over a clip's elements: the paper's sum, or the mean (then --lam "
                  "means a size-independent weight); default: the preset's.")
flags.DEFINE_enum("gen_loss", None, ["nonsaturating", "saturating"],
                  "E's side of Eq. 2: -log T(E(V)), or log(1 - T(E(V))) as Eq. 2 reads; "
                  "default: the preset's.")
flags.DEFINE_enum("lr_schedule", None, ["constant", "cosine"],
                  "Learning rates of E+D and T: constant, or a 5% linear warm-up then cosine "
                  "decay to 0 over the run; default: the preset's.")
flags.DEFINE_integer("num_frames", None, "Clip length T (a power of two); default: preset's.")
flags.DEFINE_integer("image_size", None, "Clip and image side S; default: the preset's.")
flags.DEFINE_list("encoder_filters", None, "E's widths but the last, e.g. 8,16,16,16.")
flags.DEFINE_list("decoder_filters", None, "D's widths but the last, e.g. 16,16,16,8.")
flags.DEFINE_float("ed_lr", None, "Adam learning rate of E and D; default: the preset's.")
flags.DEFINE_float("t_lr", None, "Adam learning rate of T; default: the preset's.")
flags.DEFINE_enum("distribution_strategy", "default",
                  ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy (mirrored: all GPUs, else all logical CPUs).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy while building the model.")
flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer("seed", None, "Seed for weights, clips, frames and augmentation.")
flags.DEFINE_enum("flip", "mirror", ["mirror", "none"], "Training flip of clips and frames: "
                  "mirror (p = 0.5) or none.")
flags.DEFINE_integer("validation_steps", None, "Default: the whole test split each epoch.")
flags.DEFINE_integer("summary_clips", 8, "Test clips shown in the TensorBoard image summary.")
flags.DEFINE_boolean("progress", True, "Progress bar (off: one line per epoch).")
flags.mark_flags_as_required(["data_dir", "model_dir"])


def _widths(name: str, values) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        sys.exit(f"avd-train: --{name} must be comma-separated integers, got {','.join(values)}")


def main(argv):
    del argv
    from avd_tf import run_lock
    from avd_tf.distribution import writes_model_dir
    from avd_tf.inputs.shards import readable_shards
    from avd_tf.models.training import train_avd

    try:
        # Under multi_worker_mirrored only the chief writes (and so locks) model_dir.
        writes = writes_model_dir(FLAGS.distribution_strategy)
    except ValueError as error:
        sys.exit(f"avd-train: {error}")
    lock = run_lock.run_lock(FLAGS.model_dir, "avd-train") if writes else contextlib.nullcontext()
    try:
        with lock, readable_shards(FLAGS.data_dir):
            metrics = train_avd(
                FLAGS.data_dir, FLAGS.model_dir, stream=FLAGS.stream, preset=FLAGS.preset,
                epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
                validation_steps=FLAGS.validation_steps,
                distribution_strategy=FLAGS.distribution_strategy,
                mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
                seed=FLAGS.seed, flip=FLAGS.flip, summary_clips=FLAGS.summary_clips,
                progress=FLAGS.progress,
                batch_size=FLAGS.batch_size, lam=FLAGS.lam, num_frames=FLAGS.num_frames,
                image_size=FLAGS.image_size,
                encoder_filters=_widths("encoder_filters", FLAGS.encoder_filters),
                decoder_filters=_widths("decoder_filters", FLAGS.decoder_filters),
                ed_lr=FLAGS.ed_lr, t_lr=FLAGS.t_lr, rec_loss=FLAGS.rec_loss,
                gen_loss=FLAGS.gen_loss, lr_schedule=FLAGS.lr_schedule,
            )
    # RuntimeError includes TrainingDivergedError, whose message says what to change.
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"avd-train: {describe(error)}")
    figures = {**metrics["timing"], **metrics["final"]}
    summary = {key: figures.get(key) for key in (
        "epoch", "rec_loss", "gen_loss", "teacher_loss", "teacher_acc_real",
        "teacher_acc_fake", "grad_ratio", "val_rec_loss", "val_psnr", "val_still_psnr",
        "val_motion_gain_db", "val_motion_r2", "val_scene_psnr", "clips_per_second")}
    print(json.dumps({"model_dir": FLAGS.model_dir, **summary}))
    return 0


def run():
    run_program("avd-train", main)


if __name__ == "__main__":
    run()
