r"""avd-ablate: a grid of AVD(RGB) training settings x seeds, with mean +- std over seeds.

  avd-ablate --data_dir prepared/ucf101_s1 --output_dir runs/ablation \
      --lams 0.9,0.95,0.99,1.0 --rec_losses sum,mean

Every cell of the cross product of --presets, --num_frames, --image_sizes,
--widths, --lams, --rec_losses, --gen_losses and --epochs trains AVD(RGB) once per seed, distils the
videos with its E, fine-tunes a classifier on the images and evaluates it.
Beside the cells: the control (E as initialised by the seed, never
trained, through the same steps) and the frame / mean / dynamic baselines,
fine-tuned once per seed. With --eval_on val (default) everything runs on a
copy of the data whose test split is --val_fraction of the training
split's video groups: the original test split is never read, and settings
may be chosen on the figures. --eval_on test reports test-split figures,
which must not choose settings.

Writes to --output_dir: ablation.md (the table), ablation.csv,
ablation.json (every run's figures), ablation.png, and runs/ (one folder
per run; a re-run of the same command reuses finished runs).
"""
from __future__ import annotations

import os
import sys

from absl import flags

from avd_tf.apps import describe, run_program
from avd_tf.pipeline.demo import DemoSettings

# The ablation's defaults are avd-demo's CPU settings.
_DEFAULTS = DemoSettings()
FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder prepared by avd-prepare.")
flags.DEFINE_string("output_dir", None, "Where the runs and the ablation table go.")
flags.DEFINE_list("lams", ["0.95", "1.0"],
                  "Eq. 3's lambdas (1.0: no teacher acting on E).")
flags.DEFINE_list("rec_losses", ["sum"], "Eq. 1 forms: sum (as the paper writes it), mean.")
flags.DEFINE_list("gen_losses", ["nonsaturating"],
                  "E's side of Eq. 2: nonsaturating, saturating.")
flags.DEFINE_list("num_frames", [], "Clip lengths T (powers of two); default: the preset's.")
flags.DEFINE_list("image_sizes", [], "Clip sides in pixels; default: the preset's.")
flags.DEFINE_list("widths", [], "E's widths but the last, '-'-joined (D mirrors them), e.g. "
                  "8-16-16-16,16-32-32-32; default: the preset's.")
flags.DEFINE_list("presets", ["small"], "AVD presets: small, paper.")
flags.DEFINE_string("extra_cells", "", "Cells outside the cross product, ';'-separated, each "
                    "changing fields of the first cell, e.g. "
                    "'lam=0.95,rec_loss=mean;gen_loss=saturating'.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every run (at least 3).")
flags.DEFINE_boolean("allow_fewer_seeds", False, "Accept fewer than 3 seeds (for tests).")
flags.DEFINE_list("epochs", [str(_DEFAULTS.avd_epochs)],
                  "AVD training epochs (of --steps_per_epoch steps; the learning-rate schedule "
                  "spans them all).")
flags.DEFINE_integer("steps_per_epoch", _DEFAULTS.avd_steps, "AVD training steps per epoch.")
flags.DEFINE_enum("eval_on", "val", ["val", "test"],
                  "val: held-out groups of the training split (choose settings here); "
                  "test: the test split (report only).")
flags.DEFINE_float("val_fraction", 0.2, "Share of each class's training groups held out (val).")
flags.DEFINE_integer("val_seed", 0, "Seed of the held-out groups (val).")
flags.DEFINE_string("backbone", _DEFAULTS.backbone, "Fine-tuned 2D CNN.")
flags.DEFINE_string("weights", _DEFAULTS.weights, "Its initial weights: imagenet, none, or a file.")
flags.DEFINE_integer("input_size", _DEFAULTS.input_size, "Fine-tuning input side.")
flags.DEFINE_integer("finetune_epochs", _DEFAULTS.finetune_epochs, "Fine-tuning epochs.")
flags.DEFINE_integer("finetune_steps", _DEFAULTS.finetune_steps, "Fine-tuning steps per epoch.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Fine-tuning batch size.")
flags.DEFINE_float("lr", _DEFAULTS.finetune_lr, "Fine-tuning SGD learning rate of the first epoch.")
flags.DEFINE_float("lr_decay", _DEFAULTS.finetune_lr_decay,
                  "Fine-tuning learning rate factor per epoch.")
flags.DEFINE_boolean("progress", True, "Progress bars (off: one line per epoch).")
flags.DEFINE_string("readme", "", "After the ablation, write its table and plot into the "
                    "--readme_section section of this Markdown file (the plot goes to "
                    "docs/images/ beside it).")
flags.DEFINE_string("readme_section", "avd-ablate results", "Name of that marked section.")
flags.mark_flags_as_required(["data_dir", "output_dir"])


def _numbers(name: str, values, kind) -> tuple:
    try:
        return tuple(kind(value) for value in values)
    except ValueError:
        raise ValueError(f"--{name}: expected a comma list of {kind.__name__} values, "
                         f"got {','.join(values)!r}") from None


def main(argv):
    del argv
    from avd_tf.ablate import FinetuneSettings, Grid, run_ablation
    from avd_tf.ablate.grid import parse_cells

    try:
        grid = Grid(lams=_numbers("lams", FLAGS.lams, float),
                    rec_losses=tuple(FLAGS.rec_losses), gen_losses=tuple(FLAGS.gen_losses),
                    num_frames=_numbers("num_frames", FLAGS.num_frames, int) or (None,),
                    image_sizes=_numbers("image_sizes", FLAGS.image_sizes, int) or (None,),
                    widths=tuple(FLAGS.widths) or (None,), presets=tuple(FLAGS.presets),
                    epochs=_numbers("epochs", FLAGS.epochs, int),
                    extra=parse_cells(FLAGS.extra_cells))
        settings = FinetuneSettings(
            backbone=FLAGS.backbone, weights=FLAGS.weights, input_size=FLAGS.input_size,
            epochs=FLAGS.finetune_epochs, steps_per_epoch=FLAGS.finetune_steps,
            batch_size=FLAGS.batch_size, lr=FLAGS.lr, lr_decay=FLAGS.lr_decay)
        run_ablation(FLAGS.data_dir, FLAGS.output_dir, grid, _numbers("seeds", FLAGS.seeds, int),
                     avd_steps_per_epoch=FLAGS.steps_per_epoch,
                     finetune_settings=settings, eval_on=FLAGS.eval_on,
                     val_fraction=FLAGS.val_fraction, val_seed=FLAGS.val_seed,
                     allow_fewer_seeds=FLAGS.allow_fewer_seeds, progress=FLAGS.progress)
    # RuntimeError includes TrainingDivergedError, whose message says what to change.
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"avd-ablate: {describe(error)}")
    with open(os.path.join(FLAGS.output_dir, "ablation.md")) as f:
        print(f.read())
    if FLAGS.readme:
        from avd_tf.ablate import write_readme

        try:
            print(f"updated {FLAGS.readme} and "
                  f"{write_readme(FLAGS.output_dir, FLAGS.readme, FLAGS.readme_section)}")
        except (OSError, ValueError) as error:
            sys.exit(f"avd-ablate: {describe(error)}")
    return 0


def run():
    run_program("avd-ablate", main)


if __name__ == "__main__":
    run()
