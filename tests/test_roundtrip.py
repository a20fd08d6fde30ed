"""Video file -> avd-prepare records -> tf.data clip gives the frames back."""
import numpy as np
import pytest

from avd_tf.datasets import load_dataset
from avd_tf.inputs import clip_dataset
from avd_tf.records.convert import ConvertOptions
from avd_tf.records.prepare import prepare
from avd_tf.video import decode
from conftest import textured_frames, write_video


def test_video_to_records_to_clip_round_trip(tmp_path):
    root = tmp_path / "videos"
    frames = textured_frames(10, 32, 32, seed=7, dx=1)
    write_video(root / "train" / "a" / "clip.avi", frames)
    write_video(root / "test" / "a" / "other.avi", frames[:4])
    out = tmp_path / "prepared"
    prepare(load_dataset("folder", video_dir=str(root)), str(root), str(out),
            ConvertOptions(size=32, resize="square", jpeg_quality=95), progress=False)

    decoded = decode.read_video(str(root / "train" / "a" / "clip.avi")).astype(np.float32)
    batch = next(iter(clip_dataset(str(out), "train", num_frames=10, size=32, batch_size=1)))
    clip = (batch["clip"][0].numpy() + 1) * 127.5
    assert clip.shape == (10, 32, 32, 3)
    # Only the stored JPEG's error separates the clip from what OpenCV decodes;
    # luma is compared because JPEG's 4:2:0 chroma blurs this busy colour texture.
    luma = lambda x: x @ np.float32([0.299, 0.587, 0.114])
    error = np.abs(luma(clip) - luma(decoded)).mean()
    assert error < 3
    assert np.abs(luma(clip[1:]) - luma(decoded[:-1])).mean() > 3 * error, "frames out of order"
    assert batch["label"].numpy().tolist() == [0]

    flow = next(iter(clip_dataset(str(out), "train", stream="flow", num_frames=9, size=32, batch_size=1)))
    # One pixel per frame to the right, in [-1, 1] units of 20 px.
    assert np.median(flow["clip"][0, :, 8:-8, 8:-8, 0]) * 20 == pytest.approx(1.0, abs=0.25)

    short = next(iter(clip_dataset(str(out), "test", num_frames=8, size=32, batch_size=1)))
    looped = short["clip"][0].numpy()
    np.testing.assert_allclose(looped[4:], looped[:4])  # 4 frames looped to 8
