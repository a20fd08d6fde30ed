"""The model_dir of a resumable Keras training run, as avd-train and avd-finetune keep it.

`config.json` records the run; `history.csv` gets one row per epoch
(`keras.callbacks.CSVLogger(append=True)`); `backup/` is
`keras.callbacks.BackupAndRestore`'s state after the last finished epoch;
`metrics.json`, written last, marks a finished run; `logs/` is for
TensorBoard (their names: `avd_tf.layout`). Both programs' metrics.json has
one layout (`run_metrics`): "program", "run" (what ran: stream, model,
counts), "history" (history.csv's rows), "final" (the figures of the epoch
whose model was kept and the "rule" that kept it) and "timing". `open_run`
refuses a model_dir that holds another run and finds a finished one;
`start_run` clears what a fresh start must not inherit or says where a
resumed run goes on. The
settings both programs share live here too: the in-memory caching rule, the
precision flag's values (`precision`), the epoch timer and the
TensorBoard callback.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import statistics
import time
from typing import Callable

import keras

from avd_tf.files import keras_temporary, write_json_atomically
from avd_tf.inputs.shards import list_shards
from avd_tf.layout import BACKUP, CONFIG, HISTORY, LOGS, METRICS

# Below this many bytes of input shards the parsed inputs stay in memory
# (our choice: the demo and HMDB51-sized data fit, UCF101 frames at full
# size and Kinetics would not).
CACHE_LIMIT_BYTES = 1 << 30
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")


def fits_in_memory(data_dir: str) -> bool:
    """Whether the train and test shards of `data_dir` are small enough to cache
    (`CACHE_LIMIT_BYTES`)."""
    paths = list_shards(data_dir, "train") + list_shards(data_dir, "test")
    return sum(os.path.getsize(path) for path in paths) <= CACHE_LIMIT_BYTES


def check_precision(name: str) -> None:
    """Refuses a precision flag value that is not one of PRECISIONS."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown mixed precision {name!r}; expected one of {PRECISIONS}")


@contextlib.contextmanager
def precision(name: str):
    """Models built inside use dtype policy `name` (one of PRECISIONS; "none": float32)."""
    check_precision(name)
    policy = keras.config.dtype_policy()
    if name != "none":
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


# The per-epoch keys EpochTimer adds besides `<unit>_per_second`.
TIMER_SECONDS = ("train_seconds", "epoch_seconds")
RATE_SUFFIX = "_per_second"


class EpochTimer(keras.callbacks.Callback):
    """Adds train_seconds, `<unit>_per_second` (training only) and epoch_seconds to epoch logs."""

    def __init__(self, items_per_epoch: int, unit: str):
        super().__init__()
        self.items_per_epoch = items_per_epoch
        self.key = unit + RATE_SUFFIX

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        train = self._train_seconds if self._train_seconds is not None else now - self._start
        if logs is not None:
            logs["train_seconds"] = train
            logs[self.key] = self.items_per_epoch / train
            logs["epoch_seconds"] = now - self._start


def tensorboard(model_dir: str) -> keras.callbacks.TensorBoard:
    """Keras' TensorBoard callback on `model_dir/logs`: each epoch's scalars, train and validation."""
    return keras.callbacks.TensorBoard(os.path.join(model_dir, LOGS), write_graph=False)


class _Publish(keras.callbacks.Callback):
    def __init__(self, tmp: str, path: str):
        super().__init__()
        self.tmp, self.path = tmp, path

    def on_epoch_end(self, epoch, logs=None):
        if os.path.exists(self.tmp):
            os.replace(self.tmp, self.path)


def model_checkpoint(path: str, **kwargs) -> list[keras.callbacks.Callback]:
    """`keras.callbacks.ModelCheckpoint(path, **kwargs)` writing through a temporary name.

    ModelCheckpoint saves in place, so a run killed while it saves would leave
    a half-written model under `path`; here it saves to `keras_temporary(path)`
    and the second callback renames that file when the epoch ends.
    """
    tmp = keras_temporary(path)
    return [keras.callbacks.ModelCheckpoint(tmp, **kwargs), _Publish(tmp, path)]


def read_history(model_dir: str) -> list[dict]:
    """Rows of history.csv as dicts with a 1-based "epoch" (a re-run epoch's last row wins)."""
    path = os.path.join(model_dir, HISTORY)
    if not os.path.isfile(path):
        return []
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                # CSVLogger writes "NA" for the val_ columns of a run without validation.
                values = {k: float(v) for k, v in row.items() if v not in ("", None, "NA")}
                rows[int(values.pop("epoch"))] = values
            except (KeyError, ValueError) as error:
                raise ValueError(f"{path}: unreadable row {row} ({error})") from error
    return [{"epoch": epoch + 1, **rows[epoch]} for epoch in sorted(rows)]


def _is_timing(key: str) -> bool:
    return key in TIMER_SECONDS or key.endswith(RATE_SUFFIX)


def epoch_figures(row: dict) -> dict:
    """An epoch's row of history without EpochTimer's keys (those go to "timing")."""
    return {key: value for key, value in row.items() if not _is_timing(key)}


