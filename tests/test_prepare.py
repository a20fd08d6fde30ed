"""avd-prepare end to end: shards, manifest, bad input, resume after kill -9, dry run."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

from avd_tf.records import schema
from avd_tf.records.prepare import SHARD_ORDER_SEED, shard_order
from avd_tf.datasets import load_dataset
from conftest import SHARED_DATA, needs_real, textured_frames, write_video

UCF_SPLITS = SHARED_DATA / "ucf101_splits"


def run_prepare(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "avd_tf.apps.prepare", "--noprogress", *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    return result


def records(data_dir, split):
    out = []
    for name in sorted(os.listdir(data_dir)):
        if name.startswith(split + "-") and name.endswith(".tfrecord"):
            for raw in tf.data.TFRecordDataset(os.path.join(data_dir, name)):
                out.append(schema.parse(raw))
    return out


def ucf_args(root, out, *extra):
    return ["--dataset", "ucf101", "--video_dir", root / "videos", "--split_dir", root / "splits",
            "--output_dir", out, *extra]


@pytest.mark.slow
def test_prepare_writes_shards_flow_and_manifest(ucf_like, tmp_path):
    out = tmp_path / "prepared"
    run_prepare(*ucf_args(ucf_like, out, "--size", 32, "--workers", 2, "--videos_per_shard", 2))
    names = sorted(n for n in os.listdir(out) if n.endswith(".tfrecord"))
    assert names == ["test-00000-of-00001.tfrecord", "train-00000-of-00003.tfrecord",
                     "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["MoveLeft", "MoveRight"]
    assert manifest["splits"]["train"]["videos"] == 6 and manifest["splits"]["test"]["videos"] == 2
    assert manifest["splits"]["train"]["videos_per_class"] == [3, 3]
    assert all(v["frames"] == 12 and v["flow_frames"] == 11 for v in manifest["videos"]["train"])
    assert manifest["failures"] == []

    train = records(out, "train")
    # Shards hold the split's videos in `shard_order`, not class by class.
    ids = [r[schema.VIDEO_ID].numpy().decode() for r in train]
    listed = [f"v_{c}_g{g:02d}_c01" for c in ("MoveLeft", "MoveRight") for g in (1, 2, 3)]
    assert ids == shard_order(listed, SHARD_ORDER_SEED) != listed
    assert [v["id"] for v in manifest["videos"]["train"]] == ids
    assert [r[schema.LABEL_INDEX].numpy() for r in train] == [int("Right" in i) for i in ids]
    first = train[ids.index("v_MoveLeft_g01_c01")]
    frame = tf.io.decode_jpeg(first[schema.IMAGE][0]).numpy()
    assert frame.shape == (32, 38, 3)  # 40x48 with the short side resized to 32
    # MoveLeft translates by -2 px per frame at 48 px wide: about -1.6 px at 38 px.
    flow_x = np.stack([tf.io.decode_jpeg(x).numpy()[..., 0] for x in first[schema.FLOW_X]])
    dx = (flow_x.astype(np.float32) * 40 / 255 - 20)[:, 6:-6, 6:-6]
    assert np.median(dx) == pytest.approx(-1.6, abs=0.4)


def add_bad_videos(root):
    videos, splits = root / "videos", root / "splits"
    good = textured_frames(12, 40, 48, seed=99, dx=2)
    (videos / "MoveRight" / "v_MoveRight_g05_c01.avi").write_text("this is not a video")
    (videos / "MoveRight" / "v_MoveRight_g05_c02.avi").write_bytes(b"")
    write_video(videos / "MoveRight" / "v_MoveRight_g05_c03.avi", good)
    data = (videos / "MoveRight" / "v_MoveRight_g05_c03.avi").read_bytes()
    (videos / "MoveRight" / "v_MoveRight_g05_c03.avi").write_bytes(data[: len(data) // 2])
    write_video(videos / "MoveRight" / "v_MoveRight_g05_c04.avi", good[:3])
    write_video(videos / "MoveRight" / "v_MoveRight_g05_c05.avi",
                [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in good], color=False)
    write_video(videos / "Jump" / "v_Jump_g05_c01.avi", good)
    with open(splits / "testlist01.txt", "a") as f:
        for c in range(1, 7):
            f.write(f"MoveRight/v_MoveRight_g05_c{c:02d}.avi\r\n")  # c06 is missing on disk
        f.write("Jump/v_Jump_g05_c01.avi\r\n")


@pytest.mark.slow
def test_bad_input_never_crashes_and_is_reported(ucf_like, tmp_path):
    add_bad_videos(ucf_like)
    out = tmp_path / "prepared"
    result = run_prepare(*ucf_args(ucf_like, out, "--size", 32, "--workers", 2))
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {f["id"]: f["reason"] for f in manifest["failures"]}
    assert set(reasons) == {"v_MoveRight_g05_c01", "v_MoveRight_g05_c02", "v_MoveRight_g05_c06", "v_Jump_g05_c01"}
    assert "cannot open" in reasons["v_MoveRight_g05_c01"]
    assert "empty" in reasons["v_MoveRight_g05_c02"]
    assert "not found" in reasons["v_MoveRight_g05_c06"]
    assert "not in the class list" in reasons["v_Jump_g05_c01"]
    for video_id in reasons:  # printed once each
        assert (result.stdout + result.stderr).count(video_id) == 1
    kept = {v["id"]: v for v in manifest["videos"]["test"]}
    truncated = kept["v_MoveRight_g05_c03"]
    assert 0 < truncated["frames"] < 12
    assert any("header claims 12 frames" in n for n in truncated["notes"])
    assert kept["v_MoveRight_g05_c04"]["frames"] == 3
    assert any("shorter than a clip" in n for n in kept["v_MoveRight_g05_c04"]["notes"])
    assert any("grayscale" in n for n in kept["v_MoveRight_g05_c05"]["notes"])
    assert manifest["splits"]["test"]["videos"] == 5 and manifest["splits"]["test"]["failed"] == 4

    strict = run_prepare(*ucf_args(ucf_like, tmp_path / "strict", "--size", 32, "--max_failures", 2), check=False)
    assert strict.returncode != 0 and "--max_failures" in strict.stderr


@pytest.mark.slow
def test_exit_status_non_zero_when_nothing_prepared(tmp_path):
    root = tmp_path / "broken"
    (root / "Only").mkdir(parents=True)
    (root / "Only" / "a.avi").write_text("junk")
    (root / "Only" / "b.mp4").write_bytes(b"")
    result = run_prepare("--dataset", "folder", "--video_dir", root, "--output_dir", tmp_path / "o", check=False)
    assert result.returncode != 0 and "no video could be prepared" in result.stderr


@pytest.mark.slow
def test_dry_run_lists_missing_files_and_ends_with_json(ucf_like):
    os.remove(ucf_like / "videos" / "MoveLeft" / "v_MoveLeft_g02_c01.avi")
    result = run_prepare("--dataset", "ucf101", "--video_dir", ucf_like / "videos",
                         "--split_dir", ucf_like / "splits", "--dry_run", check=False)
    lines = result.stdout.strip().splitlines()
    assert result.returncode != 0
    assert "MoveLeft/v_MoveLeft_g02_c01.avi" in result.stdout
    assert json.loads(lines[-1]) == {"train": {"videos": 6, "missing": 1, "classes": 2},
                                     "test": {"videos": 2, "missing": 0, "classes": 2}}
    write_video(ucf_like / "videos" / "MoveLeft" / "v_MoveLeft_g02_c01.avi", textured_frames(4, 16, 16, 0))
    ok = run_prepare("--dataset", "ucf101", "--video_dir", ucf_like / "videos",
                     "--split_dir", ucf_like / "splits", "--dry_run")
    assert json.loads(ok.stdout.strip().splitlines()[-1])["train"]["missing"] == 0


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    root = tmp_path / "folder"
    for c, name in enumerate(["left", "right"]):
        for i in range(4):
            write_video(root / "train" / name / f"{name}{i}.avi",
                        textured_frames(30, 96, 96, seed=10 * c + i, dx=2 if c else -2))
        write_video(root / "test" / name / f"{name}_t.avi", textured_frames(30, 96, 96, seed=50 + c))
    args = ["--dataset", "folder", "--video_dir", root, "--size", 96, "--videos_per_shard", 1, "--workers", 1]
    reference = tmp_path / "reference"
    run_prepare(*args, "--output_dir", reference)

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        [sys.executable, "-m", "avd_tf.apps.prepare", "--noprogress", *map(str, args), "--output_dir", str(resumed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if resumed.exists() and any(n.endswith(".tfrecord") for n in os.listdir(resumed)):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = [n for n in os.listdir(resumed) if n.endswith(".tfrecord")]
    assert 0 < len(done) < 10, "the kill should land mid-run"
    assert not (resumed / "manifest.json").exists()

    second = run_prepare(*args, "--output_dir", resumed)
    assert "resuming" in second.stdout
    names = sorted(n for n in os.listdir(reference) if n.endswith(".tfrecord"))
    assert names == sorted(n for n in os.listdir(resumed) if n.endswith(".tfrecord"))
    for name in names + ["manifest.json"]:
        assert (reference / name).read_bytes() == (resumed / name).read_bytes(), name
    assert not [n for n in os.listdir(resumed) if ".tmp" in n]


@pytest.mark.slow
def test_changed_settings_are_refused(ucf_like, tmp_path):
    out = tmp_path / "p"
    run_prepare(*ucf_args(ucf_like, out, "--size", 24, "--flow", "none"))
    result = run_prepare(*ucf_args(ucf_like, out, "--size", 32, "--flow", "none"), check=False)
    assert result.returncode != 0 and "other settings" in result.stderr


@pytest.mark.slow
def test_flow_algorithm_is_recorded_and_never_mixed_on_resume(ucf_like, tmp_path):
    from avd_tf.layout import PROGRESS_DIR
    from avd_tf.video import flow

    out = tmp_path / "p"
    run_prepare(*ucf_args(ucf_like, out, "--size", 24, "--videos_per_shard", 2))
    path = out / PROGRESS_DIR / "settings.json"
    settings = json.loads(path.read_text())
    algorithm = settings["flow_algorithm"]
    device = "cuda" if flow.cuda_available() else "cpu"
    assert algorithm == flow.algorithm("auto") and algorithm["device"] == device
    assert algorithm["iterations"] == 300 and algorithm["opencv"] == cv2.__version__
    # The same folder as a machine whose "auto" resolves to the other device
    # left it, one shard short: the resume here refuses instead of mixing.
    other = "cpu" if device == "cuda" else "cuda"
    path.write_text(json.dumps({**settings, "flow_algorithm": {**algorithm, "device": other}}))
    os.remove(next(out.glob("train-*.tfrecord")))
    result = run_prepare(*ucf_args(ucf_like, out, "--size", 24, "--videos_per_shard", 2),
                         check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "flow_algorithm" in last and "other settings" in last
    with pytest.raises(ValueError, match="unknown flow device"):
        flow.resolve_device("gpu")


@needs_real
def test_shards_of_a_class_sorted_split_hold_as_many_classes_as_random_draws():
    """UCF101's trainlist01 is sorted by class: cut as listed, a shard (and a
    1000-image stream shard) holds one or two classes; in `shard_order` it
    holds about as many as a random draw of that many videos would."""
    from avd_tf.records.shards import plan

    labels = [e.label for e in load_dataset("ucf101", split_dir=UCF_SPLITS).splits["train"]]
    classes = len(set(labels))

    def mean_classes(order, size):
        return np.mean([len({order[i] for i in r}) for r in plan(len(order), size)])

    for size in (10, 1000):
        iid = classes * (1 - (1 - 1 / classes) ** size)  # expected distinct classes
        as_listed = mean_classes(labels, size)
        shuffled = mean_classes(shard_order(labels, SHARD_ORDER_SEED), size)
        assert as_listed < 0.25 * iid and shuffled > 0.95 * iid, (size, as_listed, shuffled, iid)
    assert shard_order(labels, None) == labels
    assert sorted(shard_order(labels, 1)) == sorted(labels) != shard_order(labels, 1)
