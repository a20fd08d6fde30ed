"""How the cost of preparing, caching and reading data grows with the number of videos.

For each N (e.g. 1,000, 4,000 and UCF101's 13,320) of the tiny generated
videos of `avd_tf.bench.scale_videos`, each step runs in a fresh Python
process, so its peak resident memory is its own and no step's peak carries
over to the next:

* prepare: `avd_tf.records.prepare.prepare` of all N videos, `--flow none`,
  one process (no worker pool), avd-prepare's 10 videos per shard;
* stream: the "frame" image stream's cache
  (`avd_tf.classify.stream_cache.ensure_stream`), with its bytes per image;
* input: the manifest's load time, then one epoch (train videos // batch
  size batches) of `avd_tf.inputs.avd_dataset` in training mode;

and, once, a few videos prepared without and with TV-L1 flow (CPU): what
flow adds per video. Linear cost means flat time per video and flat
memory: `ratios` divides the largest N's figures by the smallest N's.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

from avd_tf.bench import scale_videos
from avd_tf.bench.child import run_in_child

VIDEOS_PER_SHARD = 10  # avd-prepare's default
BATCH_SIZE = 8
TVL1_VIDEOS = 12
STREAM = "frame"
MANIFEST_READS = 3
# Linear cost, within what a shared 2-core machine's load moves a timing by.
TIME_RATIO_TARGET = 1.5
RSS_RATIO_TARGET = 1.2
STEPS = ("prepare", "stream", "input")


@dataclasses.dataclass(frozen=True)
class StepArgs:
    """What a step's process needs (sent to it as JSON)."""

    step: str
    video_dir: str
    split_dir: str
    data_dir: str
    size: int = scale_videos.SIZE
    frames: int = scale_videos.FRAMES
    batch_size: int = BATCH_SIZE
    videos_per_shard: int = VIDEOS_PER_SHARD
    tvl1_videos: int = TVL1_VIDEOS


def _options(args: StepArgs, flow: str):
    from avd_tf.records.convert import ConvertOptions

    return ConvertOptions(size=args.size, resize="square", flow=flow, flow_device="cpu",
                          clip_frames=args.frames)


def _prepare(args: StepArgs, dataset, flow: str) -> dict:
    from avd_tf.layout import MANIFEST, SHARD_FILES
    from avd_tf.records.prepare import prepare

    start = time.perf_counter()
    manifest = prepare(dataset, args.video_dir, args.data_dir, _options(args, flow),
                       dataset_name="scale", videos_per_shard=args.videos_per_shard, workers=1,
                       progress=False, log=lambda _: None)
    seconds = time.perf_counter() - start
    videos = sum(split["listed"] for split in manifest["splits"].values())
    if manifest["failures"]:
        failure = manifest["failures"][0]
        raise RuntimeError(f"{failure['path']}: not prepared ({failure['reason']})")
    return {"prepared_videos": videos, "prepare_seconds": seconds,
            "prepare_ms_per_video": 1000 * seconds / videos,
            "shards": len(manifest[SHARD_FILES]),
            "manifest_bytes": os.path.getsize(os.path.join(args.data_dir, MANIFEST))}


def _dataset(args: StepArgs):
    from avd_tf.datasets import load_dataset

    return load_dataset("ucf101", video_dir=args.video_dir, split_dir=args.split_dir)


