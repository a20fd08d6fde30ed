"""Preparation as a Beam pipeline writes the local runner's shards and manifest, byte for byte."""
import os
import shutil
import subprocess
import sys

import pytest

from avd_tf.datasets import DatasetSplits, load_dataset
from avd_tf.records import beam_pipeline, shards
from avd_tf.records.convert import ConvertOptions
from avd_tf.records.prepare import prepare as local_prepare

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
