"""Tests for avd_tf.classify.evaluate, avd-evaluate, avd_tf.pipeline.protocol and avd-protocol.

Models are tiny real Keras classifiers saved as model.keras with a
config.json; image streams are real image-record shards written here.
"""
import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from avd_tf.classify import evaluate as ev
from avd_tf.classify import scores
from avd_tf.inputs.images import stream_dataset
from avd_tf.pipeline import protocol
from avd_tf.pipeline.stages import Runner, StageError, stage_done, write_marker
from avd_tf.records import images

SIZE = 16
CLASSES = ["Fencing", "Punch", "Walk"]
VIDEOS = 9
CLIPS = 3


def _tiny_model(channels, kernel):
    """Global average pooling + softmax layer with a given kernel [channels, classes]."""
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, channels)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(kernel.shape[1], activation="softmax"),
    ])
    model.layers[-1].set_weights([kernel.astype(np.float32), np.zeros(kernel.shape[1], np.float32)])
    return model


def _model_dir(path, model, stream, data_dir, classes=CLASSES):
    os.makedirs(path, exist_ok=True)
    model.save(os.path.join(path, "model.keras"))
    config = {"stream": stream, "backbone": "tiny", "input_size": SIZE, "classes": list(classes),
              "data_dir": str(data_dir), "avd_model_dir": None}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return str(path)


def _stream_images(channels, seed):
    """{video id: (label, [clip images])}: the true class's channel is bright in 6 of 9 videos."""
    rng = np.random.default_rng(seed)
    videos = {}
    for v in range(VIDEOS):
        label = v % len(CLASSES)
        bright = (label if v < 6 else label + 1) % channels
        clips = []
        for _ in range(CLIPS):
            image = rng.integers(0, 100, (SIZE, SIZE, channels))
            image[..., bright] += 120
            clips.append(image.astype(np.uint8))
        videos[f"v{v:02d}"] = (label, clips)
    return videos


def _write_stream(folder, stream, videos):
    """Image-record shards of a "test" split, with the stream.json avd_tf.inputs.images reads."""
    writer = images.ShardedWriter(str(folder), "test", per_shard=10)
    # Videos interleaved across shards: aggregation must not rely on order.
    for i in range(CLIPS):
        for video_id, (label, clips) in sorted(videos.items(), reverse=i % 2 == 1):
            writer.write(images.serialize(clips[i], label, video_id, i))
    writer.close()
    channels = next(iter(videos.values()))[1][0].shape[-1]
    info = {"stream": stream, "channels": channels, "parameters": {"stream": stream},
            "splits": {"test": {"videos": len(videos), "images": len(videos) * CLIPS}}}
    with open(os.path.join(folder, "stream.json"), "w") as f:
        json.dump(info, f)
    return str(folder)


def _data_dir(path, classes=CLASSES, dataset="tiny"):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump({"dataset": dataset, "classes": list(classes)}, f)
    return str(path)


@pytest.fixture
def setup(tmp_path):
    """Two models that behave differently: frame (right on 6 of 9 videos) and flow (random kernel)."""
    data = _data_dir(tmp_path / "data")
    frame_kernel = 8.0 * np.eye(3)
    flow_kernel = np.random.default_rng(5).normal(0, 6, (2, 3))
    return {
        "data": data,
        "frame": _model_dir(tmp_path / "m_frame", _tiny_model(3, frame_kernel), "frame", data),
        "flow": _model_dir(tmp_path / "m_flow", _tiny_model(2, flow_kernel), "flow", data),
        "stream_dirs": {
            "frame": _write_stream(tmp_path / "s_frame", "frame", _stream_images(3, 1)),
            "flow": _write_stream(tmp_path / "s_flow", "flow", _stream_images(2, 2)),
        },
        "tmp": tmp_path,
    }


def test_predict_matches_the_model_on_every_image(setup):
    folder = setup["stream_dirs"]["frame"]
    files = sorted(p.path for p in os.scandir(folder) if p.name.endswith(".tfrecord"))
    ds = tf.data.TFRecordDataset(files).map(images.parse)
    ds = ds.map(lambda e: {**e, "image": tf.cast(e["image"], tf.float32) / 127.5 - 1.0}).batch(4)
    model = ev.load_model(setup["frame"])
    probs, ids, labels = ev.predict(model, ds)
    assert probs.shape == (VIDEOS * CLIPS, 3) and len(ids) == len(labels) == VIDEOS * CLIPS
    reference = _stream_images(3, 1)
    for video_id, label in zip(ids, labels):
        assert reference[video_id][0] == label
    x = np.concatenate([b["image"].numpy() for b in ds])
    np.testing.assert_allclose(probs, model(x).numpy(), rtol=1e-5, atol=1e-6)

    logits = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="logits: outputs are not softmax probabilities"):
        ev.predict(logits, ds, source="logits")


