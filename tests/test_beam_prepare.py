"""Preparation as a Beam pipeline writes the local runner's shards and manifest, byte for byte."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from avd_tf.datasets import DatasetSplits, load_dataset
from avd_tf.records import beam_pipeline, shards
from avd_tf.records.convert import ConvertOptions
from avd_tf.records.prepare import prepare as local_prepare
from conftest import textured_frames, write_video

OPTIONS = ConvertOptions(size=24)
SETTINGS = dict(dataset_name="ucf101", videos_per_shard=2)


@pytest.fixture
def listed(ucf_like):
    """ucf_like with a junk file and a missing file listed in the training split."""
    (ucf_like / "videos" / "MoveRight" / "v_MoveRight_g09_c01.avi").write_text("not a video")
    with open(ucf_like / "splits" / "trainlist01.txt", "a") as f:
        f.write("MoveRight/v_MoveRight_g09_c01.avi 2\r\nMoveLeft/v_MoveLeft_g09_c01.avi 1\r\n")
    return ucf_like


def load(root):
    return load_dataset("ucf101", video_dir=str(root / "videos"), split_dir=str(root / "splits"))


def files(folder):
    """Every file a preparation left, shard summaries and settings included."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.mark.slow
def test_direct_runner_writes_the_local_runners_bytes(listed, tmp_path):
    dataset = load(listed)
    # A split without videos still gets its (empty) shard.
    dataset = DatasetSplits(dataset.classes, {**dataset.splits, "val": []})
    videos = str(listed / "videos")
    local_prepare(dataset, videos, str(tmp_path / "local"), OPTIONS, progress=False, **SETTINGS)
    logs = []
    manifest = beam_pipeline.prepare(dataset, videos, str(tmp_path / "beam"), OPTIONS, log=logs.append, **SETTINGS)

    reference, written = files(tmp_path / "local"), files(tmp_path / "beam")
    assert sorted(written) == sorted(reference)
    for name in reference:
        assert written[name] == reference[name], name
    assert "val-00000-of-00001.tfrecord" in written and manifest["splits"]["val"]["listed"] == 0
    assert manifest["splits"]["train"]["videos"] == 6 and manifest["splits"]["test"]["videos"] == 2
    reasons = {(f["split"], f["id"]): f["reason"] for f in manifest["failures"]}
    assert set(reasons) == {("train", "v_MoveRight_g09_c01"), ("train", "v_MoveLeft_g09_c01")}
    assert "cannot open" in reasons["train", "v_MoveRight_g09_c01"]
    assert "not found" in reasons["train", "v_MoveLeft_g09_c01"]
    assert sum("FAILED" in line for line in logs) == 2

    # Resuming the local runner's interrupted run: a lost shard and a partial file.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "local", resumed)
    os.remove(resumed / "train-00001-of-00004.tfrecord")
    (resumed / ("train-00002-of-00004.tfrecord" + shards.TMP_SUFFIX)).write_bytes(b"partial")
    logs.clear()
    beam_pipeline.prepare(dataset, videos, str(resumed), OPTIONS, log=logs.append, **SETTINGS)
    assert any("resuming: 5 of 6 shards" in line for line in logs)
    assert any(line.startswith("beam: 2 videos in 1 shards") for line in logs)
    assert files(resumed) == reference


@pytest.mark.slow
def test_multi_processing_workers_write_the_local_runners_bytes(listed, tmp_path):
    dataset = load(listed)
    videos = str(listed / "videos")
    local_prepare(dataset, videos, str(tmp_path / "local"), OPTIONS, progress=False, **SETTINGS)
    beam_pipeline.prepare(
        dataset, videos, str(tmp_path / "beam"), OPTIONS, log=lambda line: None,
        pipeline_args=["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        **SETTINGS,
    )
    assert files(tmp_path / "beam") == files(tmp_path / "local")


@pytest.mark.slow
def test_app_runs_the_beam_pipeline(listed, tmp_path):
    out = tmp_path / "beam"
    result = subprocess.run(
        [sys.executable, "-m", "avd_tf.apps.prepare", "--noprogress", "--runner", "beam",
         "--beam_options", "--runner=DirectRunner --direct_num_workers=1",
         "--dataset", "ucf101", "--video_dir", str(listed / "videos"), "--split_dir", str(listed / "splits"),
         "--output_dir", str(out), "--size", "24", "--videos_per_shard", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train: 6 of 8 videos prepared" in result.stdout
    assert result.stdout.count("FAILED") == 2
    local_prepare(load(listed), str(listed / "videos"), str(tmp_path / "local"), OPTIONS, progress=False, **SETTINGS)
    assert files(out) == files(tmp_path / "local")


PEAK_RSS = """
import json, resource, sys
from avd_tf.datasets import load_dataset
from avd_tf.records import beam_pipeline
from avd_tf.records.convert import ConvertOptions

videos, out = sys.argv[1:]
beam_pipeline.prepare(load_dataset("folder", video_dir=videos), videos, out,
                      ConvertOptions(size=128, flow="none"), dataset_name="folder",
                      videos_per_shard=10, log=lambda line: None)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
"""


@pytest.mark.slow  # ~130 videos written and prepared twice, in two fresh processes: ~60 s
def test_direct_runner_memory_stays_flat_as_the_videos_grow(tmp_path):
    """Peak RSS of the in-process DirectRunner for 20 and then 100 videos of 48 frames at
    128 px: the five times larger run adds far less memory than its JPEGs (grouping the
    converted videos by shard held them all, several times over)."""
    runs = {}
    for count in (20, 100):
        videos = tmp_path / f"videos{count}"
        for i in range(count):
            write_video(videos / f"c{i % 4}" / f"v{i:03d}.avi",
                        textured_frames(48, 128, 128, seed=i, dx=1 + i % 3))
        out = tmp_path / f"prepared{count}"
        result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(videos), str(out)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        shard_bytes = sum(path.stat().st_size for path in out.glob("*.tfrecord"))
        runs[count] = (json.loads(result.stdout.strip().splitlines()[-1]), shard_bytes)
    (small_peak, small_bytes), (large_peak, large_bytes) = runs[20], runs[100]
    print(f"DirectRunner peak RSS: 20 videos {small_peak / 2**20:.0f} MB "
          f"({small_bytes / 2**20:.1f} MB of shards), 100 videos {large_peak / 2**20:.0f} MB "
          f"({large_bytes / 2**20:.1f} MB of shards)")
    assert large_bytes > 4 * small_bytes
    assert large_peak - small_peak < 0.25 * (large_bytes - small_bytes)
