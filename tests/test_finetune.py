"""avd_tf.classify.finetune and the avd-finetune program: real training on a tiny prepared set."""
from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from avd_tf.classify import finetune as ft
from avd_tf.classify.stream_cache import default_cache_dir, ensure_stream
from avd_tf.datasets import load_dataset
from avd_tf.layout import CLASSIFIER_MODEL
from avd_tf.records.convert import ConvertOptions
from avd_tf.records.prepare import prepare
from avd_tf.run_dir import epoch_figures
from avd_tf.video import synthetic

CLASSES = ["TranslateLeft", "TranslateRight"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """2 classes x 3 videos (2 train, 1 test) of 22 frames at 32x32, prepared with TV-L1 flow."""
    root = tmp_path_factory.mktemp("finetune")
    videos = root / "videos"
    for c, name in enumerate(CLASSES):
        for i in range(3):
            split = "test" if i == 2 else "train"
            clip = synthetic.render_video(name, seed=10 * c + i, frames=22, size=32)
            synthetic.write_video(videos / split / name / f"{name}_{i}.avi", clip)
    out = str(root / "prepared")
    prepare(load_dataset("folder", video_dir=videos), str(videos), out,
            ConvertOptions(size=32, flow="tvl1"), dataset_name="folder", videos_per_shard=2,
            progress=False, log=lambda _: None)
    return out


def history_rows(model_dir):
    with open(os.path.join(model_dir, ft.HISTORY), newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_epochs_write_model_config_metrics(data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    lines = []
    metrics = ft.finetune(data_dir, "dynamic", model_dir, backbone="alexnet", weights="none",
                          epochs=2, batch_size=4, input_size=64, steps_per_epoch=3, seed=0,
                          lr=0.01, progress=False, log=lines.append)
    with open(os.path.join(model_dir, ft.CONFIG)) as f:
        config = json.load(f)
    assert config["stream"] == "dynamic" and config["backbone"] == "alexnet"
    assert config["input_size"] == 64 and config["input_channels"] == 3
    assert config["classes"] == CLASSES and config["weights"] == "none"
    assert config["data_dir"] == os.path.abspath(data_dir) and config["avd_model_dir"] is None
    assert config["stream_dir"] == default_cache_dir(os.path.abspath(data_dir), "dynamic")
    assert config["epochs"] == 2 and config["steps_per_epoch"] == 3
    assert config["select_on"] == "last" and config["validation"] is None

    with open(os.path.join(model_dir, ft.METRICS)) as f:
        assert json.load(f) == metrics
    history = metrics["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["learning_rate"] == pytest.approx(0.1 * history[0]["learning_rate"])
    assert history[0]["learning_rate"] == pytest.approx(0.01)
    # No validation at all: the last epoch is kept.
    assert not any("val_accuracy" in row for row in history)
    assert metrics["program"] == "finetune" and metrics["run"]["validation"] is None
    assert metrics["final"] == {"rule": "last", **epoch_figures(history[-1])}
    assert "images_per_second" not in metrics["final"] and "epoch_seconds" in history[-1]
    timing = metrics["timing"]
    assert timing["train_seconds"] > 0 and timing["images_per_second"] > 0
    assert timing["wall_seconds"] >= timing["epoch_seconds"] >= timing["train_seconds"]
    assert not os.path.exists(os.path.join(model_dir, ft.BACKUP))  # removed when finished

    model = keras.models.load_model(os.path.join(model_dir, CLASSIFIER_MODEL))
    assert int(model.optimizer.iterations) == 2 * 3  # saved after the last epoch's 3 steps
    scores = model.predict(np.zeros((3, 64, 64, 3), np.float32), verbose=0)
    assert scores.shape == (3, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)

    # The same run again is not retrained; another run in this folder is refused.
    mtime = os.stat(os.path.join(model_dir, CLASSIFIER_MODEL)).st_mtime_ns
    again = ft.finetune(data_dir, "dynamic", model_dir, backbone="alexnet", weights="none",
                        epochs=2, batch_size=4, input_size=64, steps_per_epoch=3, seed=0,
                        lr=0.01, progress=False, log=lines.append)
    assert again == metrics and "already holds this finished run" in lines[-1]
    assert os.stat(os.path.join(model_dir, CLASSIFIER_MODEL)).st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"config\.json: .*other settings \(epochs differ\)"):
        ft.finetune(data_dir, "dynamic", model_dir, backbone="alexnet", weights="none",
                    epochs=3, batch_size=4, input_size=64, steps_per_epoch=3, seed=0,
                    lr=0.01, progress=False)


@pytest.mark.slow
def test_efficientnet_lite0_imagenet_one_epoch(data_dir, tmp_path):
    model_dir = str(tmp_path / "eff")
    metrics = ft.finetune(data_dir, "frame", model_dir, backbone="efficientnet_lite0",
                          weights="imagenet", epochs=1, batch_size=8, input_size=64,
                          steps_per_epoch=2, progress=False)
    assert len(metrics["history"]) == 1 and metrics["final"]["epoch"] == 1
    assert metrics["run"]["test_images"] == 2 * 8  # two test videos, 8 frames each
    with open(os.path.join(model_dir, ft.CONFIG)) as f:
        config = json.load(f)
    assert config["weights"] == "imagenet" and config["steps_per_epoch"] == 2
    assert os.path.isfile(os.path.join(model_dir, CLASSIFIER_MODEL))


def test_select_on_val_keeps_the_best_epoch_on_held_out_videos(data_dir, tmp_path):
    model_dir = str(tmp_path / "val")
    metrics = ft.finetune(data_dir, "frame", model_dir, backbone="alexnet", weights="none",
                          epochs=3, batch_size=4, input_size=64, seed=0, lr=0.01, lr_decay=1.0,
                          select_on="val", progress=False)
    with open(os.path.join(model_dir, ft.CONFIG)) as f:
        config = json.load(f)
    # 2 training videos a class, each its own group: one a class is held out, 8 frames each.
    validation = config["validation"]
    assert config["select_on"] == "val" and metrics["run"]["validation"] == validation
    assert validation["val_fraction"] == 0.2 and validation["seed"] == 0
    assert validation["groups"] == 4 and validation["val_videos"] == 2
    assert len(validation["val_groups"]) == 2 and validation["unvalidated_classes"] == []
    assert {group.split("/")[1] for group in validation["val_groups"]} == set(CLASSES)
    assert validation["val_images"] == validation["train_images"] == 16
    assert metrics["run"]["train_images"] == 16 and config["steps_per_epoch"] == 16 // 4

    history = metrics["history"]
    accuracies = [row["val_accuracy"] for row in history]
    best = history[accuracies.index(max(accuracies))]
    assert metrics["final"] == {"rule": "val", **epoch_figures(best)}
    # This seeded run peaks before its last epoch, so keeping the last would fail here.
    assert best["epoch"] < history[-1]["epoch"] == 3, accuracies
    model = keras.models.load_model(os.path.join(model_dir, CLASSIFIER_MODEL))
    assert int(model.optimizer.iterations) == best["epoch"] * config["steps_per_epoch"]


def test_the_test_split_is_never_read(data_dir, tmp_path):
    """Garbage test shards: both rules fine-tune, avd-evaluate (which reads them) fails."""
    from avd_tf.classify.evaluate import evaluate

    data = str(tmp_path / "prepared")
    shutil.copytree(data_dir, data, ignore=shutil.ignore_patterns("streams"))
    stream_dir = ensure_stream(data, "frame", progress=False)
    test_shards = glob.glob(os.path.join(stream_dir, "test-*.tfrecord"))
    test_shards += glob.glob(os.path.join(data, "test*"))
    assert test_shards
    for path in test_shards:
        with open(path, "wb") as f:
            f.write(b"not a TFRecord")
    for rule in ft.SELECTION_RULES:
        metrics = ft.finetune(data, "frame", str(tmp_path / rule), backbone="alexnet",
                              weights="none", epochs=1, batch_size=4, input_size=64,
                              steps_per_epoch=2, seed=0, select_on=rule, progress=False)
        assert metrics["final"]["rule"] == rule and len(metrics["history"]) == 1
    with pytest.raises(tf.errors.DataLossError):
        evaluate([str(tmp_path / "last")], progress=False, log=lambda _: None)


def program(*args):
    return [sys.executable, "-m", "avd_tf.apps.finetune", *map(str, args)]


@pytest.mark.slow
@pytest.mark.parametrize("rule", ft.SELECTION_RULES)
def test_killed_run_resumes_at_the_next_epoch(data_dir, tmp_path, rule):
    model_dir = tmp_path / "killed"
    args = program("--data_dir", data_dir, "--stream", "flow", "--backbone", "alexnet",
                   "--weights", "none", "--input_size", 64, "--epochs", 3, "--batch_size", 4,
                   "--steps_per_epoch", 40, "--model_dir", model_dir, "--noprogress",
                   "--select_on", rule)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch 2/3"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    with open(model_dir / ft.BACKUP / "training_metadata.json") as f:
        assert json.load(f)["epoch"] == 1
    assert [row["epoch"] for row in history_rows(model_dir)] == ["0"]

    resumed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    output = resumed.stdout + resumed.stderr
    assert "1 of 3 epochs done, continuing at epoch 2" in output
    assert "Epoch 1/3" not in output and "Epoch 2/3" in output and "Epoch 3/3" in output
    assert [row["epoch"] for row in history_rows(model_dir)] == ["0", "1", "2"]
    with open(model_dir / ft.METRICS) as f:
        metrics = json.load(f)
    assert len(metrics["history"]) == 3
    rates = [row["learning_rate"] for row in metrics["history"]]
    assert rates == pytest.approx([3e-3, 3e-4, 3e-5])
    selected = metrics["final"]
    assert selected["rule"] == rule
    if rule == "val":
        accuracies = [row["val_accuracy"] for row in metrics["history"]]
        assert selected["epoch"] == 1 + accuracies.index(max(accuracies))
    else:
        assert selected["epoch"] == 3
    model = keras.models.load_model(model_dir / CLASSIFIER_MODEL)
    assert int(model.optimizer.iterations) == 40 * selected["epoch"]
    printed = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert printed["select_on"] == rule and printed["selected_epoch"] == selected["epoch"]


@pytest.mark.slow
def test_avd_stream_without_model_dir(data_dir, tmp_path):
    with pytest.raises(ValueError, match="'avd_rgb' needs avd_model_dir"):
        ft.finetune(data_dir, "avd_rgb", str(tmp_path / "a"), backbone="alexnet",
                    weights="none", progress=False)
    result = subprocess.run(program("--data_dir", data_dir, "--stream", "avd_flow",
                                    "--model_dir", tmp_path / "b"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--stream avd_flow needs --avd_model_dir" in result.stderr
    assert not (tmp_path / "b").exists()


def test_imagenet_download_failure_is_explained(data_dir, tmp_path, monkeypatch):
    cached = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")
    if os.path.isdir(cached) and any("resnet50" in name for name in os.listdir(cached)):
        pytest.skip("ResNet-50 ImageNet weights are cached here: nothing would be downloaded")
    # A proxy on a closed local port: the download fails at once and nothing leaves the machine.
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="no network: use --weights none, a local file, or "
                                           "--backbone efficientnet_lite0"):
        ft.finetune(data_dir, "frame", str(tmp_path / "r50"), backbone="resnet50",
                    weights="imagenet", input_size=32, epochs=1, batch_size=4, progress=False)


ON_TWO_CPUS = """
import sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from avd_tf.apps import finetune

sys.argv = ["avd-finetune"] + sys.argv[1:]
finetune.run()
"""


@pytest.mark.slow  # a program in a subprocess: ~30 s on 2 busy cores
def test_mirrored_strategy_on_two_logical_cpus_fine_tunes_and_validates(data_dir, tmp_path):
    """avd-finetune --distribution_strategy mirrored over 2 logical CPUs, validating on
    held-out videos: the global batch of 4 splits over both replicas; a batch of 3 does not."""
    model_dir = tmp_path / "mirrored"
    flags = ["--data_dir", data_dir, "--stream", "frame", "--backbone", "alexnet",
             "--weights", "none", "--input_size", "64", "--epochs", "1", "--steps_per_epoch",
             "2", "--seed", "0", "--select_on", "val", "--noprogress",
             "--distribution_strategy", "mirrored"]
    result = subprocess.run([sys.executable, "-c", ON_TWO_CPUS, *flags, "--batch_size", "4",
                             "--model_dir", model_dir], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(model_dir / ft.METRICS) as f:
        metrics = json.load(f)
    assert metrics["run"]["replicas"] == 2 and len(metrics["history"]) == 1
    assert np.isfinite(metrics["final"]["loss"]) and 0 <= metrics["final"]["val_accuracy"] <= 1
    with open(model_dir / ft.CONFIG) as f:
        assert json.load(f)["distribution_strategy"] == "mirrored"
    assert (model_dir / CLASSIFIER_MODEL).is_file()

    odd = subprocess.run([sys.executable, "-c", ON_TWO_CPUS, *flags, "--batch_size", "3",
                          "--model_dir", tmp_path / "odd"], capture_output=True, text=True,
                         timeout=600)
    assert odd.returncode == 1 and odd.stderr.strip().splitlines()[-1] == (
        "avd-finetune: batch_size 3 does not split evenly over the 2 replicas of the "
        "mirrored strategy")


@pytest.mark.slow  # two programs in subprocesses waiting for each other: ~60 s on 2 busy cores
def test_two_workers_fine_tune_and_only_the_chief_writes(data_dir, tmp_path):
    """avd-finetune on two worker processes (multi_worker_mirrored, TF_CONFIG on localhost)
    with validation on held-out videos: both finish with the same all-reduced figures."""
    ensure_stream(data_dir, "frame", progress=False)  # computed once, not by both workers
    sockets = [socket.socket() for _ in range(2)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    cluster = {"worker": [f"localhost:{sock.getsockname()[1]}" for sock in sockets]}
    for sock in sockets:
        sock.close()
    # A proxy in the environment would also take gRPC's connections to localhost.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    model_dir = tmp_path / "two_workers"
    processes, outputs = [], []
    for index in range(2):
        (tmp_path / f"tmp{index}").mkdir()
        worker_env = {**env, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path / f"tmp{index}"),
                      "TF_CONFIG": json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": index}})}
        # Files, not pipes: a full pipe would stall a worker and with it the other.
        outputs.append((tmp_path / f"worker{index}.out", tmp_path / f"worker{index}.err"))
        with open(outputs[-1][0], "w") as out, open(outputs[-1][1], "w") as err:
            processes.append(subprocess.Popen(
                program("--data_dir", data_dir, "--stream", "frame", "--backbone", "alexnet",
                        "--weights", "none", "--input_size", 64, "--epochs", 1,
                        "--steps_per_epoch", 2, "--batch_size", 4, "--seed", 0,
                        "--select_on", "val", "--noprogress", "--model_dir", model_dir,
                        "--distribution_strategy", "multi_worker_mirrored"),
                stdout=out, stderr=err, env=worker_env))
    try:
        for process in processes:
            process.wait(timeout=600)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err.read_text()[-3000:]
    printed = [json.loads(out.read_text().strip().splitlines()[-1]) for out, _ in outputs]
    assert printed[0]["val_accuracy"] == pytest.approx(printed[1]["val_accuracy"])
    with open(model_dir / ft.METRICS) as f:
        metrics = json.load(f)
    assert metrics["run"]["replicas"] == 2
    assert metrics["final"]["val_accuracy"] == pytest.approx(printed[0]["val_accuracy"])
    assert (model_dir / CLASSIFIER_MODEL).is_file()
    assert os.listdir(tmp_path / "tmp0") == [] and os.listdir(tmp_path / "tmp1") == []
