"""OpenCV decoding and TV-L1 flow on real video files."""
import cv2
import numpy as np
import pytest

from avd_tf.video import decode, flow
from conftest import textured_frames, write_video


def test_decode_round_trip_and_resize(tmp_path):
    frames = textured_frames(6, 40, 60, seed=1)
    path = tmp_path / "v.avi"
    write_video(path, frames)
    video = decode.read_video(str(path))
    assert video.shape == (6, 40, 60, 3)
    source = np.stack(frames).astype(int)
    error = np.abs(video - source).mean()
    swapped = np.abs(video[..., ::-1] - source).mean()
    # MJPG is lossy (chroma subsampling on a busy texture), but RGB order must hold.
    assert error < 10 and swapped > 2 * error
    assert decode.read_video(str(path), size=20, mode="short_side").shape == (6, 20, 30, 3)
    assert decode.read_video(str(path), size=32, mode="square").shape == (6, 32, 32, 3)


def test_fps_resampling_keeps_every_other_frame(tmp_path):
    path = tmp_path / "v.avi"
    write_video(path, textured_frames(10, 32, 32, seed=2), fps=30)
    assert len(decode.read_video(str(path), fps=15)) == 5


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("not a video"), "cannot open"),
    ],
)
def test_bad_files_name_the_reason(tmp_path, make, reason):
    path = tmp_path / "bad.avi"
    make(path)
    with pytest.raises(decode.VideoError, match=reason) as error:
        decode.read_video(str(path))
    assert str(path) in str(error.value)


def test_tvl1_flow_of_a_translation_has_right_sign_and_size():
    dx, dy = 3, -2
    first, second = textured_frames(2, 64, 64, seed=3, dx=dx, dy=dy)
    # warpAffine moves content by +dx, +dy: flow points the same way.
    estimate = flow.TVL1("cpu").calc(flow.to_gray(first), flow.to_gray(second))
    inner = estimate[12:-12, 12:-12]
    assert np.median(inner[..., 0]) == pytest.approx(dx, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(dy, abs=0.3)


def test_flow_quantisation_follows_tsn_convention():
    values = np.array([[[-25.0, 20.0], [0.0, -20.0], [10.0, 5.0]]], np.float32)
    x, y = flow.quantize(values)
    assert x.tolist() == [[0, 128, 191]]  # -25 is truncated to -20
    assert y.tolist() == [[255, 0, 159]]
    assert flow.dequantize(x)[0, 2] == pytest.approx(10.0, abs=40 / 255)


def test_cuda_flow_refused_clearly_without_cuda():
    if flow.cuda_available():
        pytest.skip("this OpenCV build has CUDA")
    with pytest.raises(RuntimeError, match="CUDA"):
        flow.TVL1("cuda")
