"""avd_tf.models.distill, avd_tf.models.export, avd-distill, avd-export and avd_tf.visualize.

A tiny dataset is prepared in the test (frames kept at their size): two
motion classes with three 12-frame 32x32 videos each (two train, one test),
plus a 5-frame 50x70 test video. The encoders are small AVD models, the RGB
one trained for two steps on real clips, saved as avd-train saves them.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

import avd_tf
from avd_tf import visualize
from avd_tf.inputs import avd_dataset, clip_dataset, to_signed_unit
from avd_tf.models import build_avd, compile_avd, distill, get_preset
from avd_tf.records import schema
from avd_tf.layout import STREAM_INFO
from avd_tf.records.convert import ConvertOptions
from avd_tf.video import flow as flow_lib
from avd_tf.video import synthetic
from conftest import prepare_folder, write_motion_videos

CLASSES = ["TranslateLeft", "TranslateRight"]
FRAMES, SIZE = 12, 32
ODD_ID = f"test/{CLASSES[1]}/odd"  # the 5-frame 50x70 test video (folder-dataset id)
NARROW = dict(encoder_filters=(4, 4, 4, 4), decoder_filters=(4, 4, 4, 4),
              teacher_units=(8, 8, 8, 8))
TIMEOUT = 300


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The videos and the odd one, prepared at their size with TV-L1 flow."""
    root = tmp_path_factory.mktemp("distill")
    videos = root / "videos"
    write_motion_videos(videos, CLASSES, FRAMES, SIZE)
    wide = synthetic.render_video(CLASSES[1], seed=99, frames=5, size=70)[:, 10:60]
    synthetic.write_video(videos / "test" / CLASSES[1] / "odd.avi", wide)
    return prepare_folder(videos, root / "prepared",
                          ConvertOptions(size=SIZE, resize="none", flow="tvl1"))


def stored_video(data_dir, video_id):
    """(label, uint8 RGB frames, uint8 flow x/y frames) of a prepared video, decoded with TF."""
    files = tf.io.gfile.glob(os.path.join(data_dir, "*-of-*.tfrecord"))
    for record in tf.data.TFRecordDataset(files):
        video = schema.parse(record)
        if video[schema.VIDEO_ID].numpy().decode() == video_id:
            rgb = np.stack([tf.io.decode_jpeg(f).numpy() for f in video[schema.IMAGE]])
            flow = np.stack([
                np.concatenate([tf.io.decode_jpeg(x).numpy(), tf.io.decode_jpeg(y).numpy()], -1)
                for x, y in zip(video[schema.FLOW_X], video[schema.FLOW_Y])])
            return int(video[schema.LABEL_INDEX]), rgb, flow
    raise AssertionError(f"{video_id} not in {data_dir}")


def save_model(model, model_dir):
    """What avd-train leaves for distillation: encoder.keras and config.json."""
    os.makedirs(model_dir, exist_ok=True)
    model.encoder.save(os.path.join(model_dir, "encoder.keras"))
    stream = "rgb" if model.decoder.out_channels == 3 else "flow"
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump({"stream": stream}, f)
    return str(model_dir)


@pytest.fixture(scope="module")
def rgb_model_dir(data_dir, tmp_path_factory):
    keras.utils.set_random_seed(7)
    config = get_preset("small", **NARROW)
    # Eager steps: no tracing, which would cost more than two steps.
    model = compile_avd(build_avd(config, "rgb"), config, run_eagerly=True)
    batches = avd_dataset(data_dir, "train", num_frames=8, size=SIZE, batch_size=4, seed=1)
    for clips, real in batches.take(2):
        model.train_on_batch(clips, real)
    return save_model(model, tmp_path_factory.mktemp("models") / "avd_rgb")


@pytest.fixture(scope="module")
def flow_model_dir(tmp_path_factory):
    keras.utils.set_random_seed(8)
    model = build_avd(get_preset("small", **NARROW), "flow")
    return save_model(model, tmp_path_factory.mktemp("models") / "avd_flow")


