"""avd-bench's measurements of the presets: training, input, distillation, TV-L1, dynamic
images and what synchronised batch norm would cost on one device.

`measure_presets` runs the parts asked for on each preset and returns the
report avd-bench writes (`avd_tf.bench.report` turns it into tables);
`scale_report` is `--scale`'s (`avd_tf.bench.scale`). TensorFlow is
imported only inside the functions: oneDNN's switch is read when it starts,
after avd-bench has set it.
"""
from __future__ import annotations

import os
import platform
import time

PARTS = ("train", "input", "distill", "tvl1", "dynamic", "batch_norm")
# The performance targets on a 2-core CPU (docs/performance.md); TV-L1 should scale
# to 90 % of linear.
MFU_TARGET = 0.6
INPUT_OVER_TRAIN_TARGET = 3.0
TVL1_EFFICIENCY_TARGET = 0.9
SMALL_RSS_TARGET_MB = 4096.0


def machine(jit_compile: bool) -> dict:
    """The machine, library versions and TensorFlow settings a report was measured with."""
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
        "xla_jit_compile": jit_compile,
        "TF_XLA_FLAGS": os.environ.get("TF_XLA_FLAGS", ""),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_at_start": list(os.getloadavg()),
    }


def make_settings(quick: bool, *, steps: int = 0, min_seconds: float = -1.0, repeats: int = 0,
                  tvl1_pairs: int = 0, workers: int = 0, stream: str = "rgb", onednn: str = "on",
                  jit_compile: bool = False, mixed_precision: str = "none",
                  native_strides: str = "auto", inter_op_threads: int = 0,
                  intra_op_threads: int = 0) -> dict:
    """avd-bench's settings, 0 (or -1 for `min_seconds`) standing for the default of `quick`."""
    return {
        "quick": quick,
        "steps": steps or (2 if quick else 5),
        "min_seconds": min_seconds if min_seconds >= 0 else (10.0 if quick else 60.0),
        "repeats": repeats or (5 if quick else 10),
        "tvl1_pairs": tvl1_pairs or (8 if quick else 24),
        "workers": workers or os.cpu_count() or 1,
        "stream": stream,
        "onednn": onednn,
        "jit_compile": jit_compile,
        "mixed_precision": mixed_precision,
        "native_strides": native_strides,
        "inter_op_threads": inter_op_threads,
        "intra_op_threads": intra_op_threads,
    }


def _batch_size(preset: str, config, quick: bool, requested: int = 0) -> int:
    """`requested`, or the preset's batch (2 for the paper preset when `quick`)."""
    if requested:
        return requested
    return 2 if quick and preset == "paper" else config.batch_size


def _train(preset, config, batch_size, settings, result, profile_dir) -> None:
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
            profile_dir=os.path.join(profile_dir, preset) if profile_dir else None,
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


def _batch_norm(config, batch_size, settings, result) -> None:
    from avd_tf.bench.batch_norm import sync_batch_norm_cost

    result.update(sync_batch_norm_cost(config, batch_size, settings["repeats"]))


def checks(preset: str, result: dict, settings: dict) -> dict:
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


def print_result(preset: str, result: dict) -> None:
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


def measure_presets(presets, settings: dict, work_root: str, *, measure=PARTS, batch_size: int = 0,
                    profile_dir: str = "") -> dict:
    """The parts of PARTS in `measure`, for each preset, with the machine and the checks.

    `settings` as made by `make_settings`; `batch_size` 0 is the preset's
    (`_batch_size`); each preset's files go to `work_root/<preset>`, and
    its results are printed as it finishes.
    """
    from avd_tf.models import get_preset

    report = {"machine": machine(settings["jit_compile"]), "settings": settings, "presets": {}}
    for preset in presets:
        config = get_preset(preset)
        batch = _batch_size(preset, config, settings["quick"], batch_size)
        work_dir = os.path.join(work_root, preset)
        os.makedirs(work_dir, exist_ok=True)
        result = {"batch_size": batch, "num_frames": config.num_frames,
                  "image_size": config.image_size}
        parts = {
            "train": lambda: _train(preset, config, batch, settings, result, profile_dir),
            "input": lambda: _input(config, batch, settings, work_dir, result),
            "distill": lambda: _distill(config, batch, settings, work_dir, result),
            "tvl1": lambda: _tvl1(config, settings, result),
            "dynamic": lambda: _dynamic(config, settings, result),
            "batch_norm": lambda: _batch_norm(config, batch, settings, result),
        }
        seconds = {}
        for part in PARTS:
            if part in measure:
                start = time.perf_counter()
                parts[part]()
                seconds[part] = time.perf_counter() - start
        if "train_clips_per_s" in result and "input_clips_per_s" in result:
            result["input_over_train"] = (
                result["input_clips_per_s"] / result["train_clips_per_s"])
        result["part_seconds"] = seconds
        result["checks"] = checks(preset, result, settings)
        report["presets"][preset] = result
        print_result(preset, result)
    report["machine"]["load_at_end"] = list(os.getloadavg())
    return report


def scale_report(work_dir: str, sizes, *, tvl1_videos: int, jit_compile: bool = False) -> dict:
    """`measure_scale`'s figures for `sizes` videos, with the machine they were measured on."""
    from avd_tf.bench.scale import measure_scale

    scale = measure_scale(work_dir, sizes, tvl1_videos=tvl1_videos)
    report = {"machine": machine(jit_compile), "scale": scale}
    report["machine"]["load_at_end"] = list(os.getloadavg())
    return report
