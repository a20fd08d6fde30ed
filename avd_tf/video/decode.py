"""Video decoding with OpenCV: frames as RGB uint8, with honest header checks.

This module must not import TensorFlow: preparation workers import it in
fresh processes, and keeping them light makes process start-up cheap.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import cv2
import numpy as np

RESIZE_MODES = ("short_side", "square", "none")


class VideoError(Exception):
    """A video that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass
class VideoHeader:
    """What the container claims; `frame_count` is 0 when it claims nothing."""

    fps: float
    frame_count: int
    width: int
    height: int


def open_video(path: str) -> tuple[cv2.VideoCapture, VideoHeader]:
    """Opens `path` for decoding or raises VideoError saying why it cannot."""
    if not os.path.exists(path):
        raise VideoError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "empty file (0 bytes)")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise VideoError(path, "OpenCV cannot open it (not a video, or a codec it lacks)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    header = VideoHeader(
        fps=float(fps) if np.isfinite(fps) and fps > 0 else 0.0,
        # Some containers report negative or absurd counts when they have none.
        frame_count=int(count) if np.isfinite(count) and 0 < count < 2**31 else 0,
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    return capture, header


def resized_shape(height: int, width: int, size: int, mode: str) -> tuple[int, int]:
    """(height, width) after resizing: the short side to `size`, a square, or as is."""
    if mode == "none" or not size:
        return height, width
    if mode == "square":
        return size, size
    if mode == "short_side":
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def iter_frames(
    capture: cv2.VideoCapture,
    header: VideoHeader,
    size: int = 0,
    mode: str = "short_side",
    fps: float = 0.0,
) -> Iterator[np.ndarray]:
    """Yields RGB uint8 frames, resized, optionally resampled to `fps`.

    Resampling keeps the first source frame at or after each target time, so
    it never invents frames; with `fps` = 0 (or an unknown source rate) every
    frame is kept.
    """
    step = header.fps / fps if fps and header.fps else 1.0
    next_keep = 0.0
    index = 0
    target = None
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        if index + 1e-6 >= next_keep:
            next_keep += step
            if target is None:
                target = resized_shape(frame.shape[0], frame.shape[1], size, mode)
            if target != frame.shape[:2]:
                # INTER_AREA is the right filter for shrinking, which is the usual case.
                interp = cv2.INTER_AREA if target[0] < frame.shape[0] else cv2.INTER_LINEAR
                frame = cv2.resize(frame, (target[1], target[0]), interpolation=interp)
            yield _to_rgb(frame)
        index += 1


def is_grayscale(rgb: np.ndarray) -> bool:
    """True when all three channels carry the same values (a grey source)."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def read_video(path: str, size: int = 0, mode: str = "short_side", fps: float = 0.0) -> np.ndarray:
    """Decodes a whole video into uint8[N, H, W, 3] RGB; raises VideoError if no frame."""
    capture, header = open_video(path)
    try:
        frames = list(iter_frames(capture, header, size, mode, fps))
    finally:
        capture.release()
    if not frames:
        raise VideoError(path, "no decodable frame")
    return np.stack(frames)
