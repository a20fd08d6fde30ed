"""Horizontal flips that show what the mirrored video shows, and mirror classes.

Two classes whose videos move left / right (and down), accelerating so that
the flow changes over time, 22 frames of 32x32, written losslessly (FFV1)
with cv2.VideoWriter; the same videos mirrored are written and prepared the
same way (TV-L1 flow, JPEG quality 100) as a second dataset. A training
sample that was flipped must equal the stream image of the mirrored video.
"""
from __future__ import annotations

import json
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from avd_tf import streams
from avd_tf.classify import dynamic_images as di
from avd_tf.classify.stream_cache import ensure_stream
from avd_tf.classify.stream_images import decoded_videos, mirrored_frames
from avd_tf.datasets import flip_labels, load_dataset
from avd_tf.inputs import augment
from avd_tf.inputs.images import stream_dataset
from avd_tf.records import images
from avd_tf.records.convert import ConvertOptions
from avd_tf.records.prepare import PrepareError, prepare
from conftest import write_video

CLASSES = ["TranslateLeft", "TranslateRight"]
FRAMES, SIZE = 22, 32
LOCAL_STREAMS = [s for s in streams.STREAMS if s not in streams.AVD_STREAMS]
# Mean absolute difference on the [-1, 1] scale between a flipped training
# sample and the mirrored video's image. JPEG (quality 100) is not exactly
# mirror-symmetric, nor is OpenCV's TV-L1 (measured: frame 0.005, flow
# 0.003, mean 0.002, dynamic 0.007, avd_rgb 0.0003, avd_flow 0.003).
TOLERANCE = 0.01
# dynamic_flow min-max scales the rank-pooled flow, x and y together; its
# extremes are a few TV-L1 outlier pixels, which mirroring does not
# reproduce, so its images of the two videos differ more (measured 0.16;
# mirroring the image and negating x instead: 0.61).
DYNAMIC_FLOW_TOLERANCE = 0.25


def accelerating_frames(seed, sign):
    """A smooth texture moving sideways (direction `sign`) ever faster, and down."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (SIZE // 4 + 8, SIZE // 4 + 8, 3)).astype(np.uint8)
    big = cv2.resize(big, (big.shape[1] * 4, big.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    big = cv2.GaussianBlur(big, (0, 0), 1.5)
    return [cv2.warpAffine(big, np.float32([[1, 0, sign * 0.08 * t * t], [0, 1, 0.5 * t]]),
                           (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
            for t in range(FRAMES)]


def prepare_videos(video_dir, out_dir, **kwargs):
    prepare(load_dataset("folder", video_dir=video_dir), str(video_dir), str(out_dir),
            ConvertOptions(size=SIZE, flow="tvl1", jpeg_quality=100), dataset_name="folder",
            videos_per_shard=2, progress=False, log=lambda _: None, **kwargs)
    return str(out_dir)


def write_map(path, mapping):
    path.write_text(json.dumps(mapping))
    return str(path)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(original, mirrored) prepared datasets; the original declares the mirror classes."""
    root = tmp_path_factory.mktemp("flips")
    for c, name in enumerate(CLASSES):
        for i in range(3):
            split = "test" if i == 2 else "train"
            frames = accelerating_frames(10 * c + i, -1 if c == 0 else 1)
            # Same folder and name: the mirrored video keeps the video id.
            write_video(root / "videos" / split / name / f"{name}_{i}.avi", frames, fourcc="FFV1")
            write_video(root / "mirrored" / split / name / f"{name}_{i}.avi",
                        [f[:, ::-1] for f in frames], fourcc="FFV1")
    flip_map = flip_labels.read_flip_label_map(
        write_map(root / "flip_label_map.json", {"TranslateLeft": "TranslateRight"}), CLASSES)
    return (prepare_videos(root / "videos", root / "prepared", flip_label_map=flip_map),
            prepare_videos(root / "mirrored", root / "prepared_mirrored"))