def _numpy_expected(per_stream, fusions, weights=None):
    """Video means, top-1/top-5 and fusions computed here with plain NumPy."""
    video = {}
    for name, (probs, ids, labels) in per_stream.items():
        keys = sorted(set(ids))
        mean = np.stack([probs[ids == k].mean(axis=0) for k in keys])
        lab = np.array([labels[ids == k][0] for k in keys])
        video[name] = (mean, lab)
    def accuracy(probs, lab):
        return np.mean(probs.argmax(1) == lab), np.mean([l in np.argsort(-p)[:5] for p, l in zip(probs, lab)])

    out = {name: accuracy(*v) for name, v in video.items()}
    for members in fusions:
        w = np.ones(len(members)) if weights is None else np.array([weights[m] for m in members])
        fused = sum(wi * video[m][0] for wi, m in zip(w / w.sum(), members))
        out["+".join(members)] = accuracy(fused, video[members[0]][1])
    return out


def test_score_streams_matches_numpy():
    rng = np.random.default_rng(0)
    per_stream = {}
    for name in ("frame", "flow", "avd_rgb"):
        ids = np.array([f"v{i % 7}" for i in rng.permutation(28)])
        labels = np.array([int(v[1]) % 4 for v in ids])
        per_stream[name] = (rng.dirichlet(np.ones(6), 28), ids, labels)
    video_level = {n: scores.video_scores(*s) for n, s in per_stream.items()}
    fusions = ev.default_fusions(list(per_stream))
    assert fusions == [("frame", "flow"), ("frame", "avd_rgb"), ("flow", "avd_rgb"), ("frame", "flow", "avd_rgb")]
    weights = {"frame": 1.0, "flow": 1.5, "avd_rgb": 2.0}
    for fuse, w in (("mean", None), ("weighted", weights)):
        results, outputs = ev.score_streams(video_level, fuse=fuse, weights=w, fusions=fusions)
        expected = _numpy_expected(per_stream, fusions, w)
        for key, (top1, top5) in expected.items():
            entry = results["streams"].get(key) or results["fusions"][key]
            assert entry["num_videos"] == 7
            assert entry["top1"] == pytest.approx(top1)
            assert entry["top5"] == pytest.approx(top5)
    assert results["fusions"]["frame+flow"]["weights"] == pytest.approx({"frame": 0.4, "flow": 0.6})


def test_parse_fusions():
    streams = ["flow", "avd_flow", "avd_rgb"]
    assert ev.parse_fusions("flow+avd_flow+avd_rgb, avd_flow+avd_rgb", streams) == [
        ("flow", "avd_flow", "avd_rgb"), ("avd_flow", "avd_rgb")]
    with pytest.raises(ValueError, match="names 'frame', not among the evaluated streams"):
        ev.parse_fusions("frame+flow", streams)
    with pytest.raises(ValueError, match="two or more different streams"):
        ev.parse_fusions("flow+flow", streams)


def test_read_label_map(tmp_path):
    data = ["punch", "pullup", "golf"]
    assert ev.read_label_map("name", CLASSES, data) == {0: 1}
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"pullup": "Walk", "punch": "Punch"}))
    assert ev.read_label_map(str(path), CLASSES, data) == {0: 1, 1: 2}
    path.write_text(json.dumps({"pullup": "PullUps"}))
    with pytest.raises(ValueError, match="map.json: label map: 'PullUps' is not a class of the model"):
        ev.read_label_map(str(path), CLASSES, data)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="map.json: expected a JSON object"):
        ev.read_label_map(str(path), CLASSES, data)
    with pytest.raises(FileNotFoundError, match="nope.json: label map not found"):
        ev.read_label_map(str(tmp_path / "nope.json"), CLASSES, data)


