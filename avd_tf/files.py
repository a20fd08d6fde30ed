"""Atomic writes: a file is written under a temporary name in its own folder and renamed.

A reader (or a run resumed after a kill) therefore sees the old file or the
new one, never half of one: every stage marks its work finished with such a
file (manifest.json, metrics.json, stream.json, a protocol stage's marker).
"""
from __future__ import annotations

import json
import os

TMP_SUFFIX = ".tmp"


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` to `<path>.tmp`, syncs it to disk and renames it to `path`."""
    tmp = path + TMP_SUFFIX
    try:
        f = open(tmp, "w", encoding="utf-8")
    except OSError as error:
        # The error names the file asked for, not its temporary name.
        raise OSError(error.errno, error.strerror, path) from None
    with f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomically(path: str, value, *, sort_keys: bool = True) -> None:
    """`value` as JSON (indent 1), written by `write_text_atomically`."""
    write_text_atomically(path, json.dumps(value, indent=1, sort_keys=sort_keys))


def keras_temporary(path: str) -> str:
    """Where the `.keras` file `path` is written before its rename (Keras requires the suffix)."""
    return os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")


def save_keras_atomically(model, path: str) -> None:
    """`model.save(path)` through `keras_temporary(path)`."""
    tmp = keras_temporary(path)
    model.save(tmp)
    os.replace(tmp, path)
