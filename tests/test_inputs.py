"""avd_tf.inputs on real tiny shards written with schema.serialize.

RGB frame i of every video is a uniform grey of level 8 * i, and flow frame i
has x = -10 + i px and y = 6 - i px everywhere, so a decoded clip tells which
frames it holds and in which order.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from avd_tf import inputs
from avd_tf.inputs import augment, sampling
from avd_tf.inputs import clips as clips_module
from avd_tf.records import schema

HEIGHT, WIDTH, SIZE = 24, 32, 16
TRAIN_LENGTHS = {"tr_a": 5, "tr_b": 12, "tr_c": 20, "tr_d": 9, "tr_e": 16, "tr_f": 7}
TEST_LENGTHS = {"te_a": 20, "te_b": 5}
CLASSES = ["left", "right", "zoom"]
JPEG_TOLERANCE = 3 / 255 * 2


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def grey(index: int) -> float:
    """Frame `index`'s value in [-1, 1]."""
    return 8 * index / 255 * 2 - 1


def flow_x(index: int) -> float:
    return -10.0 + index


def flow_y(index: int) -> float:
    return 6.0 - index


def _quantise(v: float) -> int:
    return int(round(255 * (np.clip(v, -20, 20) + 20) / 40))


def _video(video_id: str, label: int, length: int, flow: bool = True) -> bytes:
    frames = [_jpeg(np.full((HEIGHT, WIDTH, 3), 8 * i, np.uint8)) for i in range(length)]
    fx, fy = [], []
    if flow:
        for i in range(length - 1):
            fx.append(_jpeg(np.full((HEIGHT, WIDTH), _quantise(flow_x(i)), np.uint8)))
            fy.append(_jpeg(np.full((HEIGHT, WIDTH), _quantise(flow_y(i)), np.uint8)))
    return schema.serialize(
        schema.EncodedVideo(video_id=video_id, label=label, label_name=CLASSES[label],
                            height=HEIGHT, width=WIDTH, fps=25.0, frames=frames,
                            flow_x=fx, flow_y=fy)
    )


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def label_of(video_id: str) -> int:
    return sorted({**TRAIN_LENGTHS, **TEST_LENGTHS}).index(video_id) % len(CLASSES)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    train = [_video(v, label_of(v), n) for v, n in TRAIN_LENGTHS.items()]
    _write(root / "train-00000-of-00002.tfrecord", train[:3])
    _write(root / "train-00001-of-00002.tfrecord", train[3:])
    _write(root / "test-00000-of-00001.tfrecord",
           [_video(v, label_of(v), n) for v, n in TEST_LENGTHS.items()])
    _write(root / "noflow-00000-of-00001.tfrecord", [_video("nf_a", 0, 6, flow=False)])
    # Shards still being written: unreadable garbage that must never be opened.
    (root / "train-00002-of-00003.tfrecord.tmp").write_bytes(b"not a record")
    (root / "test-00000-of-00002.tmp.tfrecord").write_bytes(b"not a record")
    (root / "manifest.json").write_text(json.dumps(
        {"classes": CLASSES, "splits": {"train": {"videos": 6}, "test": {}}}))
    return str(root)


def _all(dataset) -> dict:
    """Concatenates every batch of a finite dataset into numpy arrays."""
    batches = list(dataset.as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _frame_indices(clip: np.ndarray) -> list[int]:
    """Which grey frames a (T, S, S, 3) clip shows."""
    return [int(round((f.mean() + 1) / 2 * 255 / 8)) for f in clip]


# --- shards and manifest ---------------------------------------------------

def test_list_shards_ignores_temporary_files(data_dir):
    names = [p.rsplit("/", 1)[-1] for p in inputs.list_shards(data_dir, "train")]
    assert names == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert [p.rsplit("/", 1)[-1] for p in inputs.list_shards(data_dir, "test")] == [
        "test-00000-of-00001.tfrecord"]


def test_missing_split_or_folder_raises_clear_error(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="split 'val'.*avd-prepare") as info:
        inputs.clip_dataset(data_dir, "val")
    assert data_dir in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        inputs.list_shards(str(tmp_path / "absent"), "train")


def test_manifest_and_class_names(data_dir, tmp_path):
    assert inputs.class_names(data_dir) == CLASSES
    assert inputs.num_videos(data_dir, "train") == 6
    assert inputs.num_videos(data_dir, "test") == 2  # counted: the manifest gives no count
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        inputs.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        inputs.read_manifest(str(tmp_path))


def test_video_dataset_parses_every_video(data_dir):
    videos = {v["video/id"].decode(): v for v in inputs.video_dataset(data_dir, "train")
              .as_numpy_iterator()}
    assert {k: len(v["image/encoded"]) for k, v in videos.items()} == TRAIN_LENGTHS
    assert all(len(v["flow/x/encoded"]) == TRAIN_LENGTHS[k] - 1 for k, v in videos.items())


# --- sampling --------------------------------------------------------------

def test_short_video_is_looped():
    indices = sampling.clip_indices(tf.constant([0]), 5, num_frames=8)
    assert indices.numpy().tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]
    strided = sampling.clip_indices(tf.constant([3]), 9, num_frames=4, frame_stride=2)
    assert strided.numpy().tolist() == [[3, 5, 7, 0]]


