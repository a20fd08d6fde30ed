"""Shared fixtures: small real videos written with OpenCV."""
from __future__ import annotations

import os
from pathlib import Path

# The kernels the programs run with (avd_tf/apps/__init__.py); read once, at
# TensorFlow's first import, which the tests below trigger.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import cv2
import numpy as np
import pytest

from avd_tf.datasets import load_dataset
from avd_tf.video import synthetic

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# The real split files (UCF101, HMDB51, Kinetics) sit next to the checkout here;
# a checkout elsewhere skips the tests that read them.
needs_real = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"real split files not found at {SHARED_DATA} (the shared data folder next to the repo)",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s (skip with -m 'not slow')")


def write_video(path, frames_rgb, fps=25.0, fourcc="MJPG", color=True):
    """Writes RGB frames (or 2-D grey frames with color=False) with cv2.VideoWriter."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    height, width = frames_rgb[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), isColor=color)
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if color else frame)
    writer.release()


def textured_frames(num_frames, height, width, seed, dx=1, dy=0):
    """A smooth random texture translating by (dx, dy) pixels per frame."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (height // 4 + 8, width // 4 + 8, 3)).astype(np.uint8)
    big = cv2.resize(big, (big.shape[1] * 4, big.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    big = cv2.GaussianBlur(big, (0, 0), 1.5)
    frames = []
    for t in range(num_frames):
        m = np.float32([[1, 0, dx * t], [0, 1, dy * t]])
        frames.append(cv2.warpAffine(big, m, (width, height), borderMode=cv2.BORDER_REFLECT))
    return frames


def write_motion_videos(video_dir, classes, frames, size):
    """Three videos of each demo-generator class in `classes`: two train, one test (folder layout)."""
    for c, name in enumerate(classes):
        for i in range(3):
            split = "test" if i == 2 else "train"
            clip = synthetic.render_video(name, seed=10 * c + i, frames=frames, size=size)
            synthetic.write_video(video_dir / split / name / f"{name}_{i}.avi", clip)


def prepared_motion_videos(root, classes, frames, size) -> str:
    """write_motion_videos in root/videos, prepared with TV-L1 flow into root/prepared."""
    from avd_tf.records.convert import ConvertOptions

    write_motion_videos(root / "videos", classes, frames, size)
    return prepare_folder(root / "videos", root / "prepared", ConvertOptions(size=size, flow="tvl1"))


def prepare_folder(video_dir, out_dir, options) -> str:
    """Prepares the folder dataset in `video_dir` into `out_dir`, two videos a shard; returns it."""
    # Imported here: it loads TensorFlow, which the tests of the lighter modules never need.
    from avd_tf.records.prepare import prepare

    prepare(load_dataset("folder", video_dir=video_dir), str(video_dir), str(out_dir), options,
            dataset_name="folder", videos_per_shard=2, progress=False, log=lambda _: None)
    return str(out_dir)


@pytest.fixture
def ucf_like(tmp_path):
    """A two-class dataset in the UCF101 layout: 3 train and 1 test video per class."""
    root = tmp_path / "ucf"
    classes = ["MoveLeft", "MoveRight"]
    train, test = [], []
    for c, name in enumerate(classes):
        for g in range(1, 5):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            frames = textured_frames(12, 40, 48, seed=10 * c + g, dx=-2 if c == 0 else 2)
            write_video(root / "videos" / rel, frames)
            (test if g == 4 else train).append((rel, c + 1))
    splits = root / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\r\n" for i, n in enumerate(classes)))
    (splits / "trainlist01.txt").write_text("".join(f"{r} {l}\r\n" for r, l in train))
    (splits / "testlist01.txt").write_text("".join(f"{r}\r\n" for r, _ in test))
    return root