def test_bad_model_folders_and_arguments(setup, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(FileNotFoundError, match="broken/config.json: no model config"):
        ev.read_model_config(str(broken))
    (broken / "config.json").write_text(json.dumps({"stream": "frame", "classes": CLASSES}))
    with pytest.raises(ValueError, match="broken/config.json: missing keys backbone, input_size, data_dir"):
        ev.read_model_config(str(broken))
    frame, flow = setup["frame"], setup["flow"]
    with pytest.raises(ValueError, match="are both stream 'frame'"):
        ev.evaluate([frame, frame])
    with pytest.raises(ValueError, match="needs one fusion weight per model folder"):
        ev.evaluate([frame, flow], fuse="weighted")
    with pytest.raises(ValueError, match="use --fuse weighted"):
        ev.evaluate([frame, flow], weights=[1, 2])
    other = _data_dir(tmp_path / "other", classes=["golf", "walk_fast"])
    with pytest.raises(ValueError, match="differ from the 2 classes of .*other; pass label_map='name'"):
        ev.evaluate([frame], data_dir=other)
    with pytest.raises(ValueError, match=r"no class of .*other \(2 classes\) matches a class of the model"):
        ev.evaluate([frame], data_dir=other, label_map="name")


def test_evaluate_end_to_end(setup):
    tmp = setup["tmp"]
    log = []
    results = ev.evaluate(
        [setup["frame"], setup["flow"]], split="test", batch_size=5,
        output=str(tmp / "out" / "results.json"), confusion_png=str(tmp / "cm.png"),
        markdown=str(tmp / "table.md"), stream_dirs=setup["stream_dirs"], log=log.append,
    )
    with open(tmp / "out" / "results.json") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(results))
    assert written["classes"] == CLASSES and written["split"] == "test"
    assert set(written["fusions"]) == {"frame+flow"}
    assert open(tmp / "cm.png", "rb").read(4) == b"\x89PNG"
    table = (tmp / "table.md").read_text()
    assert table in log and "| RGB+OF |" in table

    # The same predictions, aggregated with NumPy.
    per_stream = {}
    for name in ("frame", "flow"):
        ds = stream_dataset(setup["stream_dirs"][name], "test", size=SIZE, training=False,
                            batch_size=7, repeat=False)
        per_stream[name] = ev.predict(ev.load_model(setup[name]), ds)
        assert len(per_stream[name][0]) == VIDEOS * CLIPS
    expected = _numpy_expected(per_stream, [("frame", "flow")])
    for name in ("frame", "flow"):
        entry = written["streams"][name]
        assert entry["top1"] == pytest.approx(expected[name][0])
        assert entry["top5"] == 1.0 and entry["num_videos"] == VIDEOS
    assert written["fusions"]["frame+flow"]["top1"] == pytest.approx(expected["frame+flow"][0])
    # The frame model is right on 6 of the 9 videos; the two models differ.
    assert written["streams"]["frame"]["top1"] == pytest.approx(6 / 9)
    assert written["streams"]["flow"]["top1"] != written["streams"]["frame"]["top1"]
    best = max(["frame", "flow", "frame+flow"],
               key=lambda k: (written["streams"].get(k) or written["fusions"][k])["top1"])
    assert written["best"] == best

    # Cross-dataset: the same videos as seen by a dataset whose classes are
    # named "punch", "golf", "fencing": only videos of punch (1 -> Punch) and
    # fencing (2 -> Fencing) count, scored on those two model classes.
    other = _data_dir(tmp / "hmdb", classes=["punch", "golf", "fencing"], dataset="hmdb51")
    cross = ev.evaluate([setup["frame"]], data_dir=other, label_map="name",
                        stream_dirs={"frame": setup["stream_dirs"]["frame"]}, log=log.append)
    assert cross["classes"] == ["punch", "fencing"]
    assert cross["cross_dataset"]["matched_classes"] == [
        {"test": "punch", "model": "Punch"}, {"test": "fencing", "model": "Fencing"}]
    assert cross["cross_dataset"]["test_videos"] == {"frame": VIDEOS}
    assert cross["streams"]["frame"]["num_videos"] == 6
    ids, probs, labels = scores.video_scores(*per_stream["frame"])
    keep = np.isin(labels, [0, 2])
    restricted = probs[keep][:, [1, 0]]  # punch -> Punch (1), fencing -> Fencing (0)
    new_labels = np.where(labels[keep] == 0, 0, 1)
    assert cross["streams"]["frame"]["top1"] == pytest.approx(np.mean(restricted.argmax(1) == new_labels))


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_program(setup):
    tmp = setup["tmp"]
    os.remove(os.path.join(setup["flow"], "config.json"))
    failed = _run("avd_tf.apps.evaluate", "--model_dirs", f"{setup['frame']},{setup['flow']}",
                  "--output", str(tmp / "r.json"))
    assert failed.returncode != 0
    assert "m_flow/config.json: no model config" in failed.stderr
    frame = setup["stream_dirs"]["frame"]
    done = _run("avd_tf.apps.evaluate", "--model_dirs", setup["frame"], "--output", str(tmp / "r.json"),
                "--stream_dirs", f"frame={frame}", "--batch_size", "4", "--progress=false")
    assert done.returncode == 0, done.stderr
    assert "| RGB | **" not in done.stdout and "| RGB | 66.7 |" in done.stdout
    result = json.loads((tmp / "r.json").read_text())
    assert result["streams"]["frame"]["top1"] == pytest.approx(6 / 9) and result["fusions"] == {}