@pytest.fixture(scope="module")
def programs(data_dir, rgb_model_dir, tmp_path_factory):
    """avd-distill --png and avd-export, started together (they run while other tests do)."""
    root = tmp_path_factory.mktemp("programs")
    runs = {
        "distill": [sys.executable, "-m", "avd_tf.apps.distill", "--model_dir", rgb_model_dir,
                    "--data_dir", data_dir, "--output_dir", str(root / "distilled"),
                    "--clips_per_video", "2", "--png", "--progress=false"],
        "export": [sys.executable, "-m", "avd_tf.apps.export", "--model_dir", rgb_model_dir,
                   "--export_dir", str(root / "exported")],
    }
    processes = {name: subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for name, args in runs.items()}
    yield {"root": root, "processes": processes}
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def finish(programs, name):
    process = programs["processes"][name]
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def dataset_images(encoder, data_dir, stream, clips_per_video):
    """{(video_id, clip_index): uint8 image} through the evaluation pipeline and E."""
    spec = distill.encoder_spec(encoder)
    run = distill.uint8_distiller(encoder)
    out = {}
    for split in ("train", "test"):
        for batch in clip_dataset(data_dir, split, stream=stream, num_frames=spec.num_frames,
                                  size=spec.image_size, clips_per_video=clips_per_video,
                                  batch_size=4):
            for image, video_id, index in zip(run(batch["clip"]).numpy(),
                                              batch["video_id"].numpy(),
                                              batch["clip_index"].numpy()):
                out[(video_id.decode(), int(index))] = image
    return out


