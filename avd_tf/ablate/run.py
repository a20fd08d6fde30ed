"""`run_ablation`: a grid of AVD(RGB) settings x seeds, each through distillation, fine-tuning
and evaluation, next to the untrained-E control and the frame / mean / dynamic baselines.

Layout of `output_dir`:

* `val_data/` (with eval_on="val"): the prepared folder whose test split is
  a seeded holdout of whole groups of the training split
  (`avd_tf.records.holdout.holdout_folder`); everything runs on it, and the
  original test split is never read;
* `runs/<row>/seed-<seed>/`: `avd/` (the AVD model folder: trained by
  `train_avd`, or the untrained control), `classifier/` (`finetune`'s
  model_dir) and `evaluation.json` (the classifier's video-level top-1 on
  the evaluation split). Finished parts are reused, so the same call again
  trains nothing new and an interrupted one goes on where it stopped;
* `ablation.json` (every run's figures and the rows), `ablation.md`,
  `ablation.csv`, `ablation.png` (`avd_tf.ablate.report`), rewritten after
  each seed.

Runs go seed by seed (the baselines, the control, then every cell), so an
interrupted ablation has complete seeds to look at.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

from avd_tf.ablate import report
from avd_tf.ablate.control import untrained_avd
from avd_tf.ablate.grid import Grid, config_overrides, folder_name
from avd_tf.classify.evaluate import evaluate
from avd_tf.classify.finetune import finetune
from avd_tf.files import write_json_atomically
from avd_tf.inputs.shards import list_shards, num_videos, read_manifest
from avd_tf.layout import METRICS
from avd_tf.models.training import train_avd
from avd_tf.pipeline.demo import DemoSettings
from avd_tf.records.holdout import holdout_folder
from avd_tf.streams import avd_stream

EVAL_SPLITS = ("val", "test")
MIN_SEEDS = 3
VAL_DATA = "val_data"
RUNS = "runs"
EVALUATION = "evaluation.json"
OUTPUTS = ("ablation.json", "ablation.md", "ablation.csv", "ablation.png")
CONTROL = "control: untrained E"
# Every cell trains AVD on RGB clips and is judged on E's images of them.
CLIP_STREAM = "rgb"
AVD_RGB = avd_stream(CLIP_STREAM)
_DEMO = DemoSettings()


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """How every row's classifier is fine-tuned (`finetune`); defaults: avd-demo's CPU settings."""

    backbone: str = _DEMO.backbone
    weights: str = _DEMO.weights
    input_size: int = _DEMO.input_size
    epochs: int = _DEMO.finetune_epochs
    steps_per_epoch: int = _DEMO.finetune_steps
    batch_size: int = _DEMO.batch_size
    lr: float = _DEMO.finetune_lr
    lr_decay: float = _DEMO.finetune_lr_decay


def _finished(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, METRICS))


def _check_seeds(seeds: Sequence[int], allow_fewer_seeds: bool) -> list[int]:
    seeds = [int(seed) for seed in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds (--seeds) repeat a seed: {seeds}")
    if not seeds or (len(seeds) < MIN_SEEDS and not allow_fewer_seeds):
        raise ValueError(f"seeds (--seeds): {len(seeds)} given {seeds}; a mean +- std over seeds "
                         f"needs at least {MIN_SEEDS} (allow_fewer_seeds, "
                         "--allow_fewer_seeds, is for tests)")
    return seeds


def _classify(data_dir: str, stream: str, run_dir: str, seed: int, settings: FinetuneSettings,
              *, avd_model_dir: str | None, progress: bool,
              log: Callable[[str], None]) -> tuple[dict, bool, float]:
    """Fine-tunes (or reuses) the run's classifier and evaluates it once.

    Returns (evaluation: top1, top5, num_videos, split; whether the
    classifier was reused; seconds spent).
    """
    classifier = os.path.join(run_dir, "classifier")
    reused = _finished(classifier)
    started = time.time()
    finetune(data_dir, stream, classifier, backbone=settings.backbone, weights=settings.weights,
             epochs=settings.epochs, steps_per_epoch=settings.steps_per_epoch,
             batch_size=settings.batch_size, input_size=settings.input_size, lr=settings.lr,
             lr_decay=settings.lr_decay, seed=seed, avd_model_dir=avd_model_dir,
             progress=progress, log=log)
    path = os.path.join(run_dir, EVALUATION)
    # An evaluation older than the classifier's end mark was of an earlier classifier.
    if (not os.path.isfile(path) or os.stat(path).st_mtime_ns
            < os.stat(os.path.join(classifier, METRICS)).st_mtime_ns):
        results = evaluate([classifier], data_dir, progress=progress, log=log)
        entry = results["streams"][stream]
        write_json_atomically(path, {"top1": entry["top1"], "top5": entry.get("top5"),
                                     "num_videos": entry["num_videos"],
                                     "split": results["split"]})
    with open(path) as f:
        return json.load(f), reused, time.time() - started


def _preamble(info: dict) -> list[str]:
    ft = info["finetune"]
    if info["eval_on"] == "val":
        held = info["holdout"]
        split = (f"Split: **val**, the {info['test_videos']} videos of {len(held['test_groups'])} "
                 f"video groups held out of the training split of `{info['data_dir']}` "
                 f"({held['fraction']:.0%} of each class's groups, seed {held['seed']}; folder "
                 f"`{info['eval_data_dir']}`). The original test split is never read: choose "
                 "settings on these figures.")
    else:
        split = (f"Split: **TEST**, the {info['test_videos']} test videos of "
                 f"`{info['data_dir']}`. These are test-split figures: do not use them to "
                 "choose settings (run with --eval_on val).")
    return [
        "# AVD(RGB) ablation",
        "",
        split,
        "",
        f"Mean +- sample standard deviation over {len(info['seeds'])} seed(s) "
        f"({', '.join(map(str, info['seeds']))}). AVD(RGB): "
        f"{' or '.join(map(str, info['grid']['epochs']))} epochs (the cell's) x "
        f"{info['avd_steps_per_epoch']} steps. Fine-tuning: {ft['backbone']} "
        f"(weights: {ft['weights']}) at {ft['input_size']}x{ft['input_size']}, {ft['epochs']} "
        f"epochs x {ft['steps_per_epoch']} steps, batch {ft['batch_size']}, SGD lr {ft['lr']:g} "
        f"x{ft['lr_decay']:g} per epoch, same seed as the row's AVD. Control: E as initialised "
        "by the seed, never trained. Baselines frame / mean / dynamic: fine-tuned once per seed.",
    ]


def write_outputs(output_dir: str, info: dict, runs: list[dict]) -> dict:
    """Writes ablation.json, .md, .csv and .png from the runs so far; returns the JSON content."""
    rows = report.summarise(runs)
    content = {**info, "runs": runs, "rows": rows}
    write_json_atomically(os.path.join(output_dir, "ablation.json"), content)
    with open(os.path.join(output_dir, "ablation.md"), "w") as f:
        f.write(report.markdown(rows, _preamble(info)))
    report.write_csv(os.path.join(output_dir, "ablation.csv"), rows)
    split = "val (held-out training groups)" if info["eval_on"] == "val" else "TEST split"
    report.plot(os.path.join(output_dir, "ablation.png"), rows,
                f"{split}, {info['test_videos']} videos; {len(info['seeds'])} seed(s)")
    return content


def run_ablation(
    data_dir: str,
    output_dir: str,
    grid: Grid,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    avd_steps_per_epoch: int = _DEMO.avd_steps,
    finetune_settings: FinetuneSettings | None = None,
    eval_on: str = "val",
    val_fraction: float = 0.2,
    val_seed: int = 0,
    allow_fewer_seeds: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs (or finishes) the ablation of `grid` x `seeds` on prepared `data_dir`.

    `eval_on`: "val" builds `output_dir/val_data` (`val_fraction` of each
    class's training groups held out, seeded by `val_seed`) and runs
    everything on it; "test" runs on `data_dir` and its test split (the
    table then says its figures must not choose settings). Needs at least
    3 distinct seeds unless `allow_fewer_seeds`. Returns the content of
    ablation.json (module docstring).
    """
    seeds = _check_seeds(seeds, allow_fewer_seeds)
    if eval_on not in EVAL_SPLITS:
        raise ValueError(f"eval_on (--eval_on) must be one of {', '.join(EVAL_SPLITS)}, "
                         f"got {eval_on!r}")
    if avd_steps_per_epoch < 1:
        raise ValueError(f"avd_steps_per_epoch (--steps_per_epoch) must be >= 1, "
                         f"got {avd_steps_per_epoch}")
    settings = finetune_settings or FinetuneSettings()
    read_manifest(data_dir)
    list_shards(data_dir, "train")
    cells, architectures = grid.cells(), grid.architectures()
    os.makedirs(output_dir, exist_ok=True)
    holdout = None
    if eval_on == "val":
        eval_dir = os.path.join(output_dir, VAL_DATA)
        holdout = holdout_folder(data_dir, eval_dir, fraction=val_fraction, seed=val_seed,
                                 log=log)["holdout"]
    else:
        list_shards(data_dir, "test")
        eval_dir = data_dir
    info = {
        "data_dir": os.path.abspath(data_dir),
        "eval_on": eval_on,
        "eval_data_dir": os.path.abspath(eval_dir),
        "test_videos": num_videos(eval_dir, "test"),
        "holdout": holdout,
        "grid": dataclasses.asdict(grid),
        "cells": cells,
        "seeds": seeds,
        "avd_steps_per_epoch": int(avd_steps_per_epoch),
        "finetune": dataclasses.asdict(settings),
    }
    total = len(seeds) * (len(report.BASELINES) + len(architectures) + len(cells))
    runs: list[dict] = []
    index = 0

    def record(kind, row, setting, seed, run_dir, evaluation, figures, what):
        nonlocal index
        index += 1
        runs.append({"kind": kind, "row": row, "setting": setting, "seed": seed,
                     "top1": evaluation["top1"], "num_videos": evaluation["num_videos"],
                     "figures": figures, "run_dir": os.path.abspath(run_dir)})
        log(f"[{index}/{total}] {row} seed={seed}: {what}, top-1 {evaluation['top1']:.2f}")

    def fine_tuned(reused, seconds):
        return "classifier reused" if reused else f"fine-tuned in {seconds:.0f} s"

    for seed in seeds:
        for stream in report.BASELINES:
            run_dir = os.path.join(output_dir, RUNS, f"baseline-{stream}", f"seed-{seed}")
            evaluation, reused, seconds = _classify(eval_dir, stream, run_dir, seed, settings,
                                                    avd_model_dir=None, progress=progress,
                                                    log=log)
            record("baseline", stream, {"stream": stream}, seed, run_dir, evaluation, {},
                   fine_tuned(reused, seconds))
        for arch in architectures:
            label = grid.label(arch)
            row = f"{CONTROL} ({label})" if label else CONTROL
            run_dir = os.path.join(output_dir, RUNS, f"control-{folder_name(arch)}", f"seed-{seed}")
            avd_dir = os.path.join(run_dir, "avd")
            reused, started = _finished(avd_dir), time.time()
            figures = untrained_avd(eval_dir, avd_dir, preset=arch["preset"], seed=seed, log=log,
                                    **config_overrides(arch))
            what = "untrained E reused" if reused else (
                f"untrained E evaluated in {time.time() - started:.0f} s")
            evaluation, reused, seconds = _classify(eval_dir, AVD_RGB, run_dir, seed, settings,
                                                    avd_model_dir=avd_dir, progress=progress,
                                                    log=log)
            record("control", row, arch, seed, run_dir, evaluation, _figures(figures),
                   f"{what}, {fine_tuned(reused, seconds)}")
        for cell in cells:
            run_dir = os.path.join(output_dir, RUNS, folder_name(cell), f"seed-{seed}")
            avd_dir = os.path.join(run_dir, "avd")
            reused, started = _finished(avd_dir), time.time()
            figures = train_avd(eval_dir, avd_dir, stream=CLIP_STREAM, preset=cell["preset"],
                                epochs=cell["epochs"], steps_per_epoch=avd_steps_per_epoch,
                                seed=seed, progress=progress, log=log, **config_overrides(cell))
            what = "AVD reused" if reused else f"AVD trained in {time.time() - started:.0f} s"
            evaluation, reused, seconds = _classify(eval_dir, AVD_RGB, run_dir, seed, settings,
                                                    avd_model_dir=avd_dir, progress=progress,
                                                    log=log)
            record("cell", grid.label(cell), cell, seed, run_dir, evaluation, _figures(figures),
                   f"{what}, {fine_tuned(reused, seconds)}")
        content = write_outputs(output_dir, info, runs)
    return content


def _figures(metrics: dict) -> dict:
    """The figures of an AVD run's metrics.json ("final") the table reports."""
    final = metrics["final"]
    return {key: final[key] for key, *_ in report.FIGURES if key in final}


__all__ = ["CONTROL", "EVAL_SPLITS", "FinetuneSettings", "MIN_SEEDS", "OUTPUTS", "run_ablation",
           "write_outputs"]
