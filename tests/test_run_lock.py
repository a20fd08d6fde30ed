"""One run per output folder: avd-prepare, avd-train and avd-finetune refuse a folder a
live run holds (naming its pid and host) and take over the lock of a run that died."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from avd_tf import run_lock
from conftest import write_motion_videos

TIMEOUT = 300
HOLD = """
import sys, time
from avd_tf.run_lock import run_lock
with run_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path / "out" until the test ends or kills it."""
    folder = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "locked\n"
        yield folder, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def run(program, *args):
    return subprocess.Popen([program, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_live_run_is_refused_by_every_program(holder, tmp_path):
    folder, process = holder
    write_motion_videos(tmp_path / "videos", ["TranslateLeft"], 8, 32)
    runs = {  # started together: each imports TensorFlow for a few seconds
        "avd-prepare": run("avd-prepare", "--dataset", "folder", "--video_dir",
                           tmp_path / "videos", "--output_dir", folder, "--noprogress"),
        "avd-train": run("avd-train", "--data_dir", tmp_path / "data", "--model_dir", folder),
        "avd-finetune": run("avd-finetune", "--data_dir", tmp_path / "data", "--model_dir",
                            folder, "--stream", "frame"),
    }
    for program, child in runs.items():
        _, stderr = child.communicate(timeout=TIMEOUT)
        assert child.returncode != 0, program
        assert stderr.strip().splitlines()[-1] == (
            f"{program}: {folder}: holder (pid {process.pid} on {socket.gethostname()}) is "
            "using this folder; wait for it to end or use another folder")
    assert process.poll() is None
    assert json.loads((folder / run_lock.LOCK_FILE).read_text())["pid"] == process.pid


@pytest.mark.slow
def test_the_lock_of_a_killed_run_is_taken_over(holder, tmp_path):
    folder, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    write_motion_videos(tmp_path / "videos", ["TranslateLeft"], 8, 32)
    prepare = run("avd-prepare", "--dataset", "folder", "--video_dir", tmp_path / "videos",
                  "--output_dir", folder, "--flow", "none", "--size", 32, "--workers", 1,
                  "--noprogress")
    stdout, stderr = prepare.communicate(timeout=TIMEOUT)
    assert prepare.returncode == 0, stderr[-3000:]
    assert (f"avd-prepare: {folder / run_lock.LOCK_FILE}: taking over the lock of holder "
            f"(pid {process.pid} on {socket.gethostname()}), which ended without releasing it"
            ) in stdout.splitlines()
    assert (folder / "manifest.json").is_file()
    assert not (folder / run_lock.LOCK_FILE).exists(), "released at the end"


def test_released_lock_is_free_and_a_held_one_refuses_in_process(tmp_path):
    with run_lock.run_lock(str(tmp_path), "first", log=pytest.fail) as path:
        with pytest.raises(run_lock.RunLockedError, match=f"first \\(pid {os.getpid()} on "):
            with run_lock.run_lock(str(tmp_path), "second"):
                pass
    assert not os.path.exists(path)
    with run_lock.run_lock(str(tmp_path), "third", log=pytest.fail):
        assert json.loads(open(path).read())["program"] == "third"
