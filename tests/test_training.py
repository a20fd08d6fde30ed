"""avd-train (avd_tf.models.training) on a tiny dataset prepared in the test.

Two motion classes of the demo generator, three 12-frame 32x32 videos each
(two train, one test), prepared by avd_tf.records.prepare with TV-L1 flow.
The programs run as subprocesses; E and D are 4 filters wide so that the
runs stay short.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from avd_tf import visualize
from avd_tf.distribution import num_workers, writes_model_dir
from avd_tf.layout import AVD_MODEL
from avd_tf.inputs import avd_dataset, clip_dataset, list_shards
from avd_tf.inputs.clips import sub_seed
from avd_tf.models import training
from avd_tf.models.presets import PRESETS, get_preset
from avd_tf.models.distill import load_encoder
from conftest import prepared_motion_videos

CLASSES = ["TranslateLeft", "TranslateRight"]
FRAMES, SIZE = 12, 32
SUMMARY_CLIPS = 2
TIMEOUT = 300
TRAIN = [sys.executable, "-m", "avd_tf.apps.train"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The videos, prepared with TV-L1 flow."""
    return prepared_motion_videos(tmp_path_factory.mktemp("training"), CLASSES, FRAMES, SIZE)


def train_flags(data_dir, model_dir, epochs, *extra):
    return [
        "--data_dir", data_dir, "--model_dir", str(model_dir), "--stream", "rgb",
        "--preset", "small", "--num_frames", "8", "--image_size", str(SIZE),
        "--epochs", str(epochs), "--steps_per_epoch", "2", "--batch_size", "4",
        "--encoder_filters", "4,4,4,4", "--decoder_filters", "4,4,4,4", "--seed", "3",
        "--summary_clips", str(SUMMARY_CLIPS), "--progress=false", *extra,
    ]


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from avd_tf.apps import train

    sys.argv = ["avd-train"] + sys.argv[1:]
    train.run()
    """
)


@pytest.fixture(scope="module")
def background(data_dir, tmp_path_factory):
    """The diverging and the mirrored runs, started at once so they overlap the others."""
    root = tmp_path_factory.mktemp("background")
    runs = {
        "diverging": TRAIN + train_flags(data_dir, root / "diverging", 2, "--ed_lr", "1e30",
                                         "--t_lr", "1e30"),
        "mirrored": [sys.executable, "-c", MIRRORED,
                     *train_flags(data_dir, root / "mirrored", 1, "--steps_per_epoch", "1",
                                  "--distribution_strategy", "mirrored")],
    }
    processes = {name: subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for name, args in runs.items()}
    yield {name: (process, root / name) for name, process in processes.items()}
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def finish(background, name):
    """(CompletedProcess-like result, model_dir) of a background run, once it ends."""
    process, model_dir = background[name]
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), model_dir


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory, background):
    """A 2-epoch run killed (SIGKILL) during epoch 2, then run again with the same flags."""
    model_dir = tmp_path_factory.mktemp("runs") / "avd_rgb"
    args = TRAIN + train_flags(data_dir, model_dir, 2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env)
    metadata = model_dir / training.BACKUP / "training_metadata.json"
    deadline = time.time() + TIMEOUT
    try:
        # The backup is the last thing written at the end of epoch 1.
        while True:
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.time() < deadline, "epoch 1 did not finish in time"
            try:
                if json.loads(metadata.read_text())["epoch"] == 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        killed_output = first.communicate(timeout=60)[0]
    finally:
        if first.poll() is None:
            first.kill()
    checkpoint_1 = model_dir / training.CHECKPOINTS / "epoch-001.weights.h5"
    killed = {
        "returncode": first.returncode,
        "output": killed_output,
        "files": sorted(os.listdir(model_dir)),
        "checkpoint_1_mtime": checkpoint_1.stat().st_mtime_ns,
    }
    second = run(args)
    return {"model_dir": model_dir, "killed": killed, "second": second,
            "data_dir": data_dir}


@pytest.mark.slow
def test_killed_run_resumes_at_the_epoch_where_it_stopped(trained):
    killed, second, model_dir = trained["killed"], trained["second"], trained["model_dir"]
    assert killed["returncode"] == -signal.SIGKILL
    assert "Epoch 1/2" in killed["output"]
    assert AVD_MODEL not in killed["files"] and training.METRICS not in killed["files"]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stdout and "1 of 2 epochs done" in second.stdout
    # The second run trained epoch 2 only: epoch 1's checkpoint is the first run's.
    assert "Epoch 2/2" in second.stdout and "Epoch 1/2" not in second.stdout
    checkpoint_1 = model_dir / training.CHECKPOINTS / "epoch-001.weights.h5"
    assert checkpoint_1.stat().st_mtime_ns == killed["checkpoint_1_mtime"]
    assert (model_dir / training.CHECKPOINTS / "epoch-002.weights.h5").is_file()
    metrics = json.loads((model_dir / training.METRICS).read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    # A finished run leaves no backup behind.
    assert not (model_dir / training.BACKUP).exists()


def test_outputs_config_and_metrics(trained, data_dir):
    model_dir = trained["model_dir"]
    for name in (AVD_MODEL, training.ENCODER, training.CONFIG, training.METRICS):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / training.CONFIG).read_text())
    assert config["preset"] == "small" and config["stream"] == "rgb"
    assert config["classes"] == CLASSES
    assert config["data_dir"] == os.path.abspath(data_dir)
    assert config["config"]["num_frames"] == 8 and config["config"]["image_size"] == SIZE
    assert config["config"]["encoder_filters"] == [4, 4, 4, 4]
    assert config["config"]["temporal_strides"] == [2, 2, 2, 1, 1]
    metrics = json.loads((model_dir / training.METRICS).read_text())
    assert metrics["program"] == "train" and set(metrics) == {
        "program", "run", "history", "final", "timing"}
    final, timing = metrics["final"], metrics["timing"]
    for key in ("rec_loss", "gen_loss", "teacher_loss", "teacher_acc_real",
                "teacher_acc_fake", "val_rec_loss", "val_psnr"):
        assert math.isfinite(final[key]), key
    assert math.isfinite(timing["clips_per_second"]) and timing["train_seconds"] > 0
    assert timing["wall_seconds"] > 0
    assert 0 <= final["teacher_acc_real"] <= 1 and 0 <= final["teacher_acc_fake"] <= 1
    assert final["val_psnr"] > 0 and metrics["run"]["replicas"] == 1
    assert final["rule"] == "last" and final["epoch"] == metrics["history"][-1]["epoch"] == 2
    assert metrics["history"][-1]["val_psnr"] == final["val_psnr"]
    assert all("clips_per_second" in row for row in metrics["history"])
    # The program prints the same figures as its last line.
    printed = json.loads(trained["second"].stdout.strip().splitlines()[-1])
    assert printed["val_psnr"] == pytest.approx(final["val_psnr"])
    assert printed["clips_per_second"] == pytest.approx(timing["clips_per_second"])


def read_events(log_dir):
    """{tag: {step: tf.compat.v1.Summary.Value}} of every event file in `log_dir`."""
    values = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = value
    return values


def test_tensorboard_scalars_and_distilled_image_summaries(trained):
    model_dir, data_dir = trained["model_dir"], trained["data_dir"]
    train_events = read_events(model_dir / training.LOGS / "train")
    validation = read_events(model_dir / training.LOGS / "validation")
    # Epoch 1 (step 0) was logged by the killed run, epoch 2 by the resumed one.
    assert sorted(train_events["epoch_rec_loss"]) == [0, 1]
    assert sorted(validation["epoch_psnr"]) == [0, 1]
    assert validation["epoch_psnr"][1].metadata.plugin_data.plugin_name == "scalars"
    images = train_events["distilled"]
    assert sorted(images) == [0, 1]
    value = images[1]
    assert value.metadata.plugin_data.plugin_name == "images"
    width, height, *pngs = tf.make_ndarray(value.tensor)
    assert len(pngs) == SUMMARY_CLIPS
    assert (int(width), int(height)) == (2 * SIZE + training.SUMMARY_GAP, SIZE)
    pictures = np.stack([tf.io.decode_png(png).numpy() for png in pngs])
    # Left: the clips' middle frames; right: E's images of the clips, by the
    # final encoder (no training after the last summary).
    clips = next(iter(clip_dataset(data_dir, "test", num_frames=8, size=SIZE,
                                   batch_size=SUMMARY_CLIPS)))["clip"].numpy()
    np.testing.assert_array_equal(pictures[:, :, :SIZE],
                                  visualize.signed_to_uint8(clips[:, 4]))
    encoder = load_encoder(str(model_dir))
    expected = visualize.signed_to_uint8(encoder(clips, training=False).numpy())
    distilled = pictures[:, :, SIZE + training.SUMMARY_GAP:].astype(int)
    assert np.abs(distilled - expected).max() <= 1


def test_nan_stops_training_with_a_clear_message(background):
    result, model_dir = finish(background, "diverging")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("avd-train: training diverged at epoch 1, step ")
    assert "nan" in message and "lower learning rate" in message and "--lam" in message
    assert not (model_dir / AVD_MODEL).exists()
    assert not (model_dir / training.METRICS).exists()


def test_mirrored_strategy_on_two_logical_cpus_trains_an_epoch(background):
    result, model_dir = finish(background, "mirrored")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 replica(s)" in result.stdout
    metrics = json.loads((model_dir / training.METRICS).read_text())
    assert metrics["run"]["replicas"] == 2 and len(metrics["history"]) == 1
    final = metrics["final"]
    assert math.isfinite(final["val_psnr"]) and math.isfinite(final["rec_loss"])
    config = json.loads((model_dir / training.CONFIG).read_text())
    assert config["distribution_strategy"] == "mirrored"
    assert (model_dir / training.ENCODER).is_file()


def free_ports(count):
    """`count` distinct free TCP ports of localhost (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def one_shard_data_dir(data_dir):
    """data_dir's videos prepared again (no flow), each split in one shard: fewer than 2 workers."""
    from avd_tf.datasets import load_dataset
    from avd_tf.records.convert import ConvertOptions
    from avd_tf.records.prepare import prepare

    videos, out = (os.path.join(os.path.dirname(data_dir), name) for name in ("videos", "one_shard"))
    prepare(load_dataset("folder", video_dir=videos), videos, out,
            ConvertOptions(size=SIZE, flow="none"), dataset_name="folder", videos_per_shard=8,
            progress=False, log=lambda _: None)
    return out


def train_on_two_workers(data_dir, model_dir, tmp_path, **other_runs):
    """avd-train on two worker processes (multi_worker_mirrored, TF_CONFIG on localhost),
    one step, beside `other_runs` (name: avd-train flags); returns each run's stdout."""
    # A proxy in the environment would also take gRPC's connections to localhost.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    runs = {name: (flags, {}) for name, flags in other_runs.items()}
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        (tmp_path / f"tmp{index}").mkdir()
        runs[f"worker{index}"] = (
            train_flags(data_dir, model_dir, 1, "--steps_per_epoch", "1",
                        "--distribution_strategy", "multi_worker_mirrored"),
            # TMPDIR: where a non-chief worker puts its throwaway outputs.
            {"TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(tmp_path / f"tmp{index}")},
        )

    def output(name, stream):
        return (tmp_path / f"{name}.{stream}").read_text()

    processes = {}
    try:
        for name, (flags, extra_env) in runs.items():
            # Files, not pipes: a full pipe would stall a worker and with it the other.
            with open(tmp_path / f"{name}.out", "w") as out, \
                    open(tmp_path / f"{name}.err", "w") as err:
                processes[name] = subprocess.Popen(TRAIN + flags, stdout=out, stderr=err,
                                                   env={**env, **extra_env})
        deadline = time.monotonic() + TIMEOUT
        for name, process in processes.items():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {TIMEOUT} s (a collective op waiting "
                            f"for the other worker?); its stderr ends:\n"
                            f"{output(name, 'err')[-3000:]}")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, process in processes.items():
        assert process.returncode == 0, f"{name} failed:\n{output(name, 'err')[-3000:]}"
    assert os.listdir(tmp_path / "tmp0") == [] and os.listdir(tmp_path / "tmp1") == []
    return {name: output(name, "out") for name in runs}


@pytest.mark.slow
def test_two_workers_take_the_first_step_of_one_device(one_shard_data_dir, tmp_path):
    """Two workers and one train shard: DATA sharding (`training.shard_policy`).

    Each worker gets half of the global batch of 4; after one step the
    chief's metrics.json must hold the losses of one process on one device
    (default strategy) training on the same batch.
    """
    two_workers, one_device = tmp_path / "two_workers", tmp_path / "one_device"
    outputs = train_on_two_workers(
        one_shard_data_dir, two_workers, tmp_path,
        one_device=train_flags(one_shard_data_dir, one_device, 1, "--steps_per_epoch", "1"))
    assert "on 2 replica(s) of 2 workers, sharing the train shards by DATA" in outputs["worker0"]

    chief = json.loads((two_workers / training.METRICS).read_text())
    single = json.loads((one_device / training.METRICS).read_text())
    assert chief["run"]["replicas"] == 2 and single["run"]["replicas"] == 1
    assert len(chief["history"]) == len(single["history"]) == 1
    chief, single = chief["final"], single["final"]
    # One step per epoch: the epoch's figures are the first step's. The
    # validation loss after the step checks that the update was the same too.
    for key in ("rec_loss", "teacher_loss", "ed_loss", "gen_loss", "val_rec_loss"):
        np.testing.assert_allclose(chief[key], single[key], rtol=1e-4, err_msg=key)
    # The other worker computed the same all-reduced figures, but wrote them
    # to its throwaway folder, since removed: model_dir has one writer.
    other = json.loads(outputs["worker1"].strip().splitlines()[-1])
    assert other["rec_loss"] == pytest.approx(chief["rec_loss"], rel=1e-6)
    assert len((two_workers / training.HISTORY).read_text().splitlines()) == 2
    assert (two_workers / training.CHECKPOINTS / "epoch-001.weights.h5").is_file()


@pytest.mark.slow
def test_two_workers_with_a_shard_each_train_on_their_own_files(data_dir, tmp_path):
    """Two workers and two train shards: FILE sharding, each worker reads its own shard
    (`training.worker_dataset`); the step runs and both hold the all-reduced losses."""
    outputs = train_on_two_workers(data_dir, tmp_path / "two_workers", tmp_path)
    assert "on 2 replica(s) of 2 workers, sharing the train shards by FILE" in outputs["worker0"]
    chief = json.loads(outputs["worker0"].strip().splitlines()[-1])
    other = json.loads(outputs["worker1"].strip().splitlines()[-1])
    assert math.isfinite(chief["rec_loss"]) and math.isfinite(chief["val_rec_loss"])
    assert other["rec_loss"] == pytest.approx(chief["rec_loss"], rel=1e-6)


def test_only_the_chief_writes_the_model_dir(monkeypatch):
    """TF_CONFIG as tf.distribute reads it: worker 0 is the chief unless a "chief" task is listed."""
    def tf_config(cluster, task_type, index):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": task_type, "index": index}}))

    workers = {"worker": ["host0:1", "host1:1"]}
    for index, chief in ((0, True), (1, False)):
        tf_config(workers, "worker", index)
        assert writes_model_dir("multi_worker_mirrored") is chief
        assert writes_model_dir("mirrored")
    tf_config({"chief": ["host2:1"], **workers}, "worker", 0)
    assert not writes_model_dir("multi_worker_mirrored")
    tf_config({"chief": ["host2:1"], **workers}, "chief", 0)
    assert writes_model_dir("multi_worker_mirrored")
    monkeypatch.setenv("TF_CONFIG", "{")
    with pytest.raises(ValueError, match="^TF_CONFIG is not valid JSON"):
        writes_model_dir("multi_worker_mirrored")


@pytest.mark.slow  # two input pipelines built and run: 5-7 s on 2 busy cores
def test_the_second_of_two_workers_reads_only_its_own_shard_file(data_dir, tmp_path):
    """Worker 1 of 2 (FILE sharding) yields exactly the batches of a folder holding only
    its shard file, the second; reading both files would give other clips."""
    files = list_shards(data_dir, "train")
    assert len(files) == 2
    policies = tf.data.experimental.AutoShardPolicy
    assert training.shard_policy(2, 2) == policies.FILE
    assert training.shard_policy(1, 2) == policies.DATA
    assert num_workers(tf.distribute.get_strategy()) == 1
    inputs = dict(stream="rgb", num_frames=4, size=16, flip="mirror")
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    worker = training.worker_dataset(data_dir, context, 4, seed=3, **inputs)
    for path in (os.path.join(data_dir, "manifest.json"), files[1]):
        shutil.copy(path, tmp_path)
    alone = avd_dataset(str(tmp_path), "train", training=True, batch_size=2,
                        seed=sub_seed(3, 1), **inputs)
    (clips, frames), (want_clips, want_frames) = next(iter(worker)), next(iter(alone))
    assert clips.shape == (2, 4, 16, 16, 3)
    np.testing.assert_array_equal(clips.numpy(), want_clips.numpy())
    np.testing.assert_array_equal(frames.numpy(), want_frames.numpy())


def test_config_overrides_derive_strides_and_teacher_resolution():
    config = get_preset("small", num_frames=16, image_size=48, lam=0.5,
                        encoder_filters=[4, 4, 4, 4], batch_size=None)
    assert config.temporal_strides == (2, 2, 2, 2, 1)
    assert config.teacher_input_resolution == 48  # small's T sees the whole image
    # The paper's T pools to its resolution: the largest divisor of the size up to it.
    paper = PRESETS["paper"].teacher_input_resolution
    assert get_preset("paper", image_size=48).teacher_input_resolution == max(
        d for d in range(1, paper + 1) if 48 % d == 0)
    with pytest.raises(ValueError, match="image_size must be positive"):
        get_preset("small", image_size=0)
    assert config.lam == 0.5 and config.encoder_filters == (4, 4, 4, 4)
    assert config.batch_size == PRESETS["small"].batch_size
    assert get_preset("paper", num_frames=4).temporal_strides == (2, 2, 1, 1, 1)
    # The builder resolves overrides the same way training does.
    from avd_tf.models import build_avd

    model = build_avd("small", "flow", num_frames=16, image_size=48, lam=0.5)
    assert model.lam == 0.5 and model.encoder.temporal_strides == (2, 2, 2, 2, 1)
    with pytest.raises(ValueError, match="power of two"):
        get_preset("small", num_frames=12)
    with pytest.raises(ValueError, match="power of two up to 2\\*\\*5"):
        get_preset("small", num_frames=64)
    with pytest.raises(ValueError, match="unknown AVD config keys"):
        get_preset("small", widths=3)
    with pytest.raises(ValueError, match="unknown AVD preset"):
        get_preset("huge")


def test_bad_runs_are_refused(data_dir, tmp_path, trained):
    with pytest.raises(ValueError, match="unknown stream"):
        training.train_avd(data_dir, str(tmp_path / "a"), stream="depth")
    with pytest.raises(FileNotFoundError, match="missing: no such folder; prepared data is a "
                                                "folder that avd-prepare makes"):
        training.train_avd(str(tmp_path / "missing"), str(tmp_path / "b"))
    # The finished run's folder with other settings.
    with pytest.raises(ValueError, match="other settings .*config.*differ"):
        training.train_avd(data_dir, str(trained["model_dir"]), epochs=2, steps_per_epoch=2,
                           batch_size=4, lam=0.5, progress=False)


def test_tpu_strategy_without_a_tpu_says_so():
    # Last in this file: a failed TPU connection may leave the TF context changed.
    with pytest.raises(RuntimeError, match="no TPU found"):
        training.make_strategy("tpu")