def avd_model(model_dir, stream):
    """An untrained AVD encoder in avd-train's layout. Flow clips are v / 20 px, so
    small that untrained E barely varies: its first kernel is scaled up."""
    source = streams.avd_input(stream)
    from avd_tf.models import build_avd

    keras.utils.set_random_seed(0)
    # Widths pinned, so the size of the mirror effect does not follow the preset.
    encoder = build_avd("small", stream=source, image_size=SIZE, encoder_filters=(8, 16, 16, 16),
                        decoder_filters=(16, 16, 16, 8)).encoder
    first = encoder.weights[0]
    first.assign(first.numpy() * (20.0 if source == "flow" else 1.0))
    os.makedirs(model_dir, exist_ok=True)
    encoder.save(os.path.join(model_dir, "encoder.keras"))
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump({"stream": source, "preset": "small", "image_size": SIZE}, f)
    return str(model_dir)


def evaluation_images(stream_dir):
    """{(video_id, clip_index): (image, label)} of the train split, unflipped."""
    images = {}
    for batch in stream_dataset(stream_dir, "train", size=SIZE, training=False,
                                batch_size=8).as_numpy_iterator():
        for image, label, video_id, index in zip(batch["image"], batch["label"],
                                                 batch["video_id"], batch["clip_index"]):
            images[video_id, index] = (image, label)
    return images


def training_samples(stream_dir, batches=6, **kwargs):
    """Training samples without size jitter at the stored size: only the flip changes them."""
    ds = stream_dataset(stream_dir, "train", size=SIZE, training=True, batch_size=8,
                        seed=0, scale_range=(1.0, 1.0), **kwargs)
    for _, batch in zip(range(batches), ds.as_numpy_iterator()):
        yield from zip(batch["image"], batch["label"], batch["video_id"], batch["clip_index"])


def naive_mirror(image, stream):
    """Mirroring the stored image (and negating flow x): wrong for MIRRORED_STREAMS."""
    mirrored = image[:, ::-1]
    return mirrored * np.array([-1.0, 1.0], np.float32) if streams.get(stream).flow_channels \
        else mirrored


def check_flips_show_the_mirrored_video(pair, stream, tolerance, **kwargs):
    """Flipped samples (their label swapped) match the mirrored video's images; returns
    (mean error of the flipped samples, mean error of mirroring the stored images)."""
    original, mirrored = (ensure_stream(d, stream, progress=False, **kwargs) for d in pair)
    reference, of_mirrored = evaluation_images(original), evaluation_images(mirrored)
    mirror_classes = flip_labels.flip_permutation(
        flip_labels.dataset_flip_label_map(pair[0]), len(CLASSES))
    kept, errors = 0, []
    for image, label, video_id, index in training_samples(original,
                                                          mirror_classes=mirror_classes):
        unflipped, true_label = reference[video_id, index]
        if label == true_label:
            np.testing.assert_array_equal(image, unflipped)
            kept += 1
        else:
            assert label == 1 - true_label  # TranslateLeft <-> TranslateRight
            errors.append(np.abs(image - of_mirrored[video_id, index][0]).mean())
    assert kept > 0 and errors, (kept, len(errors))
    naive = np.mean([np.abs(naive_mirror(image, stream) - of_mirrored[key][0]).mean()
                     for key, (image, _) in reference.items()])
    assert np.mean(errors) < tolerance, (np.mean(errors), naive)
    return float(np.mean(errors)), float(naive)


@pytest.mark.parametrize("stream", LOCAL_STREAMS)
@pytest.mark.slow
def test_flipped_sample_is_the_mirrored_videos_image(pair, stream):
    tolerance = DYNAMIC_FLOW_TOLERANCE if stream == "dynamic_flow" else TOLERANCE
    flipped, naive = check_flips_show_the_mirrored_video(pair, stream, tolerance)
    if stream == "dynamic_flow":
        # Mirroring the stored image is not the mirrored video's image.
        assert naive > 2 * flipped, (flipped, naive)


