"""One video file -> JPEG frames and quantised TV-L1 flow, ready for a record.

Runs in preparation worker processes, so it imports OpenCV and NumPy only.
It never raises for bad input: every outcome is a `VideoResult`, either with
the encoded video and notes on anything odd, or with the reason it failed.
"""
from __future__ import annotations

import dataclasses
import traceback

import cv2
import numpy as np

from avd_tf.datasets.base import VideoEntry
from avd_tf.video import decode, flow


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """How videos are turned into records (recorded in the manifest)."""

    size: int = 128
    resize: str = "short_side"
    fps: float = 0.0
    flow: str = "tvl1"
    flow_device: str = "auto"
    jpeg_quality: int = 90
    clip_frames: int = 16


@dataclasses.dataclass
class VideoResult:
    entry: VideoEntry
    path: str
    frames: list[bytes] = dataclasses.field(default_factory=list)
    flow_x: list[bytes] = dataclasses.field(default_factory=list)
    flow_y: list[bytes] = dataclasses.field(default_factory=list)
    height: int = 0
    width: int = 0
    fps: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure


def _jpeg(image: np.ndarray, quality: int, path: str) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise decode.VideoError(path, "JPEG encoding failed")
    return buffer.tobytes()


class Converter:
    """Holds the per-process TV-L1 estimator so it is created once, not per video."""

    def __init__(self, options: ConvertOptions):
        self.options = options
        self._tvl1 = flow.TVL1(options.flow_device) if options.flow == "tvl1" else None

    def __call__(self, entry: VideoEntry, path: str | None) -> VideoResult:
        result = VideoResult(entry=entry, path=path or entry.path)
        if entry.label < 0:
            result.failure = f"label {entry.label_name!r} is not in the class list"
        elif path is None:
            result.failure = "file not found"
        else:
            try:
                self._convert(path, result)
            except decode.VideoError as error:
                result.failure = error.reason
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the run
                last = traceback.extract_tb(error.__traceback__)[-1]
                result.failure = f"{type(error).__name__}: {error} (at {last.name}:{last.lineno})"
        if result.failure:
            result.frames, result.flow_x, result.flow_y = [], [], []
        return result

    def _convert(self, path: str, result: VideoResult) -> None:
        options = self.options
        capture, header = decode.open_video(path)
        result.fps = options.fps or header.fps
        grey_source = True
        previous = None
        try:
            for rgb in decode.iter_frames(capture, header, options.size, options.resize, options.fps):
                grey_source = grey_source and decode.is_grayscale(rgb)
                result.frames.append(_jpeg(rgb, options.jpeg_quality, path))
                if self._tvl1 is not None:
                    gray = flow.to_gray(rgb)
                    if previous is not None:
                        x, y = flow.quantize(self._tvl1.calc(previous, gray))
                        result.flow_x.append(_jpeg(x, options.jpeg_quality, path))
                        result.flow_y.append(_jpeg(y, options.jpeg_quality, path))
                    previous = gray
                result.height, result.width = rgb.shape[:2]
        finally:
            capture.release()
        decoded = len(result.frames)
        if decoded == 0:
            raise decode.VideoError(path, "no decodable frame (empty, truncated or corrupt stream)")
        if not header.frame_count:
            result.notes.append("header has no frame count")
        elif not options.fps and decoded != header.frame_count:
            # Truncated files and lying headers keep every frame that decodes.
            result.notes.append(f"header claims {header.frame_count} frames, decoded {decoded}")
        if not header.fps:
            result.notes.append("header has no frame rate")
        if grey_source:
            result.notes.append("grayscale source, stored as RGB")
        if decoded < options.clip_frames:
            result.notes.append(
                f"{decoded} frames, shorter than a clip of {options.clip_frames}: looped at sampling time"
            )
        if self._tvl1 is not None and decoded == 1:
            # One frame has no motion; a zero-flow frame keeps the flow stream usable.
            zero = flow.quantize(np.zeros((result.height, result.width, 2), np.float32))
            result.flow_x.append(_jpeg(zero[0], options.jpeg_quality, path))
            result.flow_y.append(_jpeg(zero[1], options.jpeg_quality, path))
            result.notes.append("single frame: stored one zero-flow frame")



@dataclasses.dataclass
class Task:
    """One video for a worker: which shard it belongs to and where it is on disk."""

    split: str
    shard: str
    entry: VideoEntry
    path: str | None


_converter: Converter | None = None


def init_worker(options: ConvertOptions) -> None:
    """Process-pool initialiser; lives here so that workers never import TensorFlow."""
    import cv2

    # One OpenCV thread per process: the processes are the parallelism.
    cv2.setNumThreads(1)
    global _converter
    _converter = Converter(options)


def convert_task(task: Task) -> tuple[Task, VideoResult]:
    return task, _converter(task.entry, task.path)