def max_difference(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_import_avd_tf_stays_light():
    # avd_tf.distill itself is tested below; here only that it is not loaded eagerly.
    code = ("import sys, avd_tf; assert 'distill' in dir(avd_tf); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]


# The programs start here, so that they run while the in-process tests do.
@pytest.mark.usefixtures("programs")
@pytest.mark.slow
def test_one_clip_of_any_length_and_size_matches_the_dataset_path(data_dir, rgb_model_dir):
    encoder = distill.load_encoder(rgb_model_dir)
    _, frames, _ = stored_video(data_dir, ODD_ID)
    assert frames.shape == (5, 50, 70, 3)
    image = distill.distill(rgb_model_dir, frames)
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    expected = dataset_images(encoder, data_dir, "rgb", 1)[(ODD_ID, 0)]
    # Same frames, same ops; only E's batch differs (1 clip here, 4 there).
    assert max_difference(image, expected) <= 1
    # Looping: 5 frames read as 0 1 2 3 4 0 1 2; an 8-frame clip is taken whole.
    np.testing.assert_array_equal(image, distill.distill(encoder, frames[[0, 1, 2, 3, 4, 0, 1, 2]]))
    # Longer clips: the centred window of 8 consecutive frames (40 -> frames 16..23).
    long = np.concatenate([frames] * 8)
    np.testing.assert_array_equal(distill.distill(encoder, long[16:24]),
                                  distill.distill(encoder, long))
    assert not np.array_equal(distill.distill(encoder, long[:8][::-1]), image)
    # The lazy top-level shortcut is the same function.
    np.testing.assert_array_equal(avd_tf.distill(rgb_model_dir, frames), image)


@pytest.mark.slow
def test_flow_clips_in_pixels_or_quantised_give_the_same_image(data_dir, flow_model_dir):
    encoder = distill.load_encoder(flow_model_dir)
    assert distill.encoder_spec(encoder) == distill.EncoderSpec("flow", 8, SIZE, 2)
    _, _, quantised = stored_video(data_dir, ODD_ID)
    assert quantised.shape == (4, 50, 70, 2)
    pixels = np.stack([flow_lib.dequantize(quantised[..., 0]),
                       flow_lib.dequantize(quantised[..., 1])], axis=-1)
    image = distill.distill(encoder, quantised)
    assert image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(distill.distill(encoder, pixels), image)
    expected = dataset_images(encoder, data_dir, "flow", 1)[(ODD_ID, 0)]
    assert max_difference(image, expected) <= 1


def test_bad_inputs_are_refused(rgb_model_dir, tmp_path):
    encoder = distill.load_encoder(rgb_model_dir)
    with pytest.raises(ValueError, match="takes frames \\(T, H, W, 3\\)"):
        distill.distill(encoder, np.zeros((4, 32, 32, 2), np.uint8))
    with pytest.raises(ValueError, match="takes frames"):
        distill.distill(encoder, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb frames must be uint8"):
        distill.distill(encoder, np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="neither encoder.keras nor avd.keras"):
        distill.load_encoder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such AVD model"):
        distill.load_encoder(str(tmp_path / "missing"))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.keras: not a Keras model file"):
        distill.load_encoder(str(broken))


def read_split(stream_dir, split):
    return list(distill.read_images(str(stream_dir), split))


@pytest.mark.slow
def test_distill_dataset_writes_every_clip_with_its_label_and_stream_json(
        data_dir, rgb_model_dir, tmp_path):
    output = tmp_path / "distilled"
    info = distill.distill_dataset(rgb_model_dir, data_dir, str(output), clips_per_video=3,
                                   batch_size=5, progress=False)
    written = json.loads((output / STREAM_INFO).read_text())
    assert written == json.loads(json.dumps(info))
    assert info["stream"] == "rgb" and info["num_frames"] == 8 and info["image_size"] == SIZE
    assert info["classes"] == CLASSES and info["clips_per_video"] == 3
    files = tf.io.gfile.glob(os.path.join(data_dir, "*-of-*.tfrecord"))
    labels = {}
    for record in tf.data.TFRecordDataset(files):
        video = schema.parse(record)
        labels[video[schema.VIDEO_ID].numpy().decode()] = int(video[schema.LABEL_INDEX])
    assert sorted(set(labels.values())) == [0, 1]
    encoder = distill.load_encoder(rgb_model_dir)
    expected = dataset_images(encoder, data_dir, "rgb", 3)
    for split, videos in (("train", 4), ("test", 3)):
        records = read_split(output, split)
        assert info["splits"][split]["videos"] == videos
        assert info["splits"][split]["images"] == len(records) == 3 * videos
        by_video = {}
        for record in records:
            video_id = record["video_id"].decode()
            by_video.setdefault(video_id, []).append(int(record["clip_index"]))
            assert record["image"].dtype == np.uint8 and record["image"].shape == (SIZE, SIZE, 3)
            assert record["label"] == labels[video_id]
            reference = expected[(video_id, int(record["clip_index"]))]
            assert max_difference(record["image"], reference) <= 1
        assert all(sorted(indices) == [0, 1, 2] for indices in by_video.values())
    # The 5-frame video's clips all loop from frame 0: distill() gives their image.
    _, frames, _ = stored_video(data_dir, ODD_ID)
    odd = [r["image"] for r in read_split(output, "test") if r["video_id"] == ODD_ID.encode()]
    assert all(max_difference(image, distill.distill(encoder, frames)) <= 1 for image in odd)
    # stream.json is written last; a second run replaces the first one's shards.
    newest_shard = max(os.path.getmtime(output / name) for name in os.listdir(output)
                       if name.endswith(".tfrecord"))
    assert os.path.getmtime(output / STREAM_INFO) >= newest_shard
    distill.distill_dataset(rgb_model_dir, data_dir, str(output), clips_per_video=1,
                            progress=False)
    assert len(read_split(output, "test")) == 3


def test_saved_model_round_trip_equals_the_keras_encoder(programs, rgb_model_dir):
    report = finish(programs, "export")
    export_dir = programs["root"] / "exported"
    assert report["export_dir"] == str(export_dir)
    assert report["input"]["shape"] == [None, 8, SIZE, SIZE, 3]
    loaded = tf.saved_model.load(str(export_dir))
    serving = loaded.signatures["serving_default"]
    assert serving.structured_input_signature[1]["clips"].dtype == tf.uint8
    clips = np.random.default_rng(0).integers(0, 256, (3, 8, SIZE, SIZE, 3), dtype=np.uint8)
    served = serving(clips=tf.constant(clips))["images"].numpy()
    assert served.dtype == np.uint8 and served.shape == (3, SIZE, SIZE, 3)
    encoder = distill.load_encoder(rgb_model_dir)
    keras_images = distill.uint8_distiller(encoder)(to_signed_unit(clips)).numpy()
    np.testing.assert_array_equal(served, keras_images)
    np.testing.assert_array_equal(loaded.distill(tf.constant(clips))["images"].numpy(), served)

    # Called directly (as TF Serving does) or as the restored function, the
    # graph refuses another shape in one message saying what it expected.
    expected = "distill: input clips must be uint8 (clips, frames, height, width, channels), "
    bad = [
        (np.zeros((8, SIZE, SIZE, 3), np.uint8), "a tensor of rank 5"),
        (np.zeros((2, 4, SIZE, SIZE, 3), np.uint8), "with frames = 8"),
        (np.zeros((2, 8, SIZE + 1, SIZE, 3), np.uint8), f"with height = {SIZE}"),
        (np.zeros((2, 8, SIZE, SIZE, 2), np.uint8), "with channels = 3"),
    ]
    for call in (lambda x: serving(clips=x), loaded.distill):
        for array, reason in bad:
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=re.escape(expected + reason)):
                call(tf.constant(array))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        serving(clips=tf.zeros((1, 8, SIZE, SIZE, 3), tf.float32))


def test_avd_distill_writes_pngs_and_a_contact_sheet(programs):
    report = finish(programs, "distill")
    output = programs["root"] / "distilled"
    assert report["splits"] == {"train": {"videos": 4, "images": 8},
                                "test": {"videos": 3, "images": 6}}
    assert report["pngs"] == 14
    for split in ("train", "test"):
        for record in read_split(output, split):
            name = distill.png_name(record["video_id"], record["clip_index"])
            png = cv2.cvtColor(cv2.imread(str(output / "png" / split / name)), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(png, record["image"])
    sheet = cv2.imread(str(output / "contact_sheet.png"))
    assert report["contact_sheet"] == str(output / "contact_sheet.png")
    # A header, then per test video (3) a caption and a row of 96-pixel tiles
    # (32 x 3, padded by 2): 8 frames, a 12-pixel gap, the distilled image.
    tile = 3 * SIZE + 2 * 2
    assert sheet.shape[0] == 20 + 3 * (20 + tile)
    assert sheet.shape[1] == (8 * 3 * SIZE + 9 * 2) + 12 + tile


def test_flow_colour_coding_and_grids():
    right = np.zeros((2, 2, 2), np.float32)
    right[..., 0] = 3.0
    down = np.zeros((2, 2, 2), np.float32)
    down[..., 1] = 1.5
    coded = visualize.flow_to_rgb(np.stack([right, down, np.zeros_like(right)]))
    assert coded.shape == (3, 2, 2, 3) and coded.dtype == np.uint8
    np.testing.assert_array_equal(coded[0, 0, 0], [255, 0, 0])  # right: red, full value
    assert coded[1, 0, 0].max() == 128  # half the largest magnitude: half the value
    assert coded[1, 0, 0, 0] < coded[1, 0, 0, 1]  # down (90 degrees): yellow-green, not red
    np.testing.assert_array_equal(coded[2], 0)  # no motion: black
    np.testing.assert_array_equal(visualize.flow_to_rgb(right, max_magnitude=6.0)[0, 0],
                                  [128, 0, 0])
    grid = visualize.image_grid([np.full((4, 5, 3), v, np.uint8) for v in (0, 100, 200)],
                                columns=2, pad=1)
    assert grid.shape == (2 * 4 + 3, 2 * 5 + 3, 3)
    assert grid[1, 1, 0] == 0 and grid[1, 7, 0] == 100 and grid[6, 1, 0] == 200
    assert grid[6, 7, 0] == visualize.BACKGROUND
    np.testing.assert_array_equal(visualize.signed_to_uint8(np.array([-1.0, 0.0, 1.0, 2.0])),
                                  [0, 128, 255, 255])
    with pytest.raises(ValueError, match="expected flow"):
        visualize.flow_to_rgb(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="differ in size"):
        visualize.image_grid([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], 2)


@pytest.mark.slow
def test_distil_one_video_file_with_the_program(rgb_model_dir, flow_model_dir, tmp_path):
    """avd-distill --video: a real AVI in, the centre clip's image out; bad files named in one line."""
    clip = synthetic.render_video(CLASSES[0], seed=5, frames=20, size=48)
    video = str(synthetic.write_video(tmp_path / "clip.avi", clip))
    frames = avd_tf.video.decode.read_video(video, size=SIZE)
    for model_dir in (rgb_model_dir, flow_model_dir):
        output = tmp_path / f"{os.path.basename(model_dir)}.png"
        run = subprocess.run([sys.executable, "-m", "avd_tf.apps.distill", "--model_dir", model_dir,
                              "--video", video, "--output", str(output)],
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert run.returncode == 0, run.stderr[-3000:]
        written = cv2.cvtColor(cv2.imread(str(output)), cv2.COLOR_BGR2RGB)
        assert written.shape == (SIZE, SIZE, 3)
        if model_dir == rgb_model_dir:
            np.testing.assert_array_equal(written, distill.distill(model_dir, frames))
        else:
            # TV-L1 of the centre 9 frames (8 flow frames), as avd-prepare computes it.
            start = (len(frames) - 9) // 2
            grey = [flow_lib.to_gray(f) for f in frames[start:start + 9]]
            tvl1 = flow_lib.TVL1("cpu")
            flow = np.stack([tvl1.calc(a, b) for a, b in zip(grey[:-1], grey[1:])])
            np.testing.assert_array_equal(written, distill.distill(model_dir, flow))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    for args, message in (
        (["--video", str(broken), "--output", str(tmp_path / "x.png")], str(broken)),
        (["--video", video], "--video needs --output"),
        ([], "give --video FILE --output FILE.png, or --data_dir and --output_dir"),
    ):
        run = subprocess.run([sys.executable, "-m", "avd_tf.apps.distill", "--model_dir",
                              rgb_model_dir, *args], capture_output=True, text=True, timeout=TIMEOUT)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("avd-distill: ") and message in last, last