def test_evenly_spaced_and_random_starts():
    span = sampling.clip_span(4, frame_stride=2)
    assert span == 7
    assert sampling.evenly_spaced_starts(20, 3, span).numpy().tolist() == [0, 6, 13]
    assert sampling.evenly_spaced_starts(20, 1, span).numpy().tolist() == [6]
    assert sampling.evenly_spaced_starts(4, 2, span).numpy().tolist() == [0, 0]
    starts = sampling.random_starts(20, 200, span, seed=[1, 2]).numpy()
    assert starts.min() == 0 and starts.max() == 13
    assert np.array_equal(starts, sampling.random_starts(20, 200, span, seed=[1, 2]).numpy())


# --- evaluation clips ------------------------------------------------------

def test_eval_rgb_clips_round_trip(data_dir):
    out = _all(inputs.clip_dataset(data_dir, "train", num_frames=4, size=SIZE, batch_size=4))
    assert out["clip"].shape == (6, 4, SIZE, SIZE, 3) and out["clip"].dtype == np.float32
    assert out["label"].dtype == np.int32 and out["clip_index"].tolist() == [0] * 6
    ids = [v.decode() for v in out["video_id"]]
    assert sorted(ids) == sorted(TRAIN_LENGTHS)
    for video_id, label, clip in zip(ids, out["label"], out["clip"]):
        assert label == label_of(video_id)
        n = TRAIN_LENGTHS[video_id]
        start = max(n - 4, 0) // 2
        expected = np.array([grey((start + j) % n) for j in range(4)])
        error = np.abs(clip - expected[:, None, None, None]).mean(axis=(1, 2, 3))
        assert (error < JPEG_TOLERANCE).all(), (video_id, error)


def test_eval_loops_short_video_through_the_pipeline(data_dir):
    out = _all(inputs.clip_dataset(data_dir, "test", num_frames=8, size=SIZE, batch_size=2))
    clip = out["clip"][[v.decode() for v in out["video_id"]].index("te_b")]
    assert _frame_indices(clip) == [0, 1, 2, 3, 4, 0, 1, 2]


def test_eval_clips_evenly_spaced_and_deterministic(data_dir):
    def run():
        return _all(inputs.clip_dataset(data_dir, "test", num_frames=4, size=SIZE,
                                        clips_per_video=3, batch_size=4))

    first, second = run(), run()
    for key in first:
        assert np.array_equal(first[key], second[key])
    starts = {}
    for video_id, index, clip in zip(first["video_id"], first["clip_index"], first["clip"]):
        indices = _frame_indices(clip)
        assert indices == [(indices[0] + j) % TEST_LENGTHS[video_id.decode()] for j in range(4)]
        starts[video_id.decode(), int(index)] = indices[0]
    assert starts == {("te_a", 0): 0, ("te_a", 1): 8, ("te_a", 2): 16,
                      ("te_b", 0): 0, ("te_b", 1): 0, ("te_b", 2): 1}


def test_eval_frames_evenly_spaced(data_dir):
    out = _all(inputs.frame_dataset(data_dir, "test", size=SIZE, frames_per_video=3,
                                    batch_size=4))
    assert out["image"].shape == (6, SIZE, SIZE, 3)
    got = {(v.decode(), int(i)): _frame_indices(img[None])[0]
           for v, i, img in zip(out["video_id"], out["clip_index"], out["image"])}
    assert got == {("te_a", 0): 0, ("te_a", 1): 9, ("te_a", 2): 19,
                   ("te_b", 0): 0, ("te_b", 1): 2, ("te_b", 2): 4}