def run_metrics(program: str, run: dict, history: list[dict], *, started: float,
                final: dict | None = None, rule: str = "last") -> dict:
    """The content of a finished run's metrics.json.

    "final" is `rule` and the figures of `final` (by default the last row of
    `history`); "timing" sums EpochTimer's seconds over the epochs, takes
    the median of each `<unit>_per_second` (robust to the first epoch of a
    run, which also traces the step) and the wall time since `started`.
    """
    final = history[-1] if final is None else final
    timing = {}
    if history:
        for key in TIMER_SECONDS:
            timing[key] = round(sum(row.get(key, 0.0) for row in history), 3)
        for key in sorted({key for row in history for key in row if key.endswith(RATE_SUFFIX)}):
            timing[key] = statistics.median(row[key] for row in history if key in row)
    timing["wall_seconds"] = round(time.time() - started, 3)
    return {"program": program, "run": run, "history": history,
            "final": {"rule": rule, **epoch_figures(final)}, "timing": timing}


def write_metrics(model_dir: str, metrics: dict) -> None:
    """Writes model_dir/metrics.json, the mark of a finished run (atomically)."""
    write_json_atomically(os.path.join(model_dir, METRICS), metrics)


def _from_separate_layouts(metrics: dict) -> dict | None:
    """`run_metrics`' layout of a metrics.json written before it (None if not one).

    Finished runs of that time (demo and ablation folders) stay reusable
    without training again: avd-train's figures were flat, avd-finetune's
    nested in "selected", the untrained control's flat without history.
    """
    history = metrics.get("history", [])
    if "selected" in metrics:
        final = dict(metrics["selected"])
        program, rule = "finetune", final.pop("rule")
        run = {key: metrics.get(key) for key in
               ("stream", "backbone", "train_images", "test_images", "validation")}
    elif metrics.get("untrained"):
        program, rule = "untrained AVD", "untrained"
        final = {key: value for key, value in metrics.items() if key.startswith("val_")}
        run = {"stream": metrics.get("stream"), "preset": metrics.get("preset"), "untrained": True}
    elif history:
        program, rule, final = "train", "last", history[-1]
        run = {key: metrics.get(key) for key in ("stream", "preset", "replicas")}
    else:
        return None
    converted = run_metrics(program, run, history, started=time.time(), final=final, rule=rule)
    converted["timing"]["wall_seconds"] = metrics.get("wall_time_s")
    return converted


def read_metrics(model_dir: str) -> dict:
    """model_dir/metrics.json in `run_metrics`' layout; a one-line ValueError for another file."""
    path = os.path.join(model_dir, METRICS)
    with open(path) as f:
        try:
            metrics = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: not the metrics of a training run (a JSON object)")
    missing = [key for key in ("program", "run", "history", "final", "timing")
               if key not in metrics]
    if missing:
        converted = _from_separate_layouts(metrics)
        if converted is None:
            raise ValueError(f"{path}: not the metrics of a training run (no "
                             f"{', '.join(missing)}); delete {model_dir} to run again")
        return converted
    return metrics


def backup_epoch(model_dir: str) -> int | None:
    """Epochs finished according to BackupAndRestore's metadata, or None without a backup."""
    path = os.path.join(model_dir, BACKUP, "training_metadata.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return int(json.load(f)["epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: unreadable backup metadata ({error}); delete "
                f"{os.path.join(model_dir, BACKUP)} to restart training"
            ) from error


def check_config(model_dir: str, config: dict) -> dict | None:
    """The previous config.json of model_dir (None if none); refuses another run's folder."""
    path = os.path.join(model_dir, CONFIG)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            previous = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
    if changed:
        raise ValueError(
            f"{path}: {model_dir} holds a run with other settings ({', '.join(changed)} "
            "differ); use another model_dir, or delete this one to start over"
        )
    return previous


def open_run(model_dir: str, config: dict, *, program: str,
             log: Callable[[str], None]) -> tuple[dict | None, int | None]:
    """Creates model_dir and checks it against `config`.

    Returns (the metrics of this same run if it has finished, else None;
    the epochs its backup says are done, None without a backup). Raises
    ValueError when model_dir holds a run with another config.
    """
    os.makedirs(model_dir, exist_ok=True)
    previous = check_config(model_dir, config)
    done = backup_epoch(model_dir)
    metrics_path = os.path.join(model_dir, METRICS)
    if previous is not None and done is None and os.path.isfile(metrics_path):
        log(f"{program}: {model_dir} already holds this finished run ({metrics_path}); "
            "delete it or use another model_dir to train again")
        return read_metrics(model_dir), None
    return None, done


def start_run(model_dir: str, done: int | None, epochs: int, *, program: str,
              log: Callable[[str], None], out_dir: str | None = None) -> None:
    """Readies `out_dir` (model_dir by default) for training after `open_run`.

    `out_dir` differs from model_dir where a process trains along without
    writing model_dir (a non-chief worker).
    """
    out_dir = model_dir if out_dir is None else out_dir
    if done is None:
        # A fresh start: rows of a run killed before its first backup are stale.
        for stale in (HISTORY, METRICS):
            if os.path.exists(os.path.join(out_dir, stale)):
                os.remove(os.path.join(out_dir, stale))
    else:
        log(f"{program}: resuming from {os.path.join(model_dir, BACKUP)}: {done} of {epochs} "
            f"epochs done, continuing at epoch {done + 1}")
