"""The model_dir of a resumable Keras training run, as avd-train and avd-finetune keep it.

`config.json` records the run; `history.csv` gets one row per epoch
(`keras.callbacks.CSVLogger(append=True)`); `backup/` is
`keras.callbacks.BackupAndRestore`'s state after the last finished epoch;
`metrics.json`, written last, marks a finished run. `open_run` refuses a
model_dir that holds another run and finds a finished one; `start_run`
clears what a fresh start must not inherit or says where a resumed run goes
on.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Callable

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
BACKUP = "backup"


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
        with open(metrics_path) as f:
            return json.load(f), None
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