def test_flow_clips_decode_to_v_over_20(data_dir):
    out = _all(inputs.clip_dataset(data_dir, "test", stream="flow", num_frames=3, size=SIZE,
                                   batch_size=2))
    assert out["clip"].shape == (2, 3, SIZE, SIZE, 2)
    for video_id, clip in zip(out["video_id"], out["clip"]):
        flow_frames = TEST_LENGTHS[video_id.decode()] - 1
        start = max(flow_frames - 3, 0) // 2
        for j, frame in enumerate(clip):
            i = (start + j) % flow_frames
            np.testing.assert_allclose(frame[..., 0], flow_x(i) / 20, atol=0.01)
            np.testing.assert_allclose(frame[..., 1], flow_y(i) / 20, atol=0.01)


def test_flow_of_video_without_flow_names_it(data_dir):
    dataset = inputs.clip_dataset(data_dir, "noflow", stream="flow", num_frames=2, size=SIZE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="nf_a.*no optical flow"):
        list(dataset)


def test_bad_arguments_raise(data_dir):
    with pytest.raises(ValueError, match="stream"):
        inputs.clip_dataset(data_dir, "train", stream="depth")
    with pytest.raises(ValueError, match="num_frames"):
        inputs.clip_dataset(data_dir, "train", num_frames=0)
    with pytest.raises(ValueError, match="scale_range"):
        inputs.clip_dataset(data_dir, "train", training=True, scale_range=(0.8, 1.2))


# --- training clips --------------------------------------------------------

def _training(data_dir, seed, cache=False):
    return inputs.clip_dataset(data_dir, "train", num_frames=4, frame_stride=2, size=SIZE,
                               training=True, batch_size=2, seed=seed, repeat=False,
                               cache=cache)


def _epoch(dataset) -> list:
    """(video id, frame indices) of every clip of one pass, in order."""
    out = _all(dataset)
    return [(v.decode(), _frame_indices(c)) for v, c in zip(out["video_id"], out["clip"])]


def test_training_clips_are_strided_and_cover_each_video_once(data_dir):
    clips = _epoch(_training(data_dir, seed=1))
    assert sorted(v for v, _ in clips) == sorted(TRAIN_LENGTHS)
    for video_id, indices in clips:
        n = TRAIN_LENGTHS[video_id]
        assert indices == [(indices[0] + 2 * j) % n for j in range(4)]
        assert indices[0] <= max(n - 7, 0)


def test_training_is_deterministic_with_a_seed_and_random_without(data_dir):
    seeded = _training(data_dir, seed=5)
    first = _epoch(seeded)
    assert first == _epoch(_training(data_dir, seed=5))
    assert first == _epoch(_training(data_dir, seed=5, cache=True))
    # Epochs differ: a new pass reshuffles and redraws starts.
    assert first != _epoch(seeded)
    assert _epoch(_training(data_dir, seed=None)) != _epoch(_training(data_dir, seed=None))


def test_interleave_leaves_order_to_the_pipeline_options(tmp_path):
    """The shard interleave sets no `deterministic` of its own, so
    `options.deterministic=False` (faster, unordered) reaches it."""
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"train-{i}.tfrecord"))
        with tf.io.TFRecordWriter(paths[-1]) as writer:
            writer.write(b"record")
    records = clips_module.shard_records(paths, 0, shuffle=True)
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(
        tf.raw_ops.DatasetToGraphV2(input_dataset=records._variant_tensor).numpy())
    interleaves = [node for node in graph.node if "Interleave" in node.op]
    assert interleaves and all(node.attr["deterministic"].s == b"default"
                               for node in interleaves)


def test_training_batches_repeat_and_drop_remainder(data_dir):
    dataset = inputs.clip_dataset(data_dir, "train", stream="flow", num_frames=4, size=SIZE,
                                  training=True, batch_size=4, seed=0)
    shapes = [b["clip"].shape for b in dataset.take(4)]
    assert shapes == [(4, 4, SIZE, SIZE, 2)] * 4  # 6 videos: only repeating gives 4 full batches


