"""Image streams (avd_tf.streams, classify.stream_images and stream_cache, inputs.images) on a tiny dataset prepared in the test (real videos, TV-L1 flow).

Two motion classes, three videos each (two train, one test), 22 frames of
32x32, written with cv2.VideoWriter and prepared by avd_tf.records.prepare.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from avd_tf import streams
from avd_tf.classify import dynamic_images as di
from avd_tf.classify.stream_cache import default_cache_dir, ensure_stream
from avd_tf.inputs.images import num_images, stream_dataset, stream_info
from avd_tf.layout import STREAM_INFO
from avd_tf.records import images, schema
from conftest import prepared_motion_videos

CLASSES = ["TranslateLeft", "TranslateRight"]
FRAMES, SIZE = 22, 32
LOCAL_STREAMS = [s for s in streams.STREAMS if s not in streams.AVD_STREAMS]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The videos, prepared with TV-L1 flow."""
    return prepared_motion_videos(tmp_path_factory.mktemp("streams"), CLASSES, FRAMES, SIZE)


def read_records(stream_dir, split):
    files = sorted(tf.io.gfile.glob(os.path.join(stream_dir, f"{split}-*-of-*.tfrecord")))
    return list(tf.data.TFRecordDataset(files).map(images.parse).as_numpy_iterator())


def decoded_videos(data_dir, split):
    """{video_id: (label, rgb uint8 [N,H,W,3], flow uint8 [N-1,H,W,2])} decoded with TF."""
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*-of-*.tfrecord")))
    videos = {}
    for record in tf.data.TFRecordDataset(files):
        video = schema.parse(record)
        rgb = np.stack([tf.io.decode_jpeg(f, channels=3).numpy() for f in video[schema.IMAGE]])
        flow = np.stack([np.concatenate([tf.io.decode_jpeg(x, channels=1).numpy(),
                                         tf.io.decode_jpeg(y, channels=1).numpy()], axis=-1)
                         for x, y in zip(video[schema.FLOW_X], video[schema.FLOW_Y])])
        videos[video[schema.VIDEO_ID].numpy()] = (int(video[schema.LABEL_INDEX]), rgb, flow)
    return videos


def expected_count(stream, frames):
    if stream in ("frame", "flow"):
        return 8
    length = frames if stream in ("mean", "dynamic") else frames - 1
    return len(di.window_starts(length, 10, 6))


def test_registry():
    assert [streams.get(s).channels for s in streams.STREAMS] == [3, 2, 3, 3, 2, 3, 3]
    with pytest.raises(ValueError, match="unknown stream 'rgb'"):
        streams.get("rgb")
    assert streams.AVD_STREAMS == ("avd_rgb", "avd_flow")
    assert [streams.avd_input(s) for s in streams.STREAMS] == [None] * 5 + ["rgb", "flow"]
    assert [streams.avd_stream(s) for s in streams.CLIP_CHANNELS] == ["avd_rgb", "avd_flow"]
    with pytest.raises(ValueError, match="unknown clip stream 'avd_rgb'"):
        streams.avd_stream("avd_rgb")
    # Computed from flow (avd-prepare must make it) vs images whose channels are flow x, y.
    assert [s for s in streams.STREAMS if streams.needs_flow([s])] == [
        "flow", "dynamic_flow", "avd_flow"]
    assert [s for s in streams.STREAMS if streams.get(s).flow_channels] == ["flow", "dynamic_flow"]
    assert streams.MIRRORED_STREAMS == ("dynamic_flow", "avd_rgb", "avd_flow")
    streams.check_avd_model("frame", None)
    with pytest.raises(ValueError, match="'avd_flow' needs avd_model_dir .* avd-train --stream flow"):
        streams.check_avd_model("avd_flow", "")


