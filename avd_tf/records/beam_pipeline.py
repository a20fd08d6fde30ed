"""Preparation as an Apache Beam pipeline: the same shards on any Beam runner.

    avd-prepare --runner beam --beam_options "--runner=DirectRunner \
        --direct_num_workers=2 --direct_running_mode=multi_processing" ...

The driver readies the output folder exactly as the local runner does
(`prepare.plan_run`: settings check, stale files removed, complete shards
skipped); the pipeline's elements are the incomplete shards, each with the
paths of its videos in shard order. A worker converts a shard's videos one
after the other, writes each record to `<shard>.tmp` as it comes and
publishes the shard with `shards.finish` (`PrepareShard`). Once the pipeline
is done, the driver writes manifest.json with `prepare.write_manifest`.
Records, summaries and manifest come from the same functions as the local
runner's, so both runners write the same bytes, and either can resume the
other's run.

Nothing but paths is grouped or shuffled: a worker holds one converted video
at a time, so memory stays flat however many videos the run has (grouping
the converted videos by shard would hold every video's JPEGs at once on the
DirectRunner, tens of GB for UCF101). The parallelism is a shard (10 videos
by default) per worker; each shard is published as soon as it is written,
so a killed run keeps its finished shards (the runner itself retries a
failed bundle, which writes its `.tmp` afresh).

The output folder must be a filesystem every worker sees: a local disk for
the DirectRunner, a shared mount (NFS, Filestore) for Flink or Spark. Shard
records go through `tf.io.TFRecordWriter`, which already takes gs:// paths.
For GCS on Dataflow, what would change: `shards.finish` and
`shards.remove_stale` and the settings check in `prepare` use open/os and
would move to `tf.io.gfile` (GCS has no atomic rename, but an object only
appears once written, so a shard could go straight to its final name after
its summary); `resolve_path` and OpenCV need local files, so videos would be
copied from gs:// to a worker's temporary file before decoding; the avd_tf
package must reach the workers (`--setup_file` or a custom container); and a
Kinetics-size video list would be read from a file instead of being embedded
in the job graph by `beam.Create`.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from avd_tf.datasets import DatasetSplits, resolve_path
from avd_tf.records import prepare as local
from avd_tf.records import shards
from avd_tf.records.convert import ConvertOptions, Converter


class PrepareShard(beam.DoFn):
    """(shard, split, [(entry, path), ...]) -> the shard written and published; yields its name.

    Converts the shard's videos one at a time (one OpenCV `Converter` per
    DoFn instance) and writes each record as it comes, so a worker holds one
    converted video, never a shard's or the run's.
    """

    def __init__(self, output_dir: str, options: ConvertOptions):
        self.output_dir = output_dir
        self.options = options

    def setup(self):
        import cv2

        # One OpenCV thread per worker: the runner's workers are the parallelism.
        cv2.setNumThreads(1)
        self._converter = Converter(self.options)

    def process(self, element):
        import tensorflow as tf

        name, split, videos = element
        summary = {"videos": [], "failures": []}
        with tf.io.TFRecordWriter(os.path.join(self.output_dir, name + shards.TMP_SUFFIX)) as writer:
            for entry, path in videos:
                record = local.add_result(summary, split, self._converter(entry, path))
                if record is not None:
                    writer.write(record)
        shards.finish(self.output_dir, name, summary)
        yield name


def build(
    pipeline: beam.Pipeline,
    plan: dict,
    todo: Iterable[str],
    video_dir: str,
    output_dir: str,
    options: ConvertOptions,
) -> beam.PCollection:
    """Adds the preparation of the `todo` shards of `plan` to `pipeline`.

    `plan` and `todo` are `prepare.plan_run`'s. Returns the PCollection of
    the names of the shards published.
    """
    # Grouped here, while they are paths: one element per shard, a split
    # without videos included (it still gets its empty shard).
    tasks = [
        (name, plan[name][0], [(entry, resolve_path(video_dir, entry)) for entry in plan[name][1]])
        for name in todo
    ]
    return (
        pipeline
        | "Shards" >> beam.Create(tasks)
        # Create's elements may stay on one worker; spread the shards over all.
        | "Spread" >> beam.Reshuffle()
        | "PrepareShard" >> beam.ParDo(PrepareShard(output_dir, options))
    )


def prepare(
    dataset: DatasetSplits,
    video_dir: str,
    output_dir: str,
    options: ConvertOptions,
    *,
    dataset_name: str = "",
    videos_per_shard: int = 10,
    pipeline_args: Sequence[str] = (),
    flip_label_map: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """`prepare.prepare` on the Beam runner `pipeline_args` name; returns (and writes) the manifest.

    `pipeline_args` are Beam's own command-line options (e.g.
    `["--runner=DirectRunner", "--direct_num_workers=2"]`); the default is
    the in-process DirectRunner.
    """
    settings, plan, todo = local.plan_run(
        dataset, output_dir, options, dataset_name=dataset_name, videos_per_shard=videos_per_shard,
        flip_label_map=flip_label_map, log=log
    )
    if todo:
        began = time.time()
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
            build(pipeline, plan, todo, video_dir, output_dir, options)
        seconds = time.time() - began
        summaries = [shards.read_summary(output_dir, name) for name in todo]
        for summary in summaries:
            for failure in summary["failures"]:
                log(f"FAILED {failure['path']}: {failure['reason']}")
        frames = sum(v["frames"] for s in summaries for v in s["videos"])
        count = sum(len(s["videos"]) + len(s["failures"]) for s in summaries)
        log(f"beam: {count} videos in {len(todo)} shards, {seconds:.1f} s, {frames / max(seconds, 1e-9):.0f} frames/s")
    return local.write_manifest(output_dir, plan, settings)
