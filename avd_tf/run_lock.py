"""One run at a time per output folder: avd-prepare's output_dir, avd-train's and avd-finetune's model_dir.

The lock is `fcntl.flock` on `<folder>/.run.lock`, so the kernel releases it
when its process dies however it dies (SIGKILL included) and a stale lock
cannot block a new run. The file also holds who took the lock (program, pid,
host): a run refused names the run that holds the folder, and a run that
finds the record of a run that died without releasing says it takes over.
Releasing deletes the file; a run that opened the file just before must then
try again, since its lock would be on a deleted file (the inode check).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Callable, Iterator

LOCK_FILE = ".run.lock"


class RunLockedError(RuntimeError):
    """Another live run holds the folder's lock."""


def lock_path(folder: str) -> str:
    return os.path.join(folder, LOCK_FILE)


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        holder = json.loads(data)
    except ValueError:  # empty: taken a moment ago and not yet written
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another run"
    return f"{holder.get('program', 'a run')} (pid {holder['pid']} on {holder.get('host', '?')})"


def _acquire(path: str) -> tuple[int, dict]:
    """Opens and locks `path`; returns the descriptor and the record it held before."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{os.path.dirname(path)}: {_describe(holder)} is using this folder; wait for "
                f"it to end or use another folder") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _read_holder(fd)
        os.close(fd)  # the holder released (deleted) the file between our open and flock


@contextlib.contextmanager
def run_lock(folder: str, program: str, *,
             log: Callable[[str], None] = print) -> Iterator[str]:
    """Holds `folder`'s run lock for the block (creating `folder`); yields the lock file's path.

    Raises RunLockedError naming the program, pid and host of a live run
    that holds it.
    """
    os.makedirs(folder, exist_ok=True)
    path = lock_path(folder)
    fd, previous = _acquire(path)
    try:
        if "pid" in previous:
            log(f"{program}: {path}: taking over the lock of {_describe(previous)}, "
                "which ended without releasing it")
        record = {"program": program, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield path
    finally:
        # Deleted before unlocking, so no run ever sees this run's record unlocked.
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)