# Protocols


def _settings(tmp_path, ucf_like=None, **kw):
    root = ucf_like or tmp_path
    return protocol.ProtocolSettings(
        dataset="ucf101", video_dir=str(root / "videos"), split_dir=str(root / "splits"),
        work_dir=str(tmp_path / "work"), **kw)


def test_protocol_plan(tmp_path):
    settings = _settings(tmp_path, streams=("frame", "avd_rgb", "avd_flow"), splits=(1, 3),
                         epochs=2, avd_epochs=5, finetune_args=("--batch_size", "8"))
    stages = protocol.plan(settings)
    assert [s.title for s in stages[:6]] == [
        "split1/prepare", "split1/train_rgb", "split1/train_flow", "split1/resnet50/finetune_frame",
        "split1/resnet50/finetune_avd_rgb", "split1/resnet50/finetune_avd_flow"]
    assert [s.title for s in stages[6:8]] == ["split1/resnet50/evaluate", "split3/prepare"]
    assert len(stages) == 14
    work = os.path.abspath(tmp_path / "work")
    assert stages[0].record["flow"] == "tvl1" and stages[0].record["split"] == 1
    assert stages[1].describe() == (
        f"avd-train --data_dir {work}/split1/prepared --stream rgb --preset paper "
        f"--model_dir {work}/split1/avd_rgb --epochs 5")
    assert stages[4].describe() == (
        f"avd-finetune --data_dir {work}/split1/prepared --stream avd_rgb --backbone resnet50 "
        f"--weights imagenet --model_dir {work}/split1/resnet50/avd_rgb "
        f"--avd_model_dir {work}/split1/avd_rgb --epochs 2 --batch_size 8")
    assert stages[6].record["model_dirs"] == [f"{work}/split1/resnet50/{s}" for s in settings.streams]
    # Another backbone shares preparation and AVD models, not fine-tuning.
    alexnet = protocol.plan(dataclasses.replace(settings, backbone="alexnet"))
    assert [a.marker == s.marker for a, s in zip(alexnet, stages)][:8] == [True] * 3 + [False] * 4 + [True]
    assert protocol.plan(_settings(tmp_path, streams=("frame", "avd_rgb")))[0].record["flow"] == "none"
    kinetics = protocol.ProtocolSettings("kinetics", "v", "s", str(tmp_path), streams=("frame",))
    assert [s.title for s in protocol.plan(kinetics)] == [
        "validation/prepare", "validation/resnet50/finetune_frame", "validation/resnet50/evaluate"]
    with pytest.raises(ValueError, match="one train/validation run"):
        protocol.ProtocolSettings("kinetics", "v", "s", "w", splits=(1,))
    with pytest.raises(ValueError, match="splits must be distinct values of 1, 2, 3"):
        _settings(tmp_path, splits=(1, 4))
    with pytest.raises(ValueError, match="2 streams but 1 fusion weights"):
        _settings(tmp_path, streams=("frame", "flow"), fusion_weights=(1.0,))