def test_dynamic_flow_mirror_is_the_mirrored_flows_image(pair):
    """Exactly: the stored mirror is the dynamic image of the flow mirrored, x negated."""
    stream_dir = ensure_stream(pair[0], "dynamic_flow", progress=False)
    video = next(decoded_videos(pair[0], "train", flow=True).as_numpy_iterator())
    mirrored = mirrored_frames(video["frames"], flow=True)
    signed = mirrored.astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(signed[..., 0], -(video["frames"][:, :, ::-1, 0] / 127.5 - 1.0),
                               atol=1e-6)
    expected = di.to_uint8(di.dynamic_image(signed[6:16]))
    files = sorted(tf.io.gfile.glob(os.path.join(stream_dir, "train-*-of-*.tfrecord")))
    record = next(r for r in tf.data.TFRecordDataset(files).map(
        lambda x: images.parse(x, mirror=True)).as_numpy_iterator()
        if r["video_id"] == video["video_id"] and r["clip_index"] == 1)
    np.testing.assert_array_equal(record["mirror"], expected)
    assert not np.array_equal(record["mirror"], record["image"][:, ::-1])


@pytest.mark.parametrize("stream", streams.AVD_STREAMS)
@pytest.mark.slow
def test_flipped_avd_sample_is_e_of_the_mirrored_clip(pair, tmp_path, stream):
    """E(mirrored clip), NOT mirror(E(clip)): the two differ, and the flip gives the first."""
    model_dir = avd_model(tmp_path / stream, stream)
    flipped, naive = check_flips_show_the_mirrored_video(
        pair, stream, TOLERANCE / 2, avd_model_dir=model_dir, clips_per_video=2)
    assert naive > 3 * flipped and naive > 0.008, (flipped, naive)


def test_flip_none_never_flips(pair):
    stream_dir = ensure_stream(pair[0], "frame", progress=False)
    reference = evaluation_images(stream_dir)
    mirror_classes = [1, 0]
    count = 0
    for image, label, video_id, index in training_samples(stream_dir, flip="none",
                                                          mirror_classes=mirror_classes):
        np.testing.assert_array_equal(image, reference[video_id, index][0])
        assert label == reference[video_id, index][1]
        count += 1
    assert count == 48
    with pytest.raises(ValueError, match="flip must be one of mirror, none, got 'random'"):
        stream_dataset(stream_dir, "train", size=SIZE, training=True, batch_size=2,
                       flip="random")
    with pytest.raises(ValueError, match="mirror_classes must give a class in 0..1"):
        stream_dataset(stream_dir, "train", size=SIZE, training=True, batch_size=2,
                       mirror_classes=[1, 2])


def test_augment_clip_flip_none():
    clip = tf.random.stateless_uniform([2, 12, 12, 2], [1, 2], -1.0, 1.0)
    for s in range(8):
        crop_seed, _ = augment.augment_seeds([s, 3])
        np.testing.assert_array_equal(
            augment.augment_clip(clip, 8, [s, 3], flow=True, flip="none").numpy(),
            augment.random_crop_resize(clip, 8, crop_seed).numpy())
    flipped = [not np.array_equal(augment.augment_clip(clip, 8, [s, 3], flip="mirror").numpy(),
                                  augment.random_crop_resize(clip, 8, augment.augment_seeds(
                                      [s, 3])[0]).numpy()) for s in range(8)]
    assert any(flipped) and not all(flipped)


def test_manifest_records_the_map_and_refuses_another(pair, tmp_path):
    with open(os.path.join(pair[0], "manifest.json")) as f:
        assert json.load(f)["flip_label_map"] == {"0": 1, "1": 0}
    with open(os.path.join(pair[1], "manifest.json")) as f:
        assert "flip_label_map" not in json.load(f)
    assert flip_labels.dataset_flip_label_map(pair[1]) == {}
    video_dir = os.path.join(os.path.dirname(pair[0]), "videos")
    prepare_videos(video_dir, pair[0], flip_label_map={0: 1})  # the same map: resumes
    with pytest.raises(PrepareError, match="flip_label_map differ.*avd-finetune --flip_label_map"):
        prepare_videos(video_dir, pair[0])
    override = write_map(tmp_path / "none.json", {})
    assert flip_labels.dataset_flip_label_map(pair[0], override) == {}
    assert flip_labels.dataset_flip_label_map(pair[1], write_map(
        tmp_path / "m.json", {"1": "TranslateLeft"})) == {0: 1, 1: 0}


