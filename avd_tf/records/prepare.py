"""Video files -> SequenceExample shards + manifest.json, in parallel and resumable.

Videos are converted in worker processes (OpenCV only) and serialised and
written by this process in a fixed order, so a run that was killed and
resumed writes exactly the bytes an uninterrupted run writes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Iterable

import numpy as np

from avd_tf import terminal
from avd_tf.datasets import DatasetSplits, resolve_path
from avd_tf.datasets import flip_labels
from avd_tf.files import TMP_SUFFIX, write_json_atomically
from avd_tf.layout import MANIFEST, PROGRESS_DIR, SETTINGS, SHARD_FILES, shard_name
from avd_tf.records import schema, shards, workers as worker_pool
from avd_tf.records.convert import ConvertOptions, Task, VideoResult, convert_task, init_worker
from avd_tf.video import flow

# settings.json key of the seed of the shards' video order (`shard_order`).
SHARD_ORDER = "shard_order_seed"
SHARD_ORDER_SEED = 0
# settings.json key of the flow algorithm (`avd_tf.video.flow.algorithm`):
# a resumed run whose "auto" device resolves otherwise is refused.
FLOW_ALGORITHM = "flow_algorithm"
# One CUDA context per worker: more than this many share one GPU badly.
CUDA_WORKERS = 2


class PrepareError(Exception):
    """Raised when an output folder cannot be (re)used as asked."""


def _video_summary(result: VideoResult) -> dict:
    return {
        "id": result.entry.video_id,
        "path": result.entry.path,
        "label": result.entry.label,
        "frames": len(result.frames),
        "flow_frames": len(result.flow_x),
        "height": result.height,
        "width": result.width,
        "notes": result.notes,
    }


def _failure(split: str, result: VideoResult) -> dict:
    return {"split": split, "id": result.entry.video_id, "path": result.path, "reason": result.failure}


def shard_order(entries: list, seed: int | None) -> list:
    """`entries` in the seeded random order shards are cut from (as given when `seed` is None).

    Split files list videos class by class (UCF101's trainlist01.txt is
    sorted by class, HMDB51's and folder datasets are read class by class):
    shards cut from that order hold a few classes each, and tf.data's
    shuffle buffer over a few interleaved shards then fills batches from a
    few classes. A permutation spreads every class over every shard.
    """
    if seed is None:
        return list(entries)
    return [entries[i] for i in np.random.default_rng(seed).permutation(len(entries))]


def _previous_settings(output_dir: str) -> dict | None:
    path = os.path.join(output_dir, PROGRESS_DIR, SETTINGS)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _check_settings(output_dir: str, settings: dict, previous: dict | None) -> None:
    """Refuses settings that differ from `previous` (`_previous_settings`); records new ones."""
    path = os.path.join(output_dir, PROGRESS_DIR, SETTINGS)
    if previous is not None:
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            hint = ""
            if flip_labels.KEY in changed:
                hint = "; prepared data takes another flip_label_map at avd-finetune --flip_label_map"
            raise PrepareError(
                f"{output_dir} holds a preparation made with other settings ({', '.join(changed)} "
                f"differ): use a new --output_dir, or delete this one to start over{hint}"
            )
    else:
        write_json_atomically(path, settings)


def _results(tasks: list[Task], options: ConvertOptions, workers: int,
             video_timeout: float | None) -> Iterable[tuple[Task, VideoResult]]:
    if (workers <= 1 or len(tasks) <= 1) and video_timeout is None:
        init_worker(options)
        return map(convert_task, tasks)
    return worker_pool.imap(tasks, options, workers, video_timeout)


def prepare(
    dataset: DatasetSplits,
    video_dir: str,
    output_dir: str,
    options: ConvertOptions,
    *,
    dataset_name: str = "",
    videos_per_shard: int = 10,
    workers: int = 1,
    video_timeout: float | None = None,
    progress: bool = True,
    flip_label_map: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Prepares every split of `dataset`; returns (and writes) the manifest.

    Videos are converted in `workers` worker processes (`workers.imap`): a
    worker that dies inside a video, or a video that takes longer than
    `video_timeout` seconds, makes that video a failure and the run goes on.
    With one worker and no timeout they are converted in this process.

    `flip_label_map` (mirror classes, `avd_tf.datasets.flip_labels`: class
    names or indices) is checked against the dataset's classes and recorded
    in the manifest as {"<index>": index}, both directions.
    """
    settings, plan, todo = plan_run(
        dataset, output_dir, options, dataset_name=dataset_name, videos_per_shard=videos_per_shard,
        flip_label_map=flip_label_map, log=log
    )
    total = sum(len(v[1]) for v in plan.values())
    remaining = sum(len(plan[name][1]) for name in todo)
    if settings.get(FLOW_ALGORITHM, {}).get("device") == "cuda" and workers > CUDA_WORKERS:
        log(f"TV-L1 runs on CUDA: {CUDA_WORKERS} workers instead of {workers} "
            "(each opens its own CUDA context)")
        workers = CUDA_WORKERS

    tasks = [
        Task(plan[name][0], name, entry, resolve_path(video_dir, entry))
        for name in todo
        for entry in plan[name][1]
    ]
    left = {name: len(plan[name][1]) for name in todo}
    summaries = {name: {"videos": [], "failures": []} for name in todo}
    writers = {}
    bar = terminal.progress_bar(total, initial=total - remaining, desc="prepare", unit="video",
                                enabled=progress)
    start = time.time()
    frames = 0
    try:
        for name in todo:
            if not left[name]:  # a split with no videos still gets its (empty) shard
                writers[name] = _open(output_dir, name)
                _publish(output_dir, name, writers.pop(name), summaries[name])
        for task, result in _results(tasks, options, workers, video_timeout):
            name = task.shard
            if name not in writers:
                writers[name] = _open(output_dir, name)
            record = add_result(summaries[name], task.split, result)
            if record is None:
                bar.write(f"FAILED {result.path}: {result.failure}")
            else:
                writers[name].write(record)
                frames += len(result.frames)
            left[name] -= 1
            if not left[name]:
                _publish(output_dir, name, writers.pop(name), summaries[name])
            bar.update(1)
            bar.set_postfix(frames_per_s=f"{frames / max(time.time() - start, 1e-9):.0f}")
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
    return write_manifest(output_dir, plan, settings)


def plan_run(
    dataset: DatasetSplits,
    output_dir: str,
    options: ConvertOptions,
    *,
    dataset_name: str,
    videos_per_shard: int,
    log: Callable[[str], None],
    flip_label_map: dict | None = None,
) -> tuple[dict, dict, list[str]]:
    """Readies `output_dir` for a (resumed) run; shared by every runner.

    Refuses a folder prepared with other settings, deletes partial files a
    killed run left and complete shards that no longer match their recorded
    size and sha256, and returns the settings, the shard plan (shard name ->
    (split, entries), each split in a seeded random order: `shard_order`)
    and the names of the shards that are not complete yet.
    """
    os.makedirs(os.path.join(output_dir, PROGRESS_DIR), exist_ok=True)
    settings = {
        "dataset": dataset_name,
        "options": dataclasses.asdict(options),
        "videos_per_shard": videos_per_shard,
        "classes": dataset.classes,
        "videos": {split: [e.path for e in entries] for split, entries in dataset.splits.items()},
    }
    if flip_label_map:
        # Only when given: folders prepared before the key existed still resume.
        settings[flip_labels.KEY] = flip_labels.to_json(flip_labels.check_flip_label_map(
            flip_label_map, dataset.classes, flip_labels.KEY))
    previous = _previous_settings(output_dir)
    # A folder prepared before shards were shuffled (or flow recorded)
    # resumes as it was prepared.
    if previous is None or SHARD_ORDER in previous:
        settings[SHARD_ORDER] = SHARD_ORDER_SEED
    if options.flow == "tvl1" and (previous is None or FLOW_ALGORITHM in previous):
        try:
            settings[FLOW_ALGORITHM] = flow.algorithm(options.flow_device)
        except (RuntimeError, ValueError) as error:  # no CUDA TV-L1, or no cv2.optflow
            raise PrepareError(str(error)) from None
    _check_settings(output_dir, settings, previous)
    stale = shards.remove_stale(output_dir)
    if stale:
        log(f"removed {stale} partial file(s) left by an interrupted run")

    plan = {}
    for split, entries in dataset.splits.items():
        entries = shard_order(entries, settings.get(SHARD_ORDER))
        ranges = shards.plan(len(entries), videos_per_shard)
        for i, r in enumerate(ranges):
            plan[shard_name(split, i, len(ranges))] = (split, [entries[j] for j in r])
    todo = []
    for name in plan:
        if shards.is_complete(output_dir, name):
            damage = shards.damage(output_dir, name)
            if damage is None:
                continue
            path = os.path.join(output_dir, name)
            log(f"{path}: damaged ({damage}); preparing this shard again")
            os.remove(path)
        todo.append(name)
    if len(todo) < len(plan):
        log(f"resuming: {len(plan) - len(todo)} of {len(plan)} shards already complete")
    return settings, plan, todo


def add_result(summary: dict, split: str, result: VideoResult) -> bytes | None:
    """Enters `result` in its shard's summary; returns its record, or None if it failed.

    Every runner goes through here so that shards and summaries are the same
    bytes whichever runner wrote them.
    """
    if not result.ok:
        summary["failures"].append(_failure(split, result))
        return None
    summary["videos"].append(_video_summary(result))
    return schema.serialize(_encoded(result))


def write_manifest(output_dir: str, plan: dict, settings: dict) -> dict:
    """Builds manifest.json from the shard summaries, writes it, and returns it."""
    manifest = build_manifest(output_dir, plan, settings)
    write_json_atomically(os.path.join(output_dir, MANIFEST), manifest)
    return manifest


def _open(output_dir: str, name: str):
    import tensorflow as tf

    return tf.io.TFRecordWriter(os.path.join(output_dir, name + TMP_SUFFIX))


def _publish(output_dir: str, name: str, writer, summary: dict) -> None:
    writer.close()
    shards.finish(output_dir, name, summary)


def _encoded(result: VideoResult) -> schema.EncodedVideo:
    return schema.EncodedVideo(
        video_id=result.entry.video_id,
        label=result.entry.label,
        label_name=result.entry.label_name,
        height=result.height,
        width=result.width,
        fps=result.fps,
        frames=result.frames,
        flow_x=result.flow_x,
        flow_y=result.flow_y,
    )


def build_manifest(output_dir: str, plan: dict, settings: dict) -> dict:
    """Gathers the shard summaries into the dataset's manifest (deterministic)."""
    splits, videos, failures, files = {}, {}, [], {}
    for name, (split, entries) in plan.items():
        summary = shards.read_summary(output_dir, name)
        if shards.FILE_KEY in summary:
            files[name] = summary[shards.FILE_KEY]
        entry = splits.setdefault(
            split, {"listed": 0, "videos": 0, "failed": 0, "frames": 0, "flow_frames": 0, "shards": []}
        )
        entry["listed"] += len(entries)
        entry["videos"] += len(summary["videos"])
        entry["failed"] += len(summary["failures"])
        entry["frames"] += sum(v["frames"] for v in summary["videos"])
        entry["flow_frames"] += sum(v["flow_frames"] for v in summary["videos"])
        entry["shards"].append(name)
        videos.setdefault(split, []).extend(summary["videos"])
        failures.extend(summary["failures"])
    for split, entry in splits.items():
        per_class = [0] * len(settings["classes"])
        for video in videos[split]:
            per_class[video["label"]] += 1
        entry["videos_per_class"] = per_class
    manifest = {
        "dataset": settings["dataset"],
        "classes": settings["classes"],
        "options": settings["options"],
        "splits": splits,
        "videos": videos,
        "failures": failures,
        "notes": sum(len(v["notes"]) > 0 for vs in videos.values() for v in vs),
        # Readers check the sizes before training (avd_tf.inputs.shards.check_shard_sizes).
        SHARD_FILES: files,
    }
    if flip_labels.KEY in settings:
        manifest[flip_labels.KEY] = settings[flip_labels.KEY]
    return manifest


def dry_run(dataset: DatasetSplits, video_dir: str) -> tuple[list[str], dict]:
    """Checks split files against the disk without decoding anything.

    Returns the listed-but-missing paths and, per split, the number of videos
    listed, missing, and distinct classes they cover.
    """
    missing, report = [], {}
    for split, entries in dataset.splits.items():
        lost = [e.path for e in entries if resolve_path(video_dir, e) is None]
        missing.extend(lost)
        report[split] = {
            "videos": len(entries),
            "missing": len(lost),
            "classes": len({e.label for e in entries}),
        }
    return missing, report