def _tvl1(args: StepArgs) -> dict:
    """`tvl1_videos` train videos spread over the classes, prepared without and then with TV-L1.

    The difference is what flow adds per video; the run without flow comes
    first, so it also pays the process's first-call costs.
    """
    from avd_tf.datasets import DatasetSplits

    dataset = _dataset(args)
    train = dataset.splits["train"]
    step = max(1, len(train) // args.tvl1_videos)
    sample = DatasetSplits(classes=dataset.classes,
                           splits={"train": train[::step][:args.tvl1_videos]})
    plain = _prepare(dataclasses.replace(args, data_dir=args.data_dir + "-none"), sample, "none")
    flow = _prepare(args, sample, "tvl1")
    added = flow["prepare_ms_per_video"] - plain["prepare_ms_per_video"]
    return {"tvl1_videos": flow["prepared_videos"],
            "tvl1_ms_per_video": flow["prepare_ms_per_video"],
            "tvl1_none_ms_per_video": plain["prepare_ms_per_video"],
            "tvl1_added_ms_per_video": added,
            "tvl1_pairs_per_video": args.frames - 1}


def _stream(args: StepArgs) -> dict:
    from avd_tf.classify.stream_cache import ensure_stream
    from avd_tf.inputs.images import stream_info

    start = time.perf_counter()
    info = stream_info(ensure_stream(args.data_dir, STREAM, progress=False))
    seconds = time.perf_counter() - start
    videos = sum(split["videos"] for split in info["splits"].values())
    return {"stream_seconds": seconds, "stream_ms_per_video": 1000 * seconds / videos,
            "stream_images": sum(split["images"] for split in info["splits"].values()),
            "cache_bytes_per_image": info["bytes_per_image"],
            "image_shape": info["image_shape"]}


def _input(args: StepArgs) -> dict:
    from avd_tf.inputs import avd_dataset, measure_throughput, num_videos, read_manifest

    reads = []
    for _ in range(MANIFEST_READS):
        start = time.perf_counter()
        read_manifest(args.data_dir)
        reads.append(time.perf_counter() - start)
    batches = num_videos(args.data_dir, "train") // args.batch_size
    dataset = avd_dataset(args.data_dir, "train", stream="rgb", num_frames=args.frames,
                          size=args.size, batch_size=args.batch_size, training=True)
    start = time.perf_counter()
    clips_per_s = measure_throughput(dataset, batches)
    return {"manifest_load_ms": 1000 * min(reads), "epoch_batches": batches,
            "epoch_seconds": time.perf_counter() - start, "input_clips_per_s": clips_per_s}


def run_step(args: StepArgs) -> dict:
    """One step in this process: its figures, this process's peak RSS and its RSS before it."""
    # In the baseline, as in every program that prepares or trains.
    import tensorflow  # noqa: F401

    from avd_tf.bench.memory import peak_rss_mb, rss_mb

    steps: dict[str, Callable[[StepArgs], dict]] = {
        "prepare": lambda a: _prepare(a, _dataset(a), "none"),
        "stream": _stream, "input": _input, "tvl1": _tvl1,
    }
    before, cpu = rss_mb(), time.process_time()
    result = steps[args.step](args)
    return {**result, f"{args.step}_cpu_seconds": time.process_time() - cpu,
            f"{args.step}_rss_before_mb": before, f"{args.step}_peak_rss_mb": peak_rss_mb()}


def _step_fields(**fields) -> dict:
    return run_step(StepArgs(**fields))


def run_step_in_subprocess(args: StepArgs) -> dict:
    """`run_step` in a fresh Python process (TF_ENABLE_ONEDNN_OPTS and the rest inherited)."""
    return run_in_child("avd_tf.bench.scale._step_fields", dataclasses.asdict(args),
                        f"scale benchmark step {args.step!r} on {args.data_dir}")


RATIO_KEYS = ("prepare_ms_per_video", "prepare_cpu_ms_per_video", "prepare_peak_rss_mb",
              "prepare_rss_growth_mb", "stream_ms_per_video", "stream_cpu_ms_per_video",
              "stream_peak_rss_mb", "stream_rss_growth_mb", "manifest_load_ms",
              "input_clips_per_s", "input_peak_rss_mb", "input_rss_growth_mb")


def ratios(results: dict) -> dict:
    """Each RATIO_KEYS figure of the largest N over the smallest N's."""
    sizes = sorted(results, key=int)
    small, large = results[sizes[0]], results[sizes[-1]]
    return {key: large[key] / small[key] for key in RATIO_KEYS
            if key in small and key in large and small[key]}


def added_cost(results: dict, key: str) -> dict:
    """ms per video added from each N to the next (`key`: a step's seconds); flat if linear.

    Unlike the time per video, it leaves out the costs a step pays once
    (imports, first calls, building the tf.data pipeline), which dominate
    at small N.
    """
    sizes = sorted(results, key=int)
    return {n: 1000 * (results[n][key] - results[m][key]) / (int(n) - int(m))
            for m, n in zip(sizes, sizes[1:]) if key in results[n] and key in results[m]}


def checks(found: dict) -> dict:
    """Linear time (flat CPU time per video) and flat memory, as avd-bench's: value, target, met.

    CPU time, not wall time: on a shared machine other work stretches a
    step's wall time by whatever the load was while it ran.
    """
    targets = {"prepare_cpu_ms_per_video": TIME_RATIO_TARGET,
               "stream_cpu_ms_per_video": TIME_RATIO_TARGET,
               "prepare_peak_rss_mb": RSS_RATIO_TARGET, "stream_peak_rss_mb": RSS_RATIO_TARGET,
               "input_peak_rss_mb": RSS_RATIO_TARGET}
    return {key: {"value": found[key], "target": target, "met": found[key] <= target}
            for key, target in targets.items() if key in found}


def check_sizes(sizes: list[int], classes: int = scale_videos.NUM_CLASSES) -> list[int]:
    """The distinct sizes in increasing order; ValueError unless each has a video per class."""
    if not sizes or min(sizes) < classes:
        raise ValueError(f"need numbers of videos of at least {classes} (one per class), "
                         f"got {sizes}")
    return sorted(set(sizes))


def measure_scale(work_dir: str, sizes: list[int], *, tvl1_videos: int = TVL1_VIDEOS,
                  batch_size: int = BATCH_SIZE, classes: int = scale_videos.NUM_CLASSES,
                  in_process: bool = False, log: Callable[[str], None] = print) -> dict:
    """Writes the videos of max(`sizes`) once, measures every step at each N; returns the report.

    `classes` and `in_process` are for tests: fewer classes than UCF101's
    101, and the steps run in this process (peak RSS then carries over from
    step to step and N to N).
    """
    sizes = check_sizes(sizes, classes)
    run = run_step if in_process else run_step_in_subprocess
    video_dir = os.path.join(work_dir, "videos")
    start = time.perf_counter()
    scale_videos.write_videos(video_dir, sizes[-1], classes)
    log(f"wrote {sizes[-1]} videos in {time.perf_counter() - start:.1f} s")
    results = {}
    for n in sizes:
        split_dir = os.path.join(work_dir, f"splits-{n}")
        counts = scale_videos.write_splits(split_dir, n, classes)
        common = dict(video_dir=video_dir, split_dir=split_dir, batch_size=batch_size,
                      data_dir=os.path.join(work_dir, f"prepared-{n}"))
        result = {"videos": n, "train_videos": counts["train"], "test_videos": counts["test"],
                  "load_at_start": os.getloadavg()[0]}
        for step in STEPS:
            result.update(run(StepArgs(step=step, **common)))
            log(f"N={n}: {step} done")
        result["load_at_end"] = os.getloadavg()[0]
        results[str(n)] = result
    split_dir = os.path.join(work_dir, f"splits-{sizes[0]}")
    tvl1 = run(StepArgs(step="tvl1", video_dir=video_dir, split_dir=split_dir,
                        data_dir=os.path.join(work_dir, "prepared-tvl1"),
                        tvl1_videos=tvl1_videos))
    for result in results.values():
        for step in ("prepare", "stream"):
            result[f"{step}_cpu_ms_per_video"] = (
                1000 * result[f"{step}_cpu_seconds"] / result["videos"])
        # TensorFlow's ~660 MB baseline hides in the peak what the step itself holds.
        for step in STEPS:
            result[f"{step}_rss_growth_mb"] = (
                result[f"{step}_peak_rss_mb"] - result[f"{step}_rss_before_mb"])
    for key in ("prepare_seconds", "stream_seconds"):
        for n, added in added_cost(results, key).items():
            results[n][key.replace("_seconds", "_added_ms_per_video")] = added
    found = ratios(results)
    return {"sizes": results, "tvl1": tvl1, "ratios": found, "checks": checks(found),
            "settings": {"size": scale_videos.SIZE, "frames": scale_videos.FRAMES,
                         "classes": classes, "batch_size": batch_size,
                         "videos_per_shard": VIDEOS_PER_SHARD, "stream": STREAM,
                         "prepare_workers": 1, "steps_in_subprocesses": not in_process}}
