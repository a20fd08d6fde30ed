r"""avd-finetune: fine-tune an ImageNet-style 2D CNN on one image stream (paper 4.2).

  avd-finetune --data_dir prepared/ucf101_s1 --stream dynamic \
      --backbone resnet50 --weights imagenet --model_dir runs/dynamic_r50

  avd-finetune --data_dir prepared/ucf101_s1 --stream avd_rgb \
      --avd_model_dir runs/avd_rgb --backbone resnet50 --model_dir runs/avd_rgb_r50

The stream's images are computed from the prepared data on first use and
cached under <data_dir>/streams/. SGD with momentum, the learning rate
multiplied by --lr_decay each epoch. The test split is never read (only
avd-evaluate reads it): model.keras is the last epoch, or with
--select_on val the epoch of the best accuracy on --val_fraction of the
training videos, held out whole groups (UCF101 gXX) at a time. Writes
model.keras, config.json, metrics.json, history.csv and TensorBoard logs
to --model_dir; a killed run resumes at its last finished epoch when
started again with the same flags.
"""
from __future__ import annotations

import contextlib
import json
import sys

from absl import flags

from avd_tf import streams
from avd_tf.apps import describe, run_program
from avd_tf.classify.backbones import BACKBONES
from avd_tf.classify.finetune import SELECTION_RULES
from avd_tf.distribution import STRATEGIES

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder prepared by avd-prepare.")
flags.DEFINE_enum("stream", None, list(streams.STREAMS), "Image stream to classify.")
flags.DEFINE_string("avd_model_dir", None, "AVD model folder (avd-train); avd_rgb/avd_flow only.")
flags.DEFINE_string("model_dir", None, "Where the model, config, metrics and logs go.")
flags.DEFINE_enum("backbone", "resnet50", list(BACKBONES), "2D CNN to fine-tune (paper Table 2).")
flags.DEFINE_string("weights", "imagenet", "imagenet, none, or a weights file (see backbones).")
flags.DEFINE_integer("input_size", None, "Image side fed to the CNN (default: the backbone's).")
flags.DEFINE_integer("epochs", 3, "Epochs to train.")
flags.DEFINE_integer("batch_size", 32, "Images per batch.")
flags.DEFINE_integer("steps_per_epoch", None, "Default: one pass over the train images.")
flags.DEFINE_float("lr", 3e-3, "Initial learning rate (paper: 3e-3).")
flags.DEFINE_float("lr_decay", 0.1, "Learning-rate factor per epoch (paper: 0.1).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum (paper: 0.9).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay of SGD (0: none).")
flags.DEFINE_float("dropout", 0.5, "Dropout before the new classification layer.")
flags.DEFINE_integer("frames_per_video", 8, "frame / flow streams: images per video.")
flags.DEFINE_integer("window", 10, "mean / dynamic streams: frames per window.")
flags.DEFINE_integer("stride", 6, "mean / dynamic streams: frames between windows.")
flags.DEFINE_integer("clips_per_video", 4, "avd_rgb / avd_flow streams: distilled clips per video.")
flags.DEFINE_string("cache_dir", None, "Stream cache folder (default: <data_dir>/streams/...).")
flags.DEFINE_enum("flip", "mirror", ["mirror", "none"], "Training flip: mirror (p = 0.5, labels "
                  "swapped by the flip_label_map) or none (never; direction is the class).")
flags.DEFINE_string("flip_label_map", None, "JSON file of mirror classes overriding the one "
                    "avd-prepare recorded in manifest.json (see data/README.md).")
flags.DEFINE_integer("seed", None, "Seed for weights, shuffling, augmentation and the "
                     "held-out videos (those take 0 without a seed).")
flags.DEFINE_enum("select_on", "last", list(SELECTION_RULES),
                  "Epoch kept: last, or val (best accuracy on held-out training videos).")
flags.DEFINE_float("val_fraction", 0.2, "--select_on val: share of each class's training "
                   "video groups held out for validation.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy of the classifier (as avd-train's).")
flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_enum("distribution_strategy", "default", list(STRATEGIES),
                  "tf.distribute strategy, as avd-train's (mirrored: all GPUs, else all "
                  "logical CPUs); --batch_size is the global batch.")
flags.DEFINE_boolean("progress", True, "Progress bars (off: one line per epoch).")
flags.mark_flags_as_required(["data_dir", "stream", "model_dir"])


def main(argv):
    del argv
    if streams.get(FLAGS.stream).avd and not FLAGS.avd_model_dir:
        sys.exit(f"avd-finetune: --stream {FLAGS.stream} needs --avd_model_dir, the folder of "
                 "an AVD model trained by avd-train (its encoder makes the distilled images)")
    from avd_tf import run_lock
    from avd_tf.classify.finetune import finetune
    from avd_tf.distribution import writes_model_dir
    from avd_tf.inputs.shards import readable_shards

    try:
        # Under multi_worker_mirrored only the chief writes (and so locks) model_dir.
        writes = writes_model_dir(FLAGS.distribution_strategy)
    except ValueError as error:
        sys.exit(f"avd-finetune: {error}")
    lock = (run_lock.run_lock(FLAGS.model_dir, "avd-finetune") if writes
            else contextlib.nullcontext())
    try:
        with lock, readable_shards(FLAGS.data_dir, cache_dir=FLAGS.cache_dir):
            metrics = finetune(
                FLAGS.data_dir, FLAGS.stream, FLAGS.model_dir,
                backbone=FLAGS.backbone, weights=FLAGS.weights, epochs=FLAGS.epochs,
                batch_size=FLAGS.batch_size, input_size=FLAGS.input_size, lr=FLAGS.lr,
                lr_decay=FLAGS.lr_decay, momentum=FLAGS.momentum,
                weight_decay=FLAGS.weight_decay, dropout=FLAGS.dropout,
                steps_per_epoch=FLAGS.steps_per_epoch, seed=FLAGS.seed,
                select_on=FLAGS.select_on, val_fraction=FLAGS.val_fraction,
                mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
                distribution_strategy=FLAGS.distribution_strategy,
                avd_model_dir=FLAGS.avd_model_dir, cache_dir=FLAGS.cache_dir,
                frames_per_video=FLAGS.frames_per_video, window=FLAGS.window,
                stride=FLAGS.stride, clips_per_video=FLAGS.clips_per_video,
                flip=FLAGS.flip, flip_label_map=FLAGS.flip_label_map,
                progress=FLAGS.progress)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"avd-finetune: {describe(error)}")
    selected, last = metrics["final"], metrics["history"][-1]
    wall = metrics["timing"]["wall_seconds"]
    line = f"kept epoch {selected['epoch']} of {last['epoch']} (rule: {selected['rule']})"
    if "val_accuracy" in selected:
        validation = metrics["run"]["validation"]
        line += (f"; val_accuracy {selected['val_accuracy']:.4f} on {validation['val_videos']} "
                 f"held-out training videos")
    print(f"{line}; wall time {wall:.1f} s")
    print(json.dumps({"model_dir": FLAGS.model_dir, "select_on": selected["rule"],
                      "selected_epoch": selected["epoch"],
                      "val_accuracy": selected.get("val_accuracy"),
                      "wall_time_s": wall}))
    return 0


def run():
    run_program("avd-finetune", main)


if __name__ == "__main__":
    run()
