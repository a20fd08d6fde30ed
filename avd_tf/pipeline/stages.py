"""The pipeline runner: stages that are reused when finished and timed as they end.

A stage is a name, its work (a function in this process, or a program run
as a subprocess so that TensorFlow frees its memory when it exits), the
folder it writes and the outputs whose presence means it finished. A stage
with a marker file also records its settings there: it is reused only when
they are the same, and a finished stage whose settings changed is an error
(its folder holds the old settings' output) unless it is cheap to redo
(`redo_on_change`). A stage whose own work resumes and checks its settings
(avd-train's and avd-finetune's model folders) is `always_run`: it is called
even when finished, and counts as reused for its time.

`Runner` runs stages in order; `StageTimings` keeps each stage's wall time
in a JSON file written as each one ends. The demo and the protocol are two
configurations of them (`avd_tf.pipeline.demo`, `avd_tf.pipeline.protocol`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import time
from typing import Callable

from avd_tf.files import write_json_atomically

TOTAL = "total"


class StageError(Exception):
    """A stage failed, or a folder holds output made with other settings."""


@dataclasses.dataclass
class Stage:
    """One step of a pipeline run. Finished = its outputs exist (and its marker records `record`).

    `folder` is what the stage writes into (deleting it, and the marker,
    redoes the stage). `run` names the run (e.g. a protocol's split) the
    stage belongs to; `text` says what it does, for a run's log.
    """

    name: str
    outputs: list[str]
    folder: str
    command: list[str] | None = None  # a subprocess, or else `action` in this process
    action: Callable[[], None] | None = None
    record: dict | None = None
    marker: str | None = None
    redo_on_change: bool = False
    always_run: bool = False
    run: str = ""
    text: str = ""

    @property
    def title(self) -> str:
        return f"{self.run}/{self.name}" if self.run else self.name

    def describe(self) -> str:
        if self.command is None:
            return f"{self.name} {json.dumps(self.record, sort_keys=True)}"
        # Shown as the installed console script; run as `python -m`, which works without it.
        program = "avd-" + self.command[2].rsplit(".", 1)[1]
        return shlex.join([program] + self.command[3:])


def stage_done(stage: Stage) -> bool:
    """True when `stage` finished with the same settings; StageError when with others.

    A stage without outputs is never finished.
    """
    if not stage.outputs:
        return False
    if stage.marker is not None:
        if not os.path.exists(stage.marker):
            return False
        with open(stage.marker) as f:
            previous = json.load(f).get("record")
        if previous != json.loads(json.dumps(stage.record)):
            if stage.redo_on_change:
                return False
            changed = sorted(k for k in set(previous or {}) | set(stage.record)
                             if (previous or {}).get(k) != stage.record.get(k))
            raise StageError(
                f"{stage.marker}: {stage.title} was run with other settings ({', '.join(changed)} differ); "
                f"use a new work_dir, or delete {stage.folder} and this file to redo it"
            )
    return all(os.path.exists(p) for p in stage.outputs)


def _execute(stage: Stage, started: float) -> None:
    """Runs `stage`'s work and, when it succeeds and has a marker, writes the marker."""
    if stage.command is not None:
        status = subprocess.run(stage.command).returncode
        if status != 0:
            raise StageError(f"{stage.title}: `{stage.describe()}` exited with status {status}")
    else:
        stage.action()
    if stage.marker is not None:
        write_marker(stage, seconds=time.time() - started)


def write_marker(stage: Stage, *, seconds: float = 0.0) -> None:
    """Marks `stage` finished; its outputs must exist.

    Besides `Runner`, for adopting output made elsewhere (e.g. a model
    fine-tuned by hand into the stage's folder with the same settings).
    """
    missing = [p for p in stage.outputs if not os.path.exists(p)]
    if missing:
        raise StageError(f"{stage.title}: cannot mark it finished, missing {', '.join(missing)}")
    os.makedirs(os.path.dirname(stage.marker), exist_ok=True)
    write_json_atomically(stage.marker, {"record": stage.record, "seconds": round(seconds, 1),
                                         "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
                          sort_keys=False)


class StageTimings:
    """The wall time of each stage, in seconds, kept in `path`.

    Written as each stage finishes, so a killed run keeps the times of the
    stages it finished; a stage reused from an earlier run keeps that run's
    time, so the summary of a re-run still says what the whole run costs.
    """

    def __init__(self, path: str, log: Callable[[str], None] = print):
        self.path, self.log = path, log
        self.previous = {}
        if os.path.exists(path):
            with open(path) as f:
                self.previous = json.load(f)
        self.previous.pop(TOTAL, None)
        self.times = {}

    def finish(self, name: str, started: float, reused: bool) -> None:
        """Records stage `name`, begun at `started` (time.time()), or reused from an earlier run."""
        if reused and name in self.previous:
            self.times[name] = self.previous[name]
            self.log(f"{name}: reused, {self.times[name]:.0f} s in an earlier run")
        else:
            self.times[name] = time.time() - started
        # Stages this run has not reached yet may still be reused by the next one.
        write_json_atomically(self.path, {**self.previous, **self.times})

    def close(self) -> dict:
        """This run's times and their TOTAL, written to `path`; returns them."""
        self.times[TOTAL] = sum(self.times.values())
        write_json_atomically(self.path, self.times)
        return self.times


def _command_lines(log: Callable[[str], None]):
    def announce(stage: Stage, index: int, total: int, done: bool) -> None:
        if done and not stage.always_run:
            log(f"[{stage.title}] done already, skipped")
        else:
            log(f"[{stage.title}] {stage.describe()}")

    return announce


class Runner:
    """Runs stages in order: a finished one is skipped (or, `always_run`, called to resume).

    `announce(stage, index, total, done)` logs a stage before it runs or is
    skipped (default: "[title] command" or "[title] done already, skipped");
    with `timings`, each stage's time is recorded as it ends.
    """

    def __init__(self, *, log: Callable[[str], None] = print, timings: StageTimings | None = None,
                 announce: Callable[[Stage, int, int, bool], None] | None = None):
        self.timings = timings
        self.announce = announce or _command_lines(log)

    def run(self, stages: list[Stage]) -> None:
        for index, stage in enumerate(stages, 1):
            self.run_one(stage, index, len(stages))

    def run_one(self, stage: Stage, index: int = 1, total: int = 1) -> bool:
        """Runs `stage` unless it finished with the same settings; returns whether it had finished."""
        started = time.time()
        done = stage_done(stage)
        self.announce(stage, index, total, done)
        if stage.always_run or not done:
            _execute(stage, started)
        if self.timings is not None:
            self.timings.finish(stage.name, started, done)
        return done
