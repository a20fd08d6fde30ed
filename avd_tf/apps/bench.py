r"""avd-bench: how fast AVD trains, reads its input, distils, and prepares data here.

  avd-bench [--quick] [--output bench.json] [--markdown bench.md] [--readme README.md]
            [--preset paper,small]
  avd-bench --scale [--scale_sizes 1000,4000,13320] [--output scale.json] [--readme README.md]

For each preset (paper: 32-frame 112x112 clips; small: 8-frame 32x32):

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
import platform
import sys
import tempfile
import time

from absl import flags, logging

from avd_tf.apps import describe, run_program
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
flags.DEFINE_list("measure", ["train", "input", "distill", "tvl1", "dynamic"],
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

PARTS = ("train", "input", "distill", "tvl1", "dynamic")
# The performance targets on a 2-core CPU (docs/performance.md); TV-L1 should scale
# to 90 % of linear.
MFU_TARGET = 0.6
INPUT_OVER_TRAIN_TARGET = 3.0
TVL1_EFFICIENCY_TARGET = 0.9
SMALL_RSS_TARGET_MB = 4096.0


def _machine() -> dict:
    import cv2
    import keras
    import numpy as np
    import tensorflow as tf

    from avd_tf.bench.machine import cpu_flags, cpu_model
    from avd_tf.models.encoder import onednn_enabled

    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onednn": onednn_enabled(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
        "xla_jit_compile": FLAGS.jit_compile,
        "TF_XLA_FLAGS": os.environ.get("TF_XLA_FLAGS", ""),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_at_start": list(os.getloadavg()),
    }


def _settings(quick: bool) -> dict:
    return {
        "quick": quick,
        "steps": FLAGS.steps or (2 if quick else 5),
        "min_seconds": FLAGS.min_seconds if FLAGS.min_seconds >= 0 else (10.0 if quick else 60.0),
        "repeats": FLAGS.repeats or (5 if quick else 10),
        "tvl1_pairs": FLAGS.tvl1_pairs or (8 if quick else 24),
        "workers": FLAGS.workers or os.cpu_count() or 1,
        "stream": FLAGS.stream,
        "onednn": FLAGS.onednn,
        "jit_compile": FLAGS.jit_compile,
        "mixed_precision": FLAGS.mixed_precision,
        "native_strides": FLAGS.native_strides,
        "inter_op_threads": FLAGS.inter_op_threads,
        "intra_op_threads": FLAGS.intra_op_threads,
    }


def _batch_size(preset: str, config, quick: bool) -> int:
    if FLAGS.batch_size:
        return FLAGS.batch_size
    return 2 if quick and preset == "paper" else config.batch_size


def _train(preset, config, batch_size, settings, result) -> None:
    import numpy as np

    from avd_tf.bench import flops
    from avd_tf.bench.training import TrainSettings, measure_training_in_subprocess

    native = {"auto": None, "on": True, "off": False}[settings["native_strides"]]
    trained = measure_training_in_subprocess(
        TrainSettings(
            preset=preset,
            stream=settings["stream"],
            batch_size=batch_size,
            steps=settings["steps"],
            min_seconds=settings["min_seconds"],
            jit_compile=settings["jit_compile"],
            dtype_policy=None if settings["mixed_precision"] == "none" else settings["mixed_precision"],
            native_strides=native,
            inter_op_threads=settings["inter_op_threads"],
            intra_op_threads=settings["intra_op_threads"],
            peak_repeats=settings["repeats"],
            profile_dir=os.path.join(FLAGS.profile_dir, preset) if FLAGS.profile_dir else None,
        ),
        onednn=None if settings["onednn"] == "inherit" else settings["onednn"] == "on",
    )
    analytic = flops.analytic_train_flops(config, settings["stream"])
    profiled = flops.profiled_train_flops(config, settings["stream"], batch_size)
    train_gflops = trained["train_clips_per_s"] * analytic["train"] / 1e9
    result.update({
        "train_clips_per_s": trained["train_clips_per_s"],
        "train_clips_per_s_median": trained["train_clips_per_s_median"],
        "train_steps": len(trained["step_seconds"]),
        "train_step_seconds": {
            "min": min(trained["step_seconds"]),
            "median": float(np.median(trained["step_seconds"])),
            "max": max(trained["step_seconds"]),
        },
        "train_first_step_seconds": trained["first_step_seconds"],
        "train_gflop_per_clip": analytic["train"] / 1e9,
        "train_gflop_per_clip_profiler": profiled["train"] / 1e9,
        "flops_profiler_over_analytic": profiled["train"] / analytic["train"],
        "train_gflops_per_s": train_gflops,
        "matmul_gflops_per_s": trained["matmul_gflops_per_s"]["best"],
        "conv3d_gflops_per_s": trained["conv3d_gflops_per_s"]["best"],
        "peak_gflops_per_s": trained["peak_gflops_per_s"],
        "peak_dtype": trained["peak_dtype"],
        "train_mfu": train_gflops / trained["peak_gflops_per_s"],
        "peak_rss_mb": trained["peak_rss_mb"],
        "onednn": trained["onednn"],
        "native_strides": trained["native_strides"],
        "jit_compile": trained["jit_compile"],
        "dtype_policy": trained["dtype_policy"],
        "inter_op_threads": trained["inter_op_threads"],
        "intra_op_threads": trained["intra_op_threads"],
        "train_load": [trained["load_before"][0], trained["load_after"][0]],
    })
    if trained["profile"]:
        result["train_profile"] = trained["profile"]


def _input(config, batch_size, settings, work_dir, result) -> None:
    from avd_tf.bench.inputs import input_clips_per_s, make_prepared_dataset
    from avd_tf.bench.preparation import decode_jpeg_frames_per_s

    data_dir = make_prepared_dataset(work_dir, config.image_size, config.num_frames)
    batches = max(2, 40 // batch_size) if settings["quick"] else max(5, 160 // batch_size)
    common = dict(num_frames=config.num_frames, size=config.image_size,
                  batch_size=batch_size, num_batches=batches)
    start = os.getloadavg()[0]
    repeats = min(settings["repeats"], 3)
    streamed = input_clips_per_s(data_dir, repeats=repeats, **common)
    cached = input_clips_per_s(data_dir, repeats=repeats, cache=True, **common)
    video = next(
        os.path.join(root, name)
        for root, _, names in sorted(os.walk(os.path.join(work_dir, "videos")))
        for name in sorted(names)
        if name.endswith(".avi")
    )
    result.update({
        "input_clips_per_s": streamed["best"],
        "input_clips_per_s_median": streamed["median"],
        "input_cached_clips_per_s": cached["best"],
        "input_batches": batches,
        "decode_jpeg_frames_per_s": decode_jpeg_frames_per_s(video, config.image_size),
        "input_load": [start, os.getloadavg()[0]],
    })


def _distill(config, batch_size, settings, work_dir, result) -> None:
    from avd_tf.bench.flops import analytic_train_flops
    from avd_tf.bench.inference import distill_clips_per_s, savedmodel_clips_per_s
    from avd_tf.models import build_avd

    encoder = build_avd(config, settings["stream"]).encoder
    batches = settings["repeats"]
    start = os.getloadavg()[0]
    compiled = distill_clips_per_s(encoder, batch_size, batches)
    saved = savedmodel_clips_per_s(encoder, os.path.join(work_dir, "encoder_savedmodel"),
                                   batch_size, batches)
    result.update({
        "distill_clips_per_s": compiled["best"],
        "distill_clips_per_s_median": compiled["median"],
        "distill_savedmodel_clips_per_s": saved["best"],
        "distill_savedmodel_clips_per_s_median": saved["median"],
        "distill_gflop_per_clip": analytic_train_flops(config, settings["stream"])["distill"] / 1e9,
        "distill_load": [start, os.getloadavg()[0]],
    })


def _tvl1(config, settings, result) -> None:
    from avd_tf.bench.preparation import tvl1_pairs_per_s

    workers, pairs = settings["workers"], settings["tvl1_pairs"]
    start = os.getloadavg()[0]
    one = tvl1_pairs_per_s(config.image_size, 1, pairs)
    many = tvl1_pairs_per_s(config.image_size, workers, pairs)
    result.update({
        "tvl1_size": config.image_size,
        "tvl1_workers": workers,
        "tvl1_pairs_per_s_1worker": one,
        "tvl1_pairs_per_s_Nworkers": many,
        "tvl1_scaling": many / one,
        "tvl1_load": [start, os.getloadavg()[0]],
    })


def _dynamic(config, settings, result) -> None:
    from avd_tf.bench.inference import dynamic_image_clips_per_s

    rate = dynamic_image_clips_per_s(config.num_frames, config.image_size, 5 * settings["repeats"])
    result["dynamic_image_clips_per_s"] = rate["best"]
    result["dynamic_image_clips_per_s_median"] = rate["median"]


def _checks(preset: str, result: dict, settings: dict) -> dict:
    """Each performance target that this run measured: value, target, met."""
    checks = {}

    def check(key, value, target, met):
        checks[key] = {"value": value, "target": target, "met": bool(met)}

    if "train_mfu" in result:
        check("train_mfu", result["train_mfu"], MFU_TARGET, result["train_mfu"] >= MFU_TARGET)
    if "input_over_train" in result:
        check("input_over_train", result["input_over_train"], INPUT_OVER_TRAIN_TARGET,
              result["input_over_train"] >= INPUT_OVER_TRAIN_TARGET)
    if "tvl1_scaling" in result:
        target = TVL1_EFFICIENCY_TARGET * settings["workers"]
        check("tvl1_scaling", result["tvl1_scaling"], target, result["tvl1_scaling"] >= target)
    if preset == "small" and "peak_rss_mb" in result:
        check("peak_rss_mb", result["peak_rss_mb"], SMALL_RSS_TARGET_MB,
              result["peak_rss_mb"] < SMALL_RSS_TARGET_MB)
    return checks


def _print(preset: str, result: dict) -> None:
    print(f"\n== {preset} (batch {result['batch_size']}) ==")
    for key, value in result.items():
        if key in ("checks", "train_profile") or isinstance(value, (list, dict)):
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"  {key:40s} {shown}")
    for key, check in result.get("checks", {}).items():
        verdict = "met" if check["met"] else "MISSED"
        print(f"  target {key}: {check['value']:.3g} vs {check['target']:.3g} -> {verdict}")
    profile = result.get("train_profile")
    if profile:
        print(f"  profile: {profile['op_seconds']:.2f} s of op time; top op types:")
        for entry in profile["op_types"]:
            print(f"    {entry['share']:6.1%} {entry['seconds']:8.3f} s  {entry['name']}")


def _scale(work_dir: str) -> int:
    from avd_tf.bench.report import SCALE_SECTION, scale_markdown_table
    from avd_tf.bench.scale import check_sizes, measure_scale
    from avd_tf.readme_section import replace_section

    try:
        sizes = check_sizes([int(size) for size in FLAGS.scale_sizes])
    except ValueError as error:
        sys.exit(f"avd-bench: --scale_sizes={','.join(FLAGS.scale_sizes)}: {error}")
    if FLAGS.scale_tvl1_videos < 1:
        sys.exit(f"avd-bench: --scale_tvl1_videos={FLAGS.scale_tvl1_videos}: must be at least 1")
    scale = measure_scale(work_dir, sizes, tvl1_videos=FLAGS.scale_tvl1_videos)
    report = {"machine": _machine(), "scale": scale}
    report["machine"]["load_at_end"] = list(os.getloadavg())
    table = scale_markdown_table(report)
    print("\n" + table)
    if FLAGS.output:
        write_text_atomically(FLAGS.output, json.dumps(report, indent=2) + "\n")
        print(f"wrote {FLAGS.output}")
    if FLAGS.markdown:
        write_text_atomically(FLAGS.markdown, table)
        print(f"wrote {FLAGS.markdown}")
    if FLAGS.readme:
        replace_section(FLAGS.readme, SCALE_SECTION, table)
        print(f"updated the avd-bench scale table in {FLAGS.readme}")
    return 0


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.measure) - set(PARTS))
    if unknown:
        sys.exit(f"avd-bench: unknown --measure parts {unknown}; choose from {list(PARTS)}")
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
    from avd_tf.models import PRESETS, get_preset

    unknown = sorted(set(FLAGS.preset) - set(PRESETS))
    if unknown:
        sys.exit(f"avd-bench: unknown presets {unknown}; known presets: {sorted(PRESETS)}")
    configure_threads(FLAGS.inter_op_threads, FLAGS.intra_op_threads)
    settings = _settings(FLAGS.quick)
    report = {"machine": _machine(), "settings": settings, "presets": {}}
    with tempfile.TemporaryDirectory(prefix="avd-bench-") as temporary:
        work_root = FLAGS.work_dir or temporary
        for preset in FLAGS.preset:
            config = get_preset(preset)
            batch_size = _batch_size(preset, config, FLAGS.quick)
            work_dir = os.path.join(work_root, preset)
            os.makedirs(work_dir, exist_ok=True)
            result = {"batch_size": batch_size, "num_frames": config.num_frames,
                      "image_size": config.image_size}
            parts = {
                "train": lambda: _train(preset, config, batch_size, settings, result),
                "input": lambda: _input(config, batch_size, settings, work_dir, result),
                "distill": lambda: _distill(config, batch_size, settings, work_dir, result),
                "tvl1": lambda: _tvl1(config, settings, result),
                "dynamic": lambda: _dynamic(config, settings, result),
            }
            seconds = {}
            for part in PARTS:
                if part in FLAGS.measure:
                    start = time.perf_counter()
                    parts[part]()
                    seconds[part] = time.perf_counter() - start
            if "train_clips_per_s" in result and "input_clips_per_s" in result:
                result["input_over_train"] = (
                    result["input_clips_per_s"] / result["train_clips_per_s"])
            result["part_seconds"] = seconds
            result["checks"] = _checks(preset, result, settings)
            report["presets"][preset] = result
            _print(preset, result)
    report["machine"]["load_at_end"] = list(os.getloadavg())
    if FLAGS.output:
        write_text_atomically(FLAGS.output, json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {FLAGS.output}")
    if FLAGS.markdown or FLAGS.readme:
        from avd_tf.bench.report import SECTION, markdown_table
        from avd_tf.readme_section import replace_section

        table = markdown_table(report)
        if FLAGS.markdown:
            write_text_atomically(FLAGS.markdown, table)
            print(f"wrote {FLAGS.markdown}")
        if FLAGS.readme:
            replace_section(FLAGS.readme, SECTION, table)
            print(f"updated the avd-bench table in {FLAGS.readme}")
    return 0


def run():
    run_program("avd-bench", main)


if __name__ == "__main__":
    run()
