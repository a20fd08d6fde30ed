"""Preparation throughput: decoding + JPEG, and TV-L1 flow with 1..N processes."""
from __future__ import annotations

import multiprocessing
import time

import cv2
import numpy as np

from avd_tf.records.convert import _jpeg
from avd_tf.video import decode, flow, synthetic

# Spawning a worker imports NumPy and OpenCV: seconds on a loaded machine.
START_TIMEOUT_S = 120


def _clip(size: int, frames: int, seed: int = 0) -> np.ndarray:
    return synthetic.render_video(synthetic.motion_classes()[0], seed, frames=frames, size=size)


def decode_jpeg_frames_per_s(path: str, size: int, repeats: int = 3) -> float:
    """Frames/s of OpenCV decode + resize + JPEG encode of one video, single thread."""
    cv2.setNumThreads(1)
    count, start = 0, time.perf_counter()
    for _ in range(repeats):
        capture, header = decode.open_video(path)
        for rgb in decode.iter_frames(capture, header, size, "short_side"):
            _jpeg(rgb, 90, path)
            count += 1
        capture.release()
    return count / (time.perf_counter() - start)


def _tvl1_worker(gray: list[np.ndarray], repeats: int, barrier, results) -> None:
    cv2.setNumThreads(1)
    estimator = flow.TVL1("cpu")
    estimator.calc(gray[0], gray[1])  # first-call costs (allocation, code paths) off the clock
    for _ in range(repeats):
        barrier.wait()
        for a, b in zip(gray[:-1], gray[1:]):
            estimator.calc(a, b)
        results.put(len(gray) - 1)


def tvl1_pairs_per_s(size: int, workers: int, pairs_per_worker: int = 8, repeats: int = 3) -> float:
    """Frame pairs/s of CPU TV-L1 at size x size, one OpenCV thread per process: best of `repeats`.

    Every worker gets the same frames, rendered before the clock starts, so
    the timed work is TV-L1 alone and the same for any number of workers.
    Each repeat starts the clock when every worker has started, warmed up
    and reached a barrier: with a pool, a worker still starting could leave
    its share to the others and the figure would measure start-up, not
    scaling.
    """
    if workers < 1 or pairs_per_worker < 1 or repeats < 1:
        raise ValueError(
            f"tvl1_pairs_per_s: workers, pairs_per_worker and repeats must be >= 1, "
            f"got {workers}, {pairs_per_worker} and {repeats}"
        )
    gray = [flow.to_gray(f) for f in _clip(size, pairs_per_worker + 1)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers + 1), context.Queue()
    processes = [context.Process(target=_tvl1_worker, args=(gray, repeats, barrier, results),
                                 daemon=True) for _ in range(workers)]
    for process in processes:
        process.start()
    rates = []
    try:
        for _ in range(repeats):
            barrier.wait(timeout=START_TIMEOUT_S)
            start = time.perf_counter()
            done = sum(results.get(timeout=START_TIMEOUT_S + 60 * pairs_per_worker)
                       for _ in processes)
            rates.append(done / (time.perf_counter() - start))
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return max(rates)