# --- augmentation ----------------------------------------------------------

def _flow_clip() -> tf.Tensor:
    """(2, 4, 6, 2) flow: x = 0.5 everywhere, y a ramp across the width."""
    y = np.broadcast_to(np.linspace(-0.5, 0.5, 6, dtype=np.float32), (2, 4, 6))
    return tf.constant(np.stack([np.full_like(y, 0.5), y], axis=-1))


def test_flip_negates_flow_x_only():
    clip = _flow_clip()
    flipped = augment.flip_left_right(clip, flow=True).numpy()
    np.testing.assert_array_equal(flipped[..., 0], -0.5)
    np.testing.assert_array_equal(flipped[..., 1], clip.numpy()[:, :, ::-1, 1])
    rgb = augment.flip_left_right(clip).numpy()
    np.testing.assert_array_equal(rgb, clip.numpy()[:, :, ::-1])


def test_random_flip_flips_half_the_time_and_is_seeded():
    clip = _flow_clip()
    flipped = 0
    for i in range(32):
        out = augment.random_flip(clip, [i, 7], flow=True).numpy()
        np.testing.assert_array_equal(out, augment.random_flip(clip, [i, 7], flow=True).numpy())
        if out[0, 0, 0, 0] < 0:
            flipped += 1
            np.testing.assert_array_equal(out[..., 1], clip.numpy()[:, :, ::-1, 1])
        else:
            np.testing.assert_array_equal(out, clip.numpy())
    assert 4 <= flipped <= 28


def test_augment_clip_uses_one_draw_for_all_frames():
    rng = np.random.default_rng(0)
    frame = rng.uniform(-1, 1, (HEIGHT, WIDTH, 3)).astype(np.float32)
    clip = tf.constant(np.stack([frame] * 4))
    outs = [augment.augment_clip(clip, SIZE, [s, 0]).numpy() for s in range(6)]
    for out in outs:
        assert out.shape == (4, SIZE, SIZE, 3)
        assert out.min() >= -1 and out.max() <= 1
        assert all(np.array_equal(out[0], out[t]) for t in range(1, 4))
    np.testing.assert_array_equal(outs[0], augment.augment_clip(clip, SIZE, [0, 0]).numpy())
    assert any(not np.allclose(outs[0], o) for o in outs[1:])
    flow = augment.augment_clip(_flow_clip(), 3, [1, 1], flow=True).numpy()
    np.testing.assert_allclose(np.abs(flow[..., 0]), 0.5, atol=1e-6)


def test_scale_range_sets_the_crop():
    ramp = np.broadcast_to(np.linspace(-1, 1, 40, dtype=np.float32)[None, :, None],
                           (40, 40, 1))
    clip = tf.constant(np.stack([ramp] * 2))
    full = augment.center_crop_resize(clip, SIZE).numpy()
    np.testing.assert_allclose(
        augment.random_crop_resize(clip, SIZE, [3, 4], scale_range=(1.0, 1.0)).numpy(), full,
        atol=1e-6)
    zoomed = augment.random_crop_resize(clip, SIZE, [3, 4], scale_range=(1.25, 1.25)).numpy()
    assert np.ptp(zoomed[0, 0]) < 0.85 * np.ptp(full[0, 0])


def test_to_signed_unit_maps_flow_quantisation_to_v_over_20():
    q = tf.constant([_quantise(v) for v in (-20, -10, 0, 7.5, 20)], tf.uint8)
    np.testing.assert_allclose(augment.to_signed_unit(q).numpy(),
                               np.array([-20, -10, 0, 7.5, 20]) / 20, atol=1 / 255 + 1e-6)  # half a step


# --- AVD pairs and throughput ----------------------------------------------

def test_avd_dataset_training_pairs(data_dir):
    dataset = inputs.avd_dataset(data_dir, stream="flow", num_frames=4, size=SIZE, batch_size=4,
                                 seed=2)
    for clips, real in dataset.take(3):
        assert clips.shape == (4, 4, SIZE, SIZE, 2) and clips.dtype == tf.float32
        assert real.shape == (4, SIZE, SIZE, 3) and real.dtype == tf.float32


