"""The file names of every stage's folder, defined here only (no TensorFlow import).

* Prepared data (avd-prepare): `manifest.json`, written last, the shards and
  `.progress/` (`settings.json` and one summary per shard).
* Image streams (avd-distill, avd-finetune's stream caches): shards named as
  prepared data's are and `stream.json`, written last.
* A training run's model folder (`avd_tf.run_dir`): `config.json`,
  `history.csv`, `backup/`, `logs/` and `metrics.json`, written last; avd-train
  adds `avd.keras`, `encoder.keras` and `checkpoints/`, avd-finetune
  `model.keras`.

A shard is `{split}-{i:05d}-of-{n:05d}.tfrecord` only once it is complete;
its temporary names never match `parse_shard_name`.
"""
from __future__ import annotations

import re

MANIFEST = "manifest.json"
PROGRESS_DIR = ".progress"
SETTINGS = "settings.json"
# manifest.json's record of each shard's size and sha256.
SHARD_FILES = "shard_files"
SHARD_SUFFIX = ".tfrecord"

STREAM_INFO = "stream.json"

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
BACKUP = "backup"
LOGS = "logs"
AVD_MODEL = "avd.keras"
ENCODER = "encoder.keras"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PATTERN = "epoch-{epoch:03d}.weights.h5"
CLASSIFIER_MODEL = "model.keras"


def shard_name(split: str, index: int, count: int) -> str:
    """The name of shard `index` (0-based) of `count` shards of `split`."""
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_glob(split: str = "*") -> str:
    """A glob pattern matching every complete shard of `split` (of any split by default)."""
    return f"{split}-*-of-*{SHARD_SUFFIX}"


def parse_shard_name(name: str, split: str) -> tuple[int, int] | None:
    """(index, count) of a complete shard of `split` named `name`, or None for any other file."""
    match = re.fullmatch(rf"{re.escape(split)}-(\d+)-of-(\d+){re.escape(SHARD_SUFFIX)}", name)
    return (int(match.group(1)), int(match.group(2))) if match else None
