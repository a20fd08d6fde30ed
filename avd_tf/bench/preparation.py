"""Preparation throughput: decoding + JPEG, and TV-L1 flow with 1..N processes."""
from __future__ import annotations

import multiprocessing
import time

import cv2
import numpy as np

from avd_tf.records.convert import _jpeg
from avd_tf.video import decode, flow, synthetic


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


def _tvl1_worker(gray: list[np.ndarray]) -> int:
    cv2.setNumThreads(1)
    estimator = flow.TVL1("cpu")
    for a, b in zip(gray[:-1], gray[1:]):
        estimator.calc(a, b)
    return len(gray) - 1


def tvl1_pairs_per_s(size: int, workers: int, pairs_per_worker: int = 8) -> float:
    """Frame pairs/s of CPU TV-L1 at size x size, one OpenCV thread per process.

    Every worker gets the same frames, rendered before the clock starts, so
    the timed work is TV-L1 alone and the same for any number of workers.
    """
    if workers < 1 or pairs_per_worker < 1:
        raise ValueError(
            f"tvl1_pairs_per_s: workers and pairs_per_worker must be >= 1, "
            f"got {workers} and {pairs_per_worker}"
        )
    gray = [flow.to_gray(f) for f in _clip(size, pairs_per_worker + 1)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_tvl1_worker, [gray[:2]] * workers, chunksize=1)  # start-up and warm-up
        start = time.perf_counter()
        done = sum(pool.map(_tvl1_worker, [gray] * workers, chunksize=1))
    return done / (time.perf_counter() - start)
