"""avd-prepare's worker processes: a worker killed inside a video, or a video over --video_timeout,
costs that video alone; the run finishes, records why, and resumes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from avd_tf.datasets.base import VideoEntry
from avd_tf.records.convert import ConvertOptions, Task
from avd_tf.records.workers import death_reason, imap
from avd_tf.video import flow
from conftest import textured_frames, write_video

KEPT = ["test/a/t0", "test/a/t1", "test/a/t2", "train/a/a0", "train/a/a1", "train/a/a2"]


def videos(root):
    """Six tiny videos (well under a second each) and slow.avi (seconds of TV-L1 at 96x96)."""
    for i in range(3):
        write_video(root / "train" / "a" / f"a{i}.avi", textured_frames(8, 32, 32, seed=i))
        write_video(root / "test" / "a" / f"t{i}.avi", textured_frames(8, 32, 32, seed=5 + i))
    slow = root / "train" / "a" / "slow.avi"
    write_video(slow, textured_frames(40, 96, 96, seed=9, dx=2))
    return slow


def command(video_dir, output_dir, *extra):
    return [sys.executable, "-m", "avd_tf.apps.prepare", "--dataset", "folder", "--video_dir",
            str(video_dir), "--output_dir", str(output_dir), "--size", "0", "--videos_per_shard", "2",
            *map(str, extra)]


def children_holding(parent_pid, path):
    """Pids of `parent_pid`'s child processes that have `path` open."""
    target = os.path.realpath(path)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == parent_pid and any(
                    os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(int(pid))
        except (OSError, IndexError, ValueError):  # a process that ended while we looked
            continue
    return found


def failures_and_kept(output_dir):
    manifest = json.loads((output_dir / "manifest.json").read_text())
    kept = sorted(v["id"] for vs in manifest["videos"].values() for v in vs)
    return {f["id"]: f["reason"] for f in manifest["failures"]}, kept


@pytest.mark.slow  # two avd-prepare runs: ~30 s on 2 busy cores
def test_worker_killed_inside_a_video_fails_that_video_only_and_the_run_resumes(tmp_path):
    slow = videos(tmp_path / "videos")
    out = tmp_path / "prepared"
    process = subprocess.Popen(command(tmp_path / "videos", out, "--workers", 2, "--noprogress"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    killed = []
    while not killed and time.time() < deadline and process.poll() is None:
        for pid in children_holding(process.pid, slow):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.01)
    stdout, stderr = process.communicate(timeout=300)
    assert killed, "no worker was seen converting slow.avi"
    assert process.returncode == 0, stdout + stderr
    failures, kept = failures_and_kept(out)
    assert failures == {"train/a/slow": "worker died: signal 9 (SIGKILL)"}
    assert kept == KEPT
    assert f"FAILED {slow}: worker died: signal 9" in stdout

    again = subprocess.run(command(tmp_path / "videos", out, "--workers", 2, "--noprogress"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming: 4 of 4 shards already complete" in again.stdout
    assert failures_and_kept(out) == (failures, kept)


@pytest.mark.slow
def test_video_over_the_timeout_is_stopped_and_recorded(tmp_path):
    videos(tmp_path / "videos")
    out = tmp_path / "prepared"
    result = subprocess.run(command(tmp_path / "videos", out, "--workers", 1, "--video_timeout", 2),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    failures, kept = failures_and_kept(out)
    assert failures == {"train/a/slow": "timed out after 2 s"}
    assert kept == KEPT


@pytest.mark.slow
def test_a_timeout_of_zero_is_refused_in_one_line(tmp_path):
    videos(tmp_path / "videos")
    bad = subprocess.run(command(tmp_path / "videos", tmp_path / "out", "--video_timeout", 0),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == \
        "avd-prepare: --video_timeout must be more than 0 seconds, got 0"


@pytest.mark.parametrize("exitcode, reason", [
    (-11, "worker died: signal 11 (SIGSEGV)"), (-9, "worker died: signal 9 (SIGKILL)"),
    (1, "worker died: exit code 1")])
def test_death_reason_names_the_signal(exitcode, reason):
    assert death_reason(exitcode) == reason


@pytest.mark.skipif(flow.cuda_available(), reason="this OpenCV build has CUDA TV-L1")
@pytest.mark.slow
def test_an_unavailable_flow_device_stops_the_run_in_one_line(tmp_path):
    videos(tmp_path / "videos")
    result = subprocess.run(command(tmp_path / "videos", tmp_path / "out", "--flow_device", "cuda"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "avd-prepare: flow device 'cuda' requested but this OpenCV build has no CUDA TV-L1")


def held_back(tasks, ahead):
    """The most finished results `imap` held at once for a consumer taking 20 ms per result."""
    results = imap(tasks, ConvertOptions(size=0, flow="tvl1"), 2, ahead=ahead)
    order, peak = [], 0
    for task, result in results:
        assert result.ok, result.failure
        peak = max(peak, results.held)
        order.append(task.entry.video_id)
        time.sleep(0.02)
    assert order == [task.entry.video_id for task in tasks]
    return peak


@pytest.mark.slow  # slow.avi's TV-L1 twice: ~10 s on 2 busy cores
def test_a_long_video_holds_back_at_most_ahead_results_for_a_slow_consumer(tmp_path):
    """A long video first and ten short ones on two workers: while the long one runs,
    the other worker would convert every short one, and each would wait in memory."""
    slow = videos(tmp_path)
    paths = [slow] + sorted(tmp_path.glob("*/a/[at]*.avi")) * 2
    tasks = [Task("train", "s", VideoEntry(str(p), 0, "a", f"{i}"), str(p))
             for i, p in enumerate(paths)]
    assert len(tasks) == 13
    assert held_back(tasks, ahead=3) <= 2
    assert held_back(tasks, ahead=len(tasks)) >= 8  # unbounded: the backlog is real
