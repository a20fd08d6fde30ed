"""Logs a person can read: programs run with their output in a file (a batch job, `> log 2>&1`)
write plain lines, one per epoch or per few percent, and redraw bars only on a terminal."""
import os
import re
import subprocess
import sys

import pytest

from avd_tf import terminal
from conftest import prepared_motion_videos, write_motion_videos

CLASSES = ["TranslateLeft", "TranslateRight"]
# The final JSON summaries are ~550 characters; a bar redrawn into a file grows without end.
LONGEST_LINE = 1000


def logged(tmp_path, args):
    """Runs a program with stdout and stderr in one file, as `program > log 2>&1` does; returns the log."""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        result = subprocess.run([sys.executable, "-m", *map(str, args)], stdout=f, stderr=subprocess.STDOUT,
                                timeout=300)
    text = log.read_text()
    assert result.returncode == 0, text
    return text


def assert_plain(text):
    assert "\r" not in text
    assert "\x1b" not in text
    longest = max(text.splitlines(), key=len)
    assert len(longest) <= LONGEST_LINE, longest


@pytest.mark.slow  # a prepared set and a two-epoch avd-train run: ~30 s on 2 busy cores
def test_training_writes_one_plain_line_per_epoch(tmp_path):
    data_dir = prepared_motion_videos(tmp_path, CLASSES, 12, 32)
    text = logged(tmp_path, [
        "avd_tf.apps.train", "--data_dir", data_dir, "--model_dir", tmp_path / "avd", "--stream", "rgb",
        "--preset", "small", "--num_frames", "8", "--image_size", "32", "--epochs", "2",
        "--steps_per_epoch", "2", "--validation_steps", "1", "--batch_size", "4", "--encoder_filters", "4,4,4,4",
        "--decoder_filters", "4,4,4,4", "--seed", "3", "--summary_clips", "2"])
    assert_plain(text)
    assert re.findall(r"^Epoch (\d)/2$", text, re.M) == ["1", "2"]
    assert len(re.findall(r"^2/2 - \d+s - .*loss", text, re.M)) == 2


@pytest.mark.slow
def test_preparation_writes_a_line_every_few_percent(tmp_path):
    write_motion_videos(tmp_path / "videos", CLASSES, 8, 32)
    text = logged(tmp_path, [
        "avd_tf.apps.prepare", "--dataset", "folder", "--video_dir", tmp_path / "videos",
        "--output_dir", tmp_path / "prepared", "--size", "32", "--workers", "2"])
    assert_plain(text)
    lines = re.findall(r"^prepare: (\d+)/6 videos \((\d+)%\), \d+ s", text, re.M)
    assert [int(n) for n, _ in lines] == list(range(1, 7))
    assert lines[-1][1] == "100"


DECISIONS = [sys.executable, "-c", "from avd_tf import terminal; print(terminal.interactive(), "
             "terminal.interactive(False), terminal.keras_verbose(), terminal.keras_verbose(False))"]


def test_bars_only_on_a_terminal_and_never_with_progress_off():
    leader, follower = os.openpty()
    try:
        result = subprocess.run(DECISIONS, stdout=follower, stderr=follower, timeout=60)
        assert result.returncode == 0
        assert os.read(leader, 1000).decode().split() == ["True", "False", "1", "2"]
    finally:
        os.close(leader)
        os.close(follower)
    piped = subprocess.run(DECISIONS, capture_output=True, text=True, timeout=60)
    assert piped.stdout.split() == ["False", "False", "2", "2"]


@pytest.mark.parametrize("total, updates, expected", [
    (100, 100, [f"{n}/100 clips ({n}%)" for n in range(5, 101, 5)]),
    (7, 7, [f"{n}/7 clips ({100 * n / 7:.0f}%)" for n in range(1, 8)]),
    (None, 10, ["1 clips", "2 clips", "4 clips", "8 clips", "10 clips"]),
])
def test_line_progress_logs_every_five_percent_and_the_end(total, updates, expected):
    lines = []
    with terminal.progress_bar(total, desc="distill test", unit="clip", log=lines.append) as bar:
        for _ in range(updates):
            bar.update(1)
    assert [line.split(", ")[0] for line in lines] == [f"distill test: {e}" for e in expected]
