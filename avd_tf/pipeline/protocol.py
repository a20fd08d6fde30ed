"""Whole evaluation protocols: prepare, train AVD, fine-tune and evaluate each split, then average.

Paper section 4.1: UCF101 and HMDB51 report the accuracy averaged over their
three official train/test splits; Kinetics one run (train on train.csv, test
on validate.csv) with top-1 and top-5. For each split (a "run") the stages
are: avd-prepare (library call), avd-train once per AVD stream input (rgb,
flow), avd-finetune once per stream, avd-evaluate (library call). The
training programs run as subprocesses, so each gets a fresh process and
TensorFlow frees its memory between them.

Layout under `work_dir` (preparation and AVD models do not depend on the
backbone, so protocols with other backbones, paper Table 2, share them):
  split1/prepared/                   avd-prepare output
  split1/avd_rgb/                    avd-train model folder (avd_flow/ likewise)
  split1/<backbone>/<stream>/        avd-finetune model folder
  split1/<backbone>/results.json     avd-evaluate output (+ results.md, confusion.png)
  split1/.stages/<stage>.json        written when a stage finishes
  protocol_<backbone>.json / .md     per-split results and their mean

Re-running skips every finished stage. A finished stage whose settings
changed is an error (its folder holds the old settings' output), except the
evaluation, which is simply redone. The stages run on
`avd_tf.pipeline.stages.Runner`, each with its marker.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable, Mapping

from avd_tf import streams
from avd_tf.classify import report
from avd_tf.files import write_json_atomically, write_text_atomically
from avd_tf.layout import CLASSIFIER_MODEL, CONFIG, MANIFEST
from avd_tf.pipeline.stages import Runner, Stage, StageError, stage_done

# Paper section 4.1: three official splits for UCF101 and HMDB51, one
# train/validation run for Kinetics.
DATASET_SPLITS = {"ucf101": (1, 2, 3), "hmdb51": (1, 2, 3), "kinetics": None}
KINETICS_RUN = "validation"
STAGES_DIR = ".stages"
RESULTS = "results.json"


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    """One protocol: dataset, where things go, which streams, how to train.

    `epochs` (fine-tuning) and `avd_epochs` (avd-train) of None leave those
    programs' defaults. `train_args` / `finetune_args` are passed on to
    avd-train / avd-finetune as they are (e.g. ("--batch_size", "32")).
    """

    dataset: str
    video_dir: str
    split_dir: str
    work_dir: str
    streams: tuple[str, ...] = ("frame", "flow", "avd_rgb", "avd_flow")
    backbone: str = "resnet50"
    weights: str = "imagenet"
    epochs: int | None = None
    splits: tuple[int, ...] | None = None
    preset: str = "paper"
    avd_epochs: int | None = None
    size: int = 128
    workers: int = 1
    batch_size: int = 64
    fuse: str = "mean"
    fusion_weights: tuple[float, ...] | None = None
    fusions: str | None = None
    train_args: tuple[str, ...] = ()
    finetune_args: tuple[str, ...] = ()

    def __post_init__(self):
        if self.dataset not in DATASET_SPLITS:
            raise ValueError(f"unknown protocol dataset {self.dataset!r}; expected one of {', '.join(DATASET_SPLITS)}")
        if not self.streams or len(set(self.streams)) != len(self.streams):
            raise ValueError(f"streams must be distinct and at least one, got {list(self.streams)}")
        bad = [s for s in self.streams if not s or "+" in s]
        if bad:
            raise ValueError(f"stream names cannot be empty or hold '+': {bad}")
        if self.splits is not None:
            if DATASET_SPLITS[self.dataset] is None:
                raise ValueError(f"{self.dataset} has one train/validation run; do not give splits")
            wrong = [s for s in self.splits if s not in DATASET_SPLITS[self.dataset]]
            if wrong or not self.splits or len(set(self.splits)) != len(self.splits):
                raise ValueError(f"{self.dataset} splits must be distinct values of 1, 2, 3; got {list(self.splits)}")
        if self.fusion_weights is not None and len(self.fusion_weights) != len(self.streams):
            raise ValueError(f"{len(self.streams)} streams but {len(self.fusion_weights)} fusion weights")


def protocol_path(settings: ProtocolSettings) -> str:
    """`work_dir/protocol_<backbone>.json`: the summary a protocol run writes (and a .md beside it)."""
    return os.path.join(os.path.abspath(settings.work_dir), f"protocol_{settings.backbone}.json")


def runs(settings: ProtocolSettings) -> list[tuple[str, int | None]]:
    """(run name, official split number or None) of every run of the protocol."""
    splits = DATASET_SPLITS[settings.dataset]
    if splits is None:
        return [(KINETICS_RUN, None)]
    return [(f"split{s}", s) for s in (settings.splits or splits)]


def _program(name: str) -> list[str]:
    return [sys.executable, "-m", f"avd_tf.apps.{name}"]


def _prepare_action(settings: ProtocolSettings, split: int | None, output_dir: str, flow: str, progress: bool):
    def action():
        from avd_tf.datasets import load_dataset
        from avd_tf.records import prepare

        dataset = load_dataset(settings.dataset, video_dir=settings.video_dir,
                               split_dir=settings.split_dir, split=split or 1)
        options = prepare.ConvertOptions(size=settings.size, flow=flow)
        manifest = prepare.prepare(dataset, settings.video_dir, output_dir, options,
                                   dataset_name=settings.dataset, workers=settings.workers,
                                   progress=progress)
        empty = [s for s in ("train", "test") if not manifest["splits"].get(s, {}).get("videos")]
        if empty:
            raise StageError(
                f"{os.path.join(output_dir, MANIFEST)}: no {' or '.join(empty)} video could be "
                f"prepared ({len(manifest['failures'])} failures listed there)"
            )

    return action


def _evaluate_action(settings: ProtocolSettings, model_dirs: list[str], data_dir: str, out_dir: str,
                     progress: bool, log: Callable[[str], None]):
    def action():
        from avd_tf.classify.evaluate import evaluate

        evaluate(
            model_dirs, data_dir=data_dir, split="test", fuse=settings.fuse,
            fusions=settings.fusions,
            weights=list(settings.fusion_weights) if settings.fusion_weights else None,
            batch_size=settings.batch_size, output=os.path.join(out_dir, RESULTS),
            confusion_png=os.path.join(out_dir, "confusion.png"),
            markdown=os.path.join(out_dir, "results.md"), progress=progress, log=log,
        )

    return action


def plan(settings: ProtocolSettings, *, progress: bool = True, log: Callable[[str], None] = print) -> list[Stage]:
    """Every stage of the protocol, in the order they run."""
    work = os.path.abspath(settings.work_dir)
    flow = "tvl1" if streams.needs_flow(settings.streams) else "none"
    stages = []
    for run, split in runs(settings):
        run_dir = os.path.join(work, run)
        markers = os.path.join(run_dir, STAGES_DIR)
        prepared = os.path.join(run_dir, "prepared")
        stages.append(Stage(
            "prepare", run=run,
            record={"dataset": settings.dataset, "video_dir": os.path.abspath(settings.video_dir),
                    "split_dir": os.path.abspath(settings.split_dir), "split": split,
                    "size": settings.size, "flow": flow},
            outputs=[os.path.join(prepared, MANIFEST)],
            marker=os.path.join(markers, "prepare.json"),
            folder=prepared,
            action=_prepare_action(settings, split, prepared, flow, progress),
        ))
        avd_dirs = {}
        for stream in settings.streams:
            source = streams.avd_input(stream)
            if source is None or source in avd_dirs:
                continue
            avd_dirs[source] = os.path.join(run_dir, streams.avd_stream(source))
            command = _program("train") + [
                "--data_dir", prepared, "--stream", source, "--preset", settings.preset,
                "--model_dir", avd_dirs[source],
            ]
            if settings.avd_epochs is not None:
                command += ["--epochs", str(settings.avd_epochs)]
            command += list(settings.train_args)
            stages.append(Stage(f"train_{source}", [avd_dirs[source]], avd_dirs[source],
                                command=command, record={"command": command[1:]},
                                marker=os.path.join(markers, f"train_{source}.json"), run=run))
        model_root = os.path.join(run_dir, settings.backbone)
        model_dirs = []
        for stream in settings.streams:
            model_dir = os.path.join(model_root, stream)
            model_dirs.append(model_dir)
            command = _program("finetune") + [
                "--data_dir", prepared, "--stream", stream, "--backbone", settings.backbone,
                "--weights", settings.weights, "--model_dir", model_dir,
            ]
            source = streams.avd_input(stream)
            if source:
                command += ["--avd_model_dir", avd_dirs[source]]
            if settings.epochs is not None:
                command += ["--epochs", str(settings.epochs)]
            command += list(settings.finetune_args)
            stages.append(Stage(
                f"{settings.backbone}/finetune_{stream}",
                [os.path.join(model_dir, CLASSIFIER_MODEL), os.path.join(model_dir, CONFIG)],
                model_dir, command=command, record={"command": command[1:]},
                marker=os.path.join(markers, f"{settings.backbone}_finetune_{stream}.json"), run=run,
            ))
        stages.append(Stage(
            f"{settings.backbone}/evaluate", run=run,
            record={"model_dirs": model_dirs, "fuse": settings.fuse,
                    "fusion_weights": list(settings.fusion_weights or []) or None,
                    "fusions": settings.fusions, "batch_size": settings.batch_size},
            outputs=[os.path.join(model_root, RESULTS)],
            marker=os.path.join(markers, f"{settings.backbone}_evaluate.json"),
            folder=model_root,
            action=_evaluate_action(settings, model_dirs, prepared, model_root, progress, log),
            redo_on_change=True,
        ))
    return stages


def average_results(per_run: Mapping[str, Mapping]) -> dict:
    """The mean over runs of each stream's and fusion's top-1 and top-5.

    Only entries present in every run are averaged; num_videos is the total
    over runs, and top1_per_split lists the runs' top-1 in run order.
    """
    if not per_run:
        raise ValueError("no run results to average")
    first = next(iter(per_run.values()))
    mean = {"dataset": first.get("dataset"), "num_splits": len(per_run)}
    for group in ("streams", "fusions"):
        mean[group] = {}
        for key in first.get(group, {}):
            entries = [r.get(group, {}).get(key) for r in per_run.values()]
            if any(e is None for e in entries):
                continue
            mean[group][key] = {
                "top1": sum(e["top1"] for e in entries) / len(entries),
                "top5": sum(e["top5"] for e in entries) / len(entries),
                "num_videos": sum(e["num_videos"] for e in entries),
                "top1_per_split": [e["top1"] for e in entries],
            }
    return mean


def _summary_markdown(settings: ProtocolSettings, per_run: Mapping[str, Mapping], mean: dict) -> str:
    name = report.dataset_name(settings.dataset)
    lines = [f"# {name}: {', '.join(map(report.display_name, settings.streams))} with {settings.backbone}", ""]
    lines += [f"Mean over {len(per_run)} run(s) ({', '.join(per_run)}):", "", report.markdown_table({name: mean})]
    for run, results in per_run.items():
        lines += [f"## {run}", "", report.markdown_table({name: results})]
    return "\n".join(lines)


def run_protocol(settings: ProtocolSettings, *, dry_run: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Runs (or with `dry_run`, lists) every unfinished stage, then writes the summary.

    The summary goes to `protocol_path(settings)` (JSON) and a Markdown
    table beside it.

    Returns the summary: {"dataset", "settings", "splits": {run:
    results}, "mean": averaged results}; with `dry_run`, {"stages": [{"stage",
    "done", "command"}]} and nothing is run or written.
    """
    stages = plan(settings, progress=progress, log=log)
    if dry_run:
        listed = []
        for stage in stages:
            done = stage_done(stage)
            log(f"{'done' if done else 'todo'} [{stage.title}] {stage.describe()}")
            listed.append({"stage": stage.title, "done": done, "command": stage.describe()})
        return {"stages": listed}
    Runner(log=log).run(stages)
    work = os.path.abspath(settings.work_dir)
    per_run = {}
    for run, _ in runs(settings):
        with open(os.path.join(work, run, settings.backbone, RESULTS)) as f:
            per_run[run] = json.load(f)
    mean = average_results(per_run)
    summary = {"dataset": settings.dataset, "settings": dataclasses.asdict(settings),
               "splits": per_run, "mean": mean}
    path = protocol_path(settings)
    write_json_atomically(path, summary, sort_keys=False)
    table = _summary_markdown(settings, per_run, mean)
    write_text_atomically(path[: -len(".json")] + ".md", table)
    log(table)
    return summary