@pytest.mark.parametrize("content,message", [
    ('{"TranslateLeft": "TranslateUp"}', "unknown class 'TranslateUp'"),
    ('{"TranslateLeft": 9}', "class index 9 is out of range"),
    ('["TranslateLeft", "TranslateRight"]', "must be a JSON object"),
    ('{"TranslateLeft": "TranslateRight", "TranslateRight": "7"}', "index 7 is out of range"),
    ('{"0": "TranslateRight", "RotateCW": "TranslateRight"}', "not a pairing"),
    ('{"TranslateLeft": "TranslateRight"', "not valid JSON"),
])
def test_malformed_map_is_a_one_line_error_naming_the_file(tmp_path, content, message):
    classes = CLASSES + ["RotateCW", "RotateCCW"]
    path = tmp_path / "flip_label_map.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        flip_labels.read_flip_label_map(str(path), classes)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_map_is_made_symmetric():
    classes = CLASSES + ["RotateCW", "RotateCCW", "Still"]
    assert flip_labels.check_flip_label_map(
        {"TranslateLeft": "TranslateRight", "3": 2, "Still": "Still"}, classes, "m.json"
    ) == {0: 1, 1: 0, 2: 3, 3: 2}
    assert flip_labels.flip_permutation({0: 1, 1: 0}, 3) == [1, 0, 2]


@pytest.mark.slow
def test_finetune_records_the_flip_and_the_map(pair, tmp_path):
    from avd_tf.classify import finetune as ft

    common = dict(backbone="alexnet", weights="none", epochs=1, batch_size=4, input_size=64,
                  steps_per_epoch=2, seed=0, progress=False, log=lambda _: None)
    ft.finetune(pair[0], "frame", str(tmp_path / "mirror"), **common)
    with open(tmp_path / "mirror" / ft.CONFIG) as f:
        config = json.load(f)
    assert config["flip"] == "mirror" and config["flip_label_map"] == {"0": 1, "1": 0}
    override = write_map(tmp_path / "none.json", {})
    ft.finetune(pair[0], "frame", str(tmp_path / "none"), flip="none", flip_label_map=override,
                **common)
    with open(tmp_path / "none" / ft.CONFIG) as f:
        config = json.load(f)
    assert config["flip"] == "none" and config["flip_label_map"] == {}
    broken = write_map(tmp_path / "broken.json", {"TranslateLeft": "Jump"})
    with pytest.raises(ValueError, match=f"{broken}: unknown class 'Jump'"):
        ft.finetune(pair[0], "frame", str(tmp_path / "broken"), flip_label_map=broken, **common)
    assert not os.path.exists(tmp_path / "broken" / ft.CONFIG)


@pytest.mark.slow
def test_avd_training_with_flip_none_records_it(pair, tmp_path):
    from avd_tf.models import training

    model_dir = tmp_path / "avd"
    training.train_avd(pair[0], str(model_dir), stream="rgb", preset="small", epochs=1,
                       steps_per_epoch=1, validation_steps=1, flip="none", num_frames=8,
                       image_size=SIZE, batch_size=2, encoder_filters=[4, 4, 4, 4],
                       decoder_filters=[4, 4, 4, 4], summary_clips=2, seed=0, progress=False,
                       log=lambda _: None)
    assert json.loads((model_dir / training.CONFIG).read_text())["flip"] == "none"
    with pytest.raises(ValueError, match="flip must be one of mirror, none, got 'random'"):
        training.train_avd(pair[0], str(tmp_path / "bad"), flip="random", epochs=1,
                           steps_per_epoch=1, log=lambda _: None, progress=False)
