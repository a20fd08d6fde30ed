"""Damaged shards: manifest.json's size and sha256 per shard, avd-prepare redoing a
damaged shard, and avd-train / avd-finetune / avd-distill naming it.

One folder of six 12-frame 32x32 videos is prepared (without flow) through the
installed avd-prepare; each test damages a copy of it.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import write_motion_videos

CLASSES = ["TranslateLeft", "TranslateRight"]
TIMEOUT = 300
SHARD = "train-00001-of-00002.tfrecord"


def run(program, *args):
    return subprocess.run([program, *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT)


def prepare_args(videos, out):
    return ["--dataset", "folder", "--video_dir", videos, "--output_dir", out, "--flow", "none",
            "--size", 32, "--videos_per_shard", 2, "--workers", 1, "--noprogress"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(video folder, prepared folder) made by avd-prepare."""
    root = tmp_path_factory.mktemp("integrity")
    write_motion_videos(root / "videos", CLASSES, 12, 32)
    result = run("avd-prepare", *prepare_args(root / "videos", root / "prepared"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "videos", root / "prepared"


@pytest.fixture
def copy(prepared, tmp_path):
    """A copy of the prepared folder that a test may damage."""
    return shutil.copytree(prepared[1], tmp_path / "prepared")


def truncate(path, size=1000):
    os.truncate(path, os.path.getsize(path) - size)


def flip_byte(path):
    """Flips one byte in the middle of the file: same size, a record's checksum fails."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_manifest_records_each_shard_size_and_sha256(prepared):
    out = prepared[1]
    files = json.loads((out / "manifest.json").read_text())["shard_files"]
    names = sorted(n for n in os.listdir(out) if n.endswith(".tfrecord"))
    assert sorted(files) == names and len(names) == 3
    for name in names:
        data = (out / name).read_bytes()
        assert files[name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.slow
def test_prepare_again_redoes_truncated_and_corrupted_shards(prepared, copy):
    videos, original = prepared
    truncate(copy / SHARD)
    flip_byte(copy / "test-00000-of-00001.tfrecord")
    result = run("avd-prepare", *prepare_args(videos, copy))
    assert result.returncode == 0, result.stderr[-3000:]
    size = os.path.getsize(original / SHARD)
    assert f"{copy / SHARD}: damaged ({size - 1000} bytes, {size} when it was written); " \
           "preparing this shard again" in result.stdout.splitlines()
    assert f"{copy / 'test-00000-of-00001.tfrecord'}: damaged (sha256 differs from the one " \
           "recorded when it was written); preparing this shard again" in result.stdout.splitlines()
    assert "resuming: 1 of 3 shards already complete" in result.stdout
    for name in os.listdir(original):
        if os.path.isfile(original / name):
            assert (copy / name).read_bytes() == (original / name).read_bytes(), name


@pytest.mark.slow
def test_train_names_a_corrupted_shard(copy, tmp_path):
    flip_byte(copy / SHARD)
    result = run("avd-train", "--data_dir", copy, "--model_dir", tmp_path / "avd",
                 "--stream", "rgb", "--preset", "small", "--num_frames", 8, "--image_size", 32,
                 "--epochs", 1, "--steps_per_epoch", 2, "--batch_size", 4,
                 "--encoder_filters", "4,4,4,4", "--decoder_filters", "4,4,4,4",
                 "--progress=false")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert re.fullmatch(
        rf"avd-train: {re.escape(str(copy / SHARD))}: corrupted TFRecord \(corrupted record at "
        rf"\d+\); re-run avd-prepare on {re.escape(str(copy))} to rebuild it", last_line(result))


@pytest.mark.slow
def test_finetune_names_a_corrupted_shard(copy, tmp_path):
    flip_byte(copy / SHARD)
    result = run("avd-finetune", "--data_dir", copy, "--model_dir", tmp_path / "frame",
                 "--stream", "frame", "--backbone", "alexnet", "--weights", "none",
                 "--input_size", 64, "--epochs", 1, "--batch_size", 4, "--progress=false")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert last_line(result).startswith(
        f"avd-finetune: {copy / SHARD}: corrupted TFRecord (corrupted record at ")


@pytest.mark.parametrize("program", ["avd-train", "avd-finetune", "avd-distill"])
@pytest.mark.slow
def test_a_truncated_shard_is_named_before_anything_runs(copy, tmp_path, program):
    """The sizes are checked at the start, before any model is read or built."""
    size = os.path.getsize(copy / SHARD)
    truncate(copy / SHARD)
    extra = {"avd-train": [], "avd-finetune": ["--stream", "frame"],
             "avd-distill": ["--output_dir", tmp_path / "out"]}[program]
    result = run(program, "--data_dir", copy, "--model_dir", tmp_path / "no_model", *extra)
    assert result.returncode != 0
    assert last_line(result) == (
        f"{program}: {copy / SHARD}: corrupted TFRecord ({size - 1000} bytes, {size} when "
        f"avd-prepare wrote it); re-run avd-prepare on {copy} to rebuild it")


def test_folders_prepared_without_the_record_are_not_checked(copy):
    """Folders prepared before the record existed: neither readers nor avd-prepare compare."""
    from avd_tf.inputs.shards import check_shard_sizes
    from avd_tf.records import shards

    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["shard_files"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    summary = copy / ".progress" / SHARD.replace(".tfrecord", ".json")
    summary.write_text(json.dumps({k: v for k, v in json.loads(summary.read_text()).items()
                                   if k != shards.FILE_KEY}))
    truncate(copy / SHARD)
    check_shard_sizes(str(copy))
    assert shards.damage(str(copy), SHARD) is None
    assert shards.damage(str(copy), "test-00000-of-00001.tfrecord") is None
    flip_byte(copy / "test-00000-of-00001.tfrecord")
    assert "sha256" in shards.damage(str(copy), "test-00000-of-00001.tfrecord")


@pytest.mark.slow
def test_finetune_names_a_corrupted_stream_cache_shard(copy, tmp_path):
    """A cached image stream is not avd-prepare's: its remedy is to compute it again."""
    from avd_tf.classify.stream_cache import ensure_stream

    cache = ensure_stream(str(copy), "frame", progress=False)
    shard = os.path.join(cache, "train-00000-of-00001.tfrecord")
    flip_byte(Path(shard))
    result = run("avd-finetune", "--data_dir", copy, "--model_dir", tmp_path / "frame",
                 "--stream", "frame", "--backbone", "alexnet", "--weights", "none",
                 "--input_size", 64, "--epochs", 1, "--batch_size", 4, "--progress=false")
    assert result.returncode != 0
    assert re.fullmatch(rf"avd-finetune: {re.escape(shard)}: corrupted TFRecord \(corrupted "
                        rf"record at \d+\); delete {re.escape(cache)} to compute it again",
                        last_line(result))