def test_protocol_average():
    def entry(top1, top5, n):
        return {"top1": top1, "top5": top5, "num_videos": n}

    runs = {
        "split1": {"dataset": "ucf101", "streams": {"frame": entry(0.5, 0.9, 10), "flow": entry(0.7, 1.0, 10)},
                   "fusions": {"frame+flow": entry(0.8, 1.0, 10)}},
        "split2": {"dataset": "ucf101", "streams": {"frame": entry(0.6, 0.8, 12), "flow": entry(0.9, 1.0, 12)},
                   "fusions": {"frame+flow": entry(1.0, 1.0, 12)}},
    }
    mean = protocol.average_results(runs)
    assert mean["streams"]["frame"] == {"top1": pytest.approx(0.55), "top5": pytest.approx(0.85),
                                        "num_videos": 22, "top1_per_split": [0.5, 0.6]}
    assert mean["fusions"]["frame+flow"]["top1"] == pytest.approx(0.9)
    assert mean["num_splits"] == 2


def test_protocol_end_to_end(tmp_path, ucf_like):
    """prepare (real) -> fine-tuned model adopted into its stage folder -> evaluate -> protocol.json."""
    settings = _settings(tmp_path, ucf_like, streams=("frame",), splits=(1,), size=32, backbone="tiny",
                         weights="none", epochs=1)
    assert [s["done"] for s in protocol.run_protocol(settings, dry_run=True, log=lambda _: None)["stages"]] == [
        False, False, False]
    assert not os.path.exists(tmp_path / "work")
    stages = protocol.plan(settings)
    prepare, finetune, _ = stages
    Runner(log=lambda _: None).run_one(prepare)
    assert stage_done(prepare)
    kernel = np.array([[4.0, -4.0], [0.0, 0.0], [-4.0, 4.0]])
    _model_dir(finetune.folder, _tiny_model(3, kernel), "frame", prepare.folder, ["MoveLeft", "MoveRight"])
    with pytest.raises(StageError, match="cannot mark it finished, missing"):
        write_marker(stages[2])
    write_marker(finetune)
    log = []
    summary = protocol.run_protocol(settings, log=log.append)
    assert "[split1/prepare] done already, skipped" in log
    assert "[split1/tiny/finetune_frame] done already, skipped" in log
    results = json.loads((tmp_path / "work" / "split1" / "tiny" / "results.json").read_text())
    assert results["streams"]["frame"]["num_videos"] == 2
    assert summary["mean"]["streams"]["frame"]["top1"] == results["streams"]["frame"]["top1"]
    assert protocol.protocol_path(settings) == str(tmp_path / "work" / "protocol_tiny.json")
    written = json.loads((tmp_path / "work" / "protocol_tiny.json").read_text())
    assert written["splits"]["split1"]["streams"] == results["streams"]
    assert "| RGB |" in (tmp_path / "work" / "protocol_tiny.md").read_text()
    assert os.path.exists(tmp_path / "work" / "split1" / "tiny" / "confusion.png")

    # Re-running with other preparation settings refuses the finished folder;
    # another fusion setting only redoes the evaluation.
    with pytest.raises(StageError, match="split1/prepare was run with other settings \\(size differ"):
        protocol.run_protocol(_settings(tmp_path, ucf_like, streams=("frame",), splits=(1,), size=48,
                                        backbone="tiny", weights="none", epochs=1))
    assert not stage_done(protocol.plan(_settings(
        tmp_path, ucf_like, streams=("frame",), splits=(1,), size=32, backbone="tiny", weights="none",
        epochs=1, batch_size=2))[2])


@pytest.mark.slow
def test_protocol_program_reports_a_failing_stage(tmp_path, ucf_like):
    """A real subprocess stage: avd-finetune refuses an unknown backbone, the protocol stops there."""
    out = _run("avd_tf.apps.protocol", "--dataset", "ucf101", "--video_dir", str(ucf_like / "videos"),
               "--split_dir", str(ucf_like / "splits"), "--work_dir", str(tmp_path / "work"),
               "--streams", "frame", "--splits", "1", "--size", "32", "--backbone", "no_such_net",
               "--workers", "1", "--progress=false")
    assert out.returncode != 0
    assert "split1/no_such_net/finetune_frame: `avd-finetune --data_dir" in out.stderr
    assert "exited with status" in out.stderr
    assert os.path.exists(tmp_path / "work" / "split1" / ".stages" / "prepare.json")
    assert not os.path.exists(tmp_path / "work" / "split1" / ".stages" / "no_such_net_finetune_frame.json")