@pytest.mark.parametrize("stream", LOCAL_STREAMS)
def test_every_stream_builds(data_dir, stream):
    stream_dir = ensure_stream(data_dir, stream, progress=False)
    assert stream_dir == os.path.join(os.path.abspath(data_dir), "streams", stream)
    info = stream_info(stream_dir)
    channels = streams.get(stream).channels
    assert info["stream"] == stream and info["channels"] == channels
    assert info["classes"] == CLASSES
    with open(os.path.join(data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    for split in ("train", "test"):
        listed = {v["id"]: v for v in manifest["videos"][split]}
        records = read_records(stream_dir, split)
        per_video = {}
        for record in records:
            assert record["image"].dtype == np.uint8
            assert record["image"].shape == (SIZE, SIZE, channels)
            video = listed[record["video_id"].decode()]
            assert record["label"] == video["label"]
            per_video.setdefault(record["video_id"].decode(), []).append(int(record["clip_index"]))
        assert set(per_video) == set(listed)
        for video_id, indices in per_video.items():
            count = expected_count(stream, listed[video_id]["frames"])
            assert indices == list(range(count)), video_id
        assert info["splits"][split] == {"videos": len(listed), "images": len(records)}
    # Images are stored PNG-encoded, and the cache says what one costs.
    raw = SIZE * SIZE * channels * (2 if stream in streams.MIRRORED_STREAMS else 1)
    assert 0 < info["bytes_per_image"] < raw + 300
    shards = sorted(glob.glob(os.path.join(stream_dir, "train-*.tfrecord")))
    first = next(iter(tf.data.TFRecordDataset(shards))).numpy()
    example = tf.train.Example.FromString(first)
    assert example.features.feature[images.IMAGE].bytes_list.value[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_images_match_numpy_reference(data_dir):
    """Each stream's images recomputed from the decoded frames with NumPy, exactly."""
    video_id, (_, rgb, flow) = sorted(decoded_videos(data_dir, "train").items())[0]
    assert len(rgb) == FRAMES and len(flow) == FRAMES - 1

    def image(stream, index):
        records = read_records(ensure_stream(data_dir, stream, progress=False), "train")
        return next(r["image"] for r in records
                    if r["video_id"] == video_id and r["clip_index"] == index)

    picks = [21 * i // 7 for i in range(8)]  # evenly spaced over 22 frames, ends included
    np.testing.assert_array_equal(image("frame", 3), rgb[picks[3]])
    np.testing.assert_array_equal(image("flow", 5), flow[20 * 5 // 7])
    np.testing.assert_array_equal(image("dynamic", 1), di.to_uint8(di.dynamic_image(rgb[6:16])))
    np.testing.assert_array_equal(image("mean", 2), np.rint(rgb[12:22].mean(axis=0)))
    signed = flow[6:16].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(image("dynamic_flow", 1), di.to_uint8(di.dynamic_image(signed)))


def test_cache_reused_recomputed_and_partial_never_read(data_dir, tmp_path):
    cache = str(tmp_path / "frames")
    info_path = os.path.join(cache, STREAM_INFO)
    assert ensure_stream(data_dir, "frame", cache_dir=cache, progress=False) == cache
    first = os.stat(info_path).st_mtime_ns
    assert ensure_stream(data_dir, "frame", cache_dir=cache, progress=False) == cache
    assert os.stat(info_path).st_mtime_ns == first  # reused, not recomputed

    ensure_stream(data_dir, "frame", cache_dir=cache, frames_per_video=3, progress=False)
    assert stream_info(cache)["parameters"]["frames_per_video"] == 3
    assert num_images(cache, "train") == 4 * 3
    assert os.stat(info_path).st_mtime_ns != first

    # A killed computation: shards but no stream.json, plus a stray shard, and
    # the temporary folder of a process that no longer exists.
    os.remove(info_path)
    os.makedirs(tmp_path / "frames.partial-999999999-0a1b2c3d")
    stray = os.path.join(cache, "train-00000-of-00009.tfrecord")
    with open(stray, "wb") as f:
        f.write(b"not a record")
    with pytest.raises(FileNotFoundError, match="stream.json"):
        stream_dataset(cache, "train", size=16, training=False, batch_size=2)
    ensure_stream(data_dir, "frame", cache_dir=cache, frames_per_video=3, progress=False)
    assert not os.path.exists(stray)
    assert len(read_records(cache, "train")) == 4 * 3
    assert [p for p in os.listdir(tmp_path) if p != "frames"] == []  # no temporary folder left


def test_stream_dataset_evaluation(data_dir):
    stream_dir = ensure_stream(data_dir, "dynamic", progress=False)
    records = read_records(stream_dir, "test")
    ds = stream_dataset(stream_dir, "test", size=SIZE, training=False, batch_size=3)
    batches = list(ds.as_numpy_iterator())
    assert sum(len(b["label"]) for b in batches) == len(records)  # one pass
    first = batches[0]
    assert first["image"].dtype == np.float32 and first["image"].shape == (3, SIZE, SIZE, 3)
    assert first["label"].dtype == np.int32 and first["clip_index"].dtype == np.int32
    # Same size: the centre crop is the whole image, so this is q / 127.5 - 1.
    np.testing.assert_allclose(first["image"][0], records[0]["image"] / 127.5 - 1.0, atol=1e-5)
    assert first["video_id"][0] == records[0]["video_id"]
    again = next(iter(ds.as_numpy_iterator()))
    np.testing.assert_array_equal(again["image"], first["image"])
    small = next(iter(stream_dataset(stream_dir, "test", size=16, training=False,
                                     batch_size=2)))
    assert small["image"].shape == (2, 16, 16, 3)


def take(ds, n):
    return [b for _, b in zip(range(n), ds.as_numpy_iterator())]


def test_training_is_seeded_and_augmented(data_dir):
    stream_dir = ensure_stream(data_dir, "dynamic", progress=False)

    def batches(seed):
        return take(stream_dataset(stream_dir, "train", size=24, training=True,
                                   batch_size=4, seed=seed), 3)

    a, b, c = batches(3), batches(3), batches(4)
    assert a[0]["image"].shape == (4, 24, 24, 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["video_id"], y["video_id"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))
    # Repeated: more images than the split holds.
    assert len(take(stream_dataset(stream_dir, "train", size=24, training=True,
                                   batch_size=4, seed=1), 6)) == 6


@pytest.mark.parametrize("stream,negate_x", [("flow", True), ("dynamic", False)])
def test_flip(data_dir, stream, negate_x):
    """With no size jitter and the stored size, a training image is the image or its flip."""
    stream_dir = ensure_stream(data_dir, stream, progress=False)
    reference = {}
    for batch in stream_dataset(stream_dir, "train", size=SIZE, training=False,
                                batch_size=8).as_numpy_iterator():
        for image, video_id, index in zip(batch["image"], batch["video_id"], batch["clip_index"]):
            reference[video_id, index] = image
    ds = stream_dataset(stream_dir, "train", size=SIZE, training=True, batch_size=8,
                        seed=0, scale_range=(1.0, 1.0))
    flipped = kept = 0
    for batch in take(ds, 4):
        for image, video_id, index in zip(batch["image"], batch["video_id"], batch["clip_index"]):
            original = reference[video_id, index]
            mirror = original[:, ::-1]
            if negate_x:
                mirror = mirror * np.array([-1.0, 1.0], np.float32)
                assert not np.allclose(mirror, original[:, ::-1], atol=1e-3)
            if np.allclose(image, original, atol=1e-5):
                kept += 1
            else:
                np.testing.assert_allclose(image, mirror, atol=1e-5)
                flipped += 1
    assert flipped > 0 and kept > 0


def test_avd_streams_need_a_model(data_dir, tmp_path):
    with pytest.raises(ValueError, match="needs avd_model_dir"):
        ensure_stream(data_dir, "avd_rgb", progress=False)
    with pytest.raises(FileNotFoundError, match="no such AVD model folder"):
        ensure_stream(data_dir, "avd_flow", avd_model_dir=str(tmp_path / "missing"))
    model_dir = tmp_path / "avd"
    model_dir.mkdir()
    (model_dir / "model.keras").write_bytes(b"first")
    before = default_cache_dir(data_dir, "avd_rgb", str(model_dir))
    assert os.path.basename(before).startswith("avd_rgb-")
    (model_dir / "model.keras").write_bytes(b"retrained")
    assert default_cache_dir(data_dir, "avd_rgb", str(model_dir)) != before


@pytest.mark.parametrize("stream", streams.AVD_STREAMS)
def test_avd_streams(data_dir, tmp_path, stream):
    try:
        from avd_tf.models import distill  # noqa: F401
    except ImportError:
        pytest.skip("avd_tf.models.distill not available yet")
    from avd_tf.models import build_avd

    # An untrained AVD model in the layout avd-train writes: distillation only
    # needs E's weights, whatever they are.
    model_dir = tmp_path / "avd"
    model_dir.mkdir()
    source = streams.avd_input(stream)
    build_avd("small", stream=source, image_size=SIZE).encoder.save(model_dir / "encoder.keras")
    (model_dir / "config.json").write_text(json.dumps({"stream": source, "preset": "small",
                                                       "image_size": SIZE}))
    stream_dir = ensure_stream(data_dir, stream, avd_model_dir=str(model_dir),
                               clips_per_video=2, progress=False)
    assert os.path.basename(stream_dir).startswith(f"{stream}-")
    info = stream_info(stream_dir)
    assert info["channels"] == 3 and info["splits"]["train"]["videos"] == 4
    batch = next(iter(stream_dataset(stream_dir, "train", size=SIZE, training=True,
                                     batch_size=2, seed=0)))
    assert batch["image"].shape == (2, SIZE, SIZE, 3)
    other = "avd_flow" if stream == "avd_rgb" else "avd_rgb"
    with pytest.raises(ValueError, match=f"distils the '{stream}' stream, not '{other}'"):
        ensure_stream(data_dir, other, avd_model_dir=str(model_dir), progress=False)
