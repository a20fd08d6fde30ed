"""Preparation worker processes where a crash or a hang costs one video, not the run.

`multiprocessing.Pool` loses the task of a worker that dies (its `imap`
then waits forever), `concurrent.futures.ProcessPoolExecutor` breaks as a
whole (`BrokenProcessPool`), and neither stops a task that hangs. Here each
worker is a spawned process with its own pipe and one video at a time: a
worker that dies inside a video (a decoder crash), or is still on it after
`timeout` seconds and is killed, turns that video into a failed
`VideoResult` with the reason, and a fresh worker takes its place.

Imports only the standard library and convert.py: workers never import TensorFlow.
"""
from __future__ import annotations

import collections
import multiprocessing
import signal
import time
from multiprocessing.connection import wait
from typing import Iterator

from avd_tf.records.convert import ConvertOptions, Task, VideoResult, convert_task, init_worker


# Tasks a worker may take past the one the caller waits for, per worker:
# enough to keep workers busy beside a long video, few enough to bound memory.
AHEAD_PER_WORKER = 4


class WorkerError(Exception):
    """Raised when a worker process cannot start (e.g. the flow device is unavailable)."""


def _serve(conn, options: ConvertOptions) -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        init_worker(options)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which stops the run
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
            conn.send(("done", convert_task(task)[1]))
        except (EOFError, BrokenPipeError):  # the parent is gone
            return


def death_reason(exitcode: int) -> str:
    """'worker died: signal 9 (SIGKILL)' for a process's exit code."""
    if exitcode < 0:
        try:
            name = f" ({signal.Signals(-exitcode).name})"
        except ValueError:
            name = ""
        return f"worker died: signal {-exitcode}{name}"
    return f"worker died: exit code {exitcode}"


class _Worker:
    def __init__(self, context, options: ConvertOptions):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, options), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.index: int | None = None  # the task it holds
        self.since = 0.0

    def give(self, index: int, task: Task) -> bool:
        try:
            self.conn.send(task)
        except (BrokenPipeError, OSError):  # died while idle: the task stays pending
            return False
        self.index, self.since = index, time.monotonic()
        return True

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _failed(task: Task, reason: str) -> VideoResult:
    return VideoResult(entry=task.entry, path=task.path or task.entry.path, failure=reason)


class Results:
    """What `imap` returns: iterate it for the (task, result) pairs in task order.

    `held` is the number of finished results waiting for an earlier task to
    finish: the results in memory beyond the one being yielded.
    """

    def __init__(self, tasks: list[Task], options: ConvertOptions, processes: int,
                 timeout: float | None, ahead: int):
        self._done: dict[int, VideoResult] = {}
        self._pairs = self._run(tasks, options, processes, timeout, ahead)

    @property
    def held(self) -> int:
        return len(self._done)

    def __iter__(self) -> Iterator[tuple[Task, VideoResult]]:
        return self._pairs

    def _run(self, tasks, options, processes, timeout, ahead):
        if not tasks:
            return
        context = multiprocessing.get_context("spawn")  # not fork: the caller may run TensorFlow's threads
        pending = collections.deque(range(len(tasks)))
        done = self._done
        workers = [_Worker(context, options) for _ in range(max(1, min(processes, len(tasks))))]
        following = 0
        try:
            while following < len(tasks):
                if following in done:
                    yield tasks[following], done.pop(following)
                    following += 1
                    continue
                for worker in workers:
                    # pending[0] is the lowest task not given out yet.
                    if (worker.ready and worker.index is None and pending
                            and pending[0] < following + ahead):
                        index = pending.popleft()
                        if not worker.give(index, tasks[index]):
                            pending.appendleft(index)
                busy = [w.since + timeout for w in workers if w.index is not None] if timeout else []
                wait([w.conn for w in workers] + [w.process.sentinel for w in workers],
                     max(0.0, min(busy) - time.monotonic()) if busy else None)
                for i, worker in enumerate(workers):
                    reason = _poll(worker, done, timeout)
                    if reason is None:
                        continue
                    if not worker.ready:
                        raise WorkerError(f"a preparation worker failed to start: {reason}")
                    if worker.index is not None:
                        done[worker.index] = _failed(tasks[worker.index], reason)
                    workers[i] = _Worker(context, options)
        finally:
            for worker in workers:
                worker.stop()


def imap(tasks: list[Task], options: ConvertOptions, processes: int,
         timeout: float | None = None, ahead: int | None = None) -> Results:
    """Converts `tasks` in `processes` worker processes; yields (task, result) in task order.

    A video whose worker dies, or that takes longer than `timeout` seconds
    (None: no limit), yields a failed result saying so ("worker died:
    signal 11 (SIGSEGV)", "timed out after 600 s"). Raises WorkerError if a
    worker fails before it could take a video.

    Workers take tasks at most `ahead` (default AHEAD_PER_WORKER per
    process) past the one the caller waits for, so while one long video
    holds up the order, fewer than `ahead` finished videos, with all their
    JPEGs, wait in memory, however many follow.
    """
    if ahead is not None and ahead < 1:
        raise ValueError(f"ahead must be >= 1, got {ahead}")
    return Results(tasks, options, processes, timeout, ahead or AHEAD_PER_WORKER * max(1, processes))


def _poll(worker: _Worker, done: dict, timeout: float | None) -> str | None:
    """Takes in what `worker` sent; returns why it is gone (it is then stopped), or None."""
    while worker.conn.poll():
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):  # died mid-message; the exit code below says how
            break
        if kind == "error":
            worker.stop()
            return value
        if kind == "ready":
            worker.ready = True
        else:
            done[worker.index] = value
            worker.index = None
    if not worker.process.is_alive():
        worker.stop()
        return death_reason(worker.process.exitcode)
    if worker.index is not None and timeout and time.monotonic() - worker.since >= timeout:
        worker.stop()
        return f"timed out after {timeout:g} s"
    return None