def test_avd_dataset_evaluation_is_finite_and_reads_clips_only(data_dir):
    batches = list(inputs.avd_dataset(data_dir, "test", num_frames=4, size=SIZE, batch_size=4,
                                      training=False))
    assert [c.shape for c in batches] == [(2, 4, SIZE, SIZE, 3)]


# Videos told apart by colour: video v's RGB frames have blue BLUE[v] and
# green 8 * i on frame i; its flow has x = FLOW_X[v] px everywhere.
BLUE = (20, 70, 120, 170)
FLOW_X = (-12.0, -4.0, 4.0, 12.0)
COLOURED_LENGTHS = (6, 9, 12, 15)


def _coloured_video(v: int) -> bytes:
    frames, fx, fy = [], [], []
    for i in range(COLOURED_LENGTHS[v]):
        bgr = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        bgr[..., 0], bgr[..., 1] = BLUE[v], 8 * i
        frames.append(_jpeg(bgr))
    for _ in range(COLOURED_LENGTHS[v] - 1):
        fx.append(_jpeg(np.full((HEIGHT, WIDTH), _quantise(FLOW_X[v]), np.uint8)))
        fy.append(_jpeg(np.full((HEIGHT, WIDTH), _quantise(0.0), np.uint8)))
    return schema.serialize(schema.EncodedVideo(
        video_id=f"v{v}", label=v % len(CLASSES), label_name=CLASSES[v % len(CLASSES)],
        height=HEIGHT, width=WIDTH, fps=25.0, frames=frames, flow_x=fx, flow_y=fy))


@pytest.fixture(scope="module")
def coloured_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coloured")
    _write(root / "train-00000-of-00002.tfrecord", [_coloured_video(0), _coloured_video(1)])
    _write(root / "train-00001-of-00002.tfrecord", [_coloured_video(2), _coloured_video(3)])
    return str(root)


def _nearest(value: float, levels) -> int:
    return int(np.argmin([abs(value - level) for level in levels]))


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_avd_real_frames_are_single_frames_of_the_next_video(coloured_dir, stream):
    """T's real frame of clip n is a frame of clip n + 1's video, never of the clip's own."""
    args = dict(stream=stream, num_frames=4, size=SIZE, batch_size=3, seed=4, flip="none")
    pairs = list(inputs.avd_dataset(coloured_dir, **args).take(5).as_numpy_iterator())
    clips = np.concatenate([c for c, _ in pairs])
    real = np.concatenate([r for _, r in pairs])
    assert real.shape == (15, SIZE, SIZE, 3)
    if stream == "rgb":
        clip_videos = [_nearest((c[..., 2].mean() + 1) * 127.5, BLUE) for c in clips]
    else:
        clip_videos = [_nearest(c[..., 0].mean() * 20, FLOW_X) for c in clips]
    real_videos = [_nearest((r[..., 2].mean() + 1) * 127.5, BLUE) for r in real]
    assert real_videos[:-1] == clip_videos[1:]
    # The clip's own video only where a pass of the 4 videos ends with the
    # video the next pass starts with (the order depends on the global seed
    # that earlier tests may have set).
    assert all((n + 1) % 4 == 0 for n, (r, c) in enumerate(zip(real_videos, clip_videos))
               if r == c)
    # Any single frame of that video (green 8 i), not always the same one.
    indices = [(r[..., 1].mean() + 1) * 127.5 / 8 for r in real]
    assert all(abs(i - round(i)) < 0.2 for i in indices)
    assert all(round(i) < COLOURED_LENGTHS[v] for i, v in zip(indices, real_videos))
    assert len({round(i) for i in indices}) > 3
    # The same seed gives the same pairs; the clips are clip_dataset's.
    again = list(inputs.avd_dataset(coloured_dir, **args).take(5).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([r for _, r in again]), real)
    alone = inputs.clip_dataset(coloured_dir, "train", stream=stream, num_frames=4, size=SIZE,
                                training=True, batch_size=3, seed=clips_module.sub_seed(4, 10),
                                flip="none")
    np.testing.assert_array_equal(
        np.concatenate([b["clip"] for b in alone.take(5).as_numpy_iterator()]), clips)


def test_measure_throughput(data_dir):
    dataset = inputs.clip_dataset(data_dir, "train", num_frames=4, size=SIZE, batch_size=2)
    assert inputs.measure_throughput(dataset, num_batches=2) > 0
