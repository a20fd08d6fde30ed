"""The demo data generator: real video files, UCF101 splits, kind x motion classes."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from avd_tf.datasets.ucf101 import load_ucf101
from avd_tf.video import synthetic
from avd_tf.video.decode import VideoError

TRANSLATIONS = {
    "TranslateLeft": (-1, 0),
    "TranslateRight": (1, 0),
    "TranslateUp": (0, -1),
    "TranslateDown": (0, 1),
    "TranslateUpLeft": (-1, -1),
    "TranslateUpRight": (1, -1),
    "TranslateDownLeft": (-1, 1),
    "TranslateDownRight": (1, 1),
}


def decode(path):
    """All frames of a video file as RGB uint8, read with plain cv2.VideoCapture."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def gray(frame):
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def farneback(a, b):
    return cv2.calcOpticalFlowFarneback(gray(a), gray(b), None, 0.5, 2, 9, 3, 5, 1.1, 0)


def radial_and_tangential(flow):
    """Mean outward and clockwise (y down) flow, weighted by the distance from the centre."""
    n = flow.shape[0]
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2
    u, v = flow[..., 0], flow[..., 1]
    return float(np.mean(x * u + y * v) / n), float(np.mean(x * v - y * u) / n)


def nearest_class_mean_accuracy(features, labels):
    """Leave-one-out accuracy of a nearest-class-mean classifier on standardised features."""
    x = (features - features.mean(0)) / (features.std(0) + 1e-9)
    correct = 0
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        means = np.stack([x[keep & (labels == c)].mean(0) for c in np.unique(labels)])
        correct += int(np.argmin(((means - x[i]) ** 2).sum(1)) == labels[i])
    return correct / len(x)


def test_motion_classes_are_distinct_ucf101_names():
    names = synthetic.motion_classes()
    assert len(names) == len(set(names)) == 12
    assert names[:8] == [
        "TranslateLeft", "TranslateRight", "TranslateUp", "TranslateDown",
        "RotateCW", "RotateCCW", "ZoomIn", "ZoomOut",
    ]
    # UCF101 file names split on "_", so class names must not contain one.
    assert all(re.fullmatch(r"[A-Za-z]+", name) for name in names)


def test_demo_classes_are_kinds_times_motions_in_kind_major_order():
    names = synthetic.demo_classes()
    assert names == [
        "RoundTranslateLeft", "RoundTranslateRight", "RoundRotateCW", "RoundRotateCCW",
        "BoxTranslateLeft", "BoxTranslateRight", "BoxRotateCW", "BoxRotateCCW",
    ]
    assert all(re.fullmatch(r"[A-Za-z]+", name) for name in names)
    assert synthetic.demo_classes([], ["ZoomIn", "TranslateUp"]) == ["ZoomIn", "TranslateUp"]
    assert len(synthetic.demo_classes(list(synthetic.KINDS), synthetic.motion_classes())) == 36
    assert synthetic.parse_class("BoxRotateCW") == ("Box", "RotateCW")
    assert synthetic.parse_class("TriangleZoomIn") == ("Triangle", "ZoomIn")
    assert synthetic.parse_class("TranslateLeft") == (None, "TranslateLeft")
    with pytest.raises(ValueError, match="unknown kind 'Oval'; known: Round, Box, Triangle"):
        synthetic.demo_classes(["Oval"])
    with pytest.raises(ValueError, match="unknown motion 'Jump'"):
        synthetic.demo_classes(["Box"], ["Jump"])
    with pytest.raises(ValueError, match="repeated kind"):
        synthetic.demo_classes(["Box", "Box"])
    with pytest.raises(ValueError, match="unknown demo class 'OvalRotateCW'"):
        synthetic.parse_class("OvalRotateCW")


def test_flip_label_map_pairs_mirror_classes_both_ways():
    classes = synthetic.demo_classes()
    flips = synthetic.flip_label_map(classes)
    for kind in ("Round", "Box"):
        for a, b in (("TranslateLeft", "TranslateRight"), ("RotateCW", "RotateCCW")):
            assert flips[kind + a] == kind + b and flips[kind + b] == kind + a
    assert len(flips) == 8 and all(flips[flips[name]] == name for name in flips)
    motions = synthetic.flip_label_map(synthetic.motion_classes())
    assert motions["TranslateUpLeft"] == "TranslateUpRight"
    assert motions["TranslateDownRight"] == "TranslateDownLeft"
    # A flip leaves these unchanged, so they are not listed (MMAction2's convention).
    assert not {"TranslateUp", "TranslateDown", "ZoomIn", "ZoomOut"} & set(motions)
    assert synthetic.mirror_class("TriangleZoomOut") == "TriangleZoomOut"
    # A class whose mirror class is missing from the set is not in the map.
    assert synthetic.flip_label_map(classes[:3]) == {
        "RoundTranslateLeft": "RoundTranslateRight", "RoundTranslateRight": "RoundTranslateLeft",
    }
    assert synthetic.unpaired_classes(classes[:3]) == ["RoundRotateCW"]


def mean_flow_features(video):
    """Mean (horizontal flow, clockwise tangential flow) over a clip, with Farneback."""
    flows = [farneback(video[t], video[t + 1]) for t in range(len(video) - 1)]
    return np.mean([[f[..., 0].mean(), radial_and_tangential(f)[1]] for f in flows], axis=0)


def test_a_mirrored_video_moves_like_its_flip_label_map_class():
    """Horizontally flipped clips move like the mirror class, and not like their own class."""
    classes = synthetic.demo_classes(["Box"])
    flips = synthetic.flip_label_map(classes)
    measured = {}
    for name in classes:
        video = synthetic.render_video(name, [15, 1], frames=5, size=48)
        own = mean_flow_features(video)
        mirrored = mean_flow_features(np.ascontiguousarray(video[:, :, ::-1]))
        main = 0 if "Translate" in name else 1
        assert abs(own[main]) > 0.1 and np.sign(mirrored[main]) == -np.sign(own[main]), name
        measured[name] = own, mirrored
    for name, partner in flips.items():
        main = 0 if "Translate" in name else 1
        assert np.sign(measured[name][1][main]) == np.sign(measured[partner][0][main]), name


def test_kind_shapes_have_their_outline_and_equal_areas():
    radius, corners = 40.0, {"Round": None, "Box": 4, "Triangle": 3}
    for shape_seed in range(5):
        areas = []
        for kind, count in corners.items():
            # One seed draws the same angle and aspect for every kind.
            mask = synthetic._shape_mask(
                np.random.default_rng(shape_seed), radius, synthetic.KINDS[kind].shapes
            )
            binary = (mask > 0.5).astype(np.uint8)
            contours = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
            assert len(contours) == 1, kind
            outline = cv2.approxPolyDP(contours[0], 0.02 * cv2.arcLength(contours[0], True), True)
            assert len(outline) > 6 if count is None else len(outline) == count, (kind, len(outline))
            areas.append(mask.sum())
        assert max(areas) / min(areas) < 1.03, (shape_seed, areas)


def test_render_video_is_deterministic_per_seed():
    clip = synthetic.render_video("RotateCW", [3, 1], frames=5, size=24)
    assert clip.shape == (5, 24, 24, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, synthetic.render_video("RotateCW", [3, 1], frames=5, size=24))
    assert not np.array_equal(clip, synthetic.render_video("RotateCW", [3, 2], frames=5, size=24))
    # Consecutive frames differ (the camera moves) but are not unrelated noise.
    change = np.abs(np.diff(clip.astype(int), axis=0)).mean()
    assert 1 < change < 40
    with pytest.raises(ValueError, match="unknown demo class 'Jump'"):
        synthetic.render_video("Jump", 0, frames=5, size=24)
    boxes = synthetic.render_video("BoxRotateCW", [3, 1], frames=5, size=24)
    assert np.array_equal(boxes, synthetic.render_video("BoxRotateCW", [3, 1], frames=5, size=24))
    # The kind changes the objects only: same camera, different frames.
    assert not np.array_equal(boxes, clip)


def test_scene_region_matches_full_canvas():
    """Clips of a group draw only what they see of one scene; that part must be the same."""
    full = synthetic.render_scene([7, 0, 1], frames=6, size=24)
    side = synthetic.canvas_size(6, 24)
    assert full.shape == (side, side, 3)
    region = (side // 3, side // 4, side // 3 + 50, side // 4 + 40)
    part = synthetic.render_scene([7, 0, 1], frames=6, size=24, region=region)
    assert np.array_equal(part, full[region[1]:region[3], region[0]:region[2]])
    boxes = synthetic.render_scene([7, 0, 1], frames=6, size=24, kind="Box")
    part = synthetic.render_scene([7, 0, 1], frames=6, size=24, region=region, kind="Box")
    assert np.array_equal(part, boxes[region[1]:region[3], region[0]:region[2]])


@pytest.mark.parametrize("name", list(TRANSLATIONS))
def test_translation_moves_content_in_the_named_direction(tmp_path, name):
    size, frames = 48, 6
    window = cv2.createHanningWindow((size, size), cv2.CV_64F)
    expected = np.array(TRANSLATIONS[name], float)
    for clip_seed in range(2):
        path = synthetic.write_video(
            tmp_path / f"{name}{clip_seed}.avi",
            synthetic.render_video(name, [11, clip_seed], frames=frames, size=size),
        )
        video = decode(path)
        grey = [gray(frame).astype(np.float64) for frame in video]
        shift = np.mean(
            [cv2.phaseCorrelate(grey[t], grey[t + 1], window)[0] for t in range(frames - 1)], axis=0
        )
        cosine = shift @ expected / (np.linalg.norm(shift) * np.linalg.norm(expected))
        assert cosine > math.cos(math.radians(25)), (name, shift)
        # Phase correlation's sub-pixel peak is biased towards whole pixels, so
        # the amount is checked with dense flow against the generator's account.
        flow = np.mean([
            np.median(farneback(video[t], video[t + 1])[8:-8, 8:-8].reshape(-1, 2), axis=0)
            for t in range(frames - 1)
        ], axis=0)
        maps = synthetic.camera_path(name, [11, clip_seed], frames, size)
        truth = np.diff(maps[:, :, 2], axis=0).mean(0) / synthetic.SUPERSAMPLE
        assert np.abs(flow - truth).max() < 0.25, (name, flow, truth)
        assert 1.45 <= np.linalg.norm(truth) <= 3.05  # 2-4 px/frame at 64 px is 1.5-3 at 48


@pytest.mark.parametrize(
    "name, radial_sign, tangential_sign",
    [("RotateCW", 0, 1), ("RotateCCW", 0, -1), ("ZoomIn", 1, 0), ("ZoomOut", -1, 0)],
)
def test_rotation_and_zoom_turn_and_scale_the_right_way(name, radial_sign, tangential_sign):
    for clip_seed in range(2):
        video = synthetic.render_video(name, [12, clip_seed], frames=4, size=48)
        radial, tangential = np.mean(
            [radial_and_tangential(farneback(video[t], video[t + 1])) for t in range(3)], axis=0
        )
        main, other = (radial, tangential) if radial_sign else (tangential, radial)
        assert np.sign(main) == (radial_sign or tangential_sign), (name, radial, tangential)
        assert abs(main) > 0.03 and abs(other) < 0.5 * abs(main), (name, radial, tangential)


def test_a_single_frame_carries_no_class_information():
    """Colour and texture-scale statistics of one frame classify at chance; motion does not.

    The frame is taken at a random time. A brightness leak of 12 grey levels
    per class already lifts the first accuracy to about 0.37; the motion
    features of the very same clips classify almost perfectly.
    """
    classes = synthetic.motion_classes()[:8]
    pick = np.random.default_rng(0)
    appearance, motion, labels = [], [], []
    for label, name in enumerate(classes):
        for clip_seed in range(8):
            video = synthetic.render_video(name, [13, label, clip_seed], frames=12, size=32)
            t = pick.integers(11)
            frame = video[t]
            g = gray(frame).astype(np.float32)
            gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
            appearance.append([
                *frame.reshape(-1, 3).mean(0),
                *frame.reshape(-1, 3).std(0),
                np.mean(gx**2 + gy**2),
                cv2.Laplacian(g, cv2.CV_32F).var(),
            ])
            flow = farneback(video[t], video[t + 1])
            motion.append([flow[..., 0].mean(), flow[..., 1].mean(), *radial_and_tangential(flow)])
            labels.append(label)
    labels = np.array(labels)
    assert nearest_class_mean_accuracy(np.array(appearance), labels) < 1 / len(classes) + 0.125
    assert nearest_class_mean_accuracy(np.array(motion), labels) > 0.9


def test_a_frame_shows_the_kind_and_flow_shows_the_motion():
    """On the default classes, one frame's colours and edges give the kind and not the motion;
    flow gives the motion and not the kind."""
    classes = synthetic.demo_classes()
    pick = np.random.default_rng(1)
    appearance, motion, kinds, motions = [], [], [], []
    for label, name in enumerate(classes):
        for clip_seed in range(8):
            video = synthetic.render_video(name, [16, label, clip_seed], frames=12, size=32)
            t = pick.integers(11)
            frame = video[t]
            g = gray(frame).astype(np.float32)
            gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
            hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float32)
            hues = np.histogram(hsv[:, 0], bins=6, range=(0, 180), weights=hsv[:, 1])[0]
            appearance.append([
                *hues / hues.sum(), *frame.reshape(-1, 3).mean(0),
                np.mean(gx**2 + gy**2), cv2.Laplacian(g, cv2.CV_32F).var(),
            ])
            flow = farneback(video[t], video[t + 1])
            motion.append([flow[..., 0].mean(), flow[..., 1].mean(), *radial_and_tangential(flow)])
            kinds.append(label // 4)
            motions.append(label % 4)
    appearance, motion = np.array(appearance), np.array(motion)
    kinds, motions = np.array(kinds), np.array(motions)
    assert nearest_class_mean_accuracy(appearance, kinds) > 0.9
    assert nearest_class_mean_accuracy(appearance, motions) < 1 / 4 + 0.125
    assert nearest_class_mean_accuracy(motion, motions) > 0.9
    assert nearest_class_mean_accuracy(motion, kinds) < 1 / 2 + 0.15


@pytest.mark.parametrize("frames, size", [(40, 64), (100, 32), (2, 16)])
def test_no_frame_leaves_the_scene_canvas(frames, size):
    """Otherwise reflected borders would show in some classes and give them away."""
    side = synthetic.canvas_size(frames, size)
    view = synthetic.SUPERSAMPLE * size
    corners = np.array([[0, 0, 1], [view - 1, 0, 1], [0, view - 1, 1], [view - 1, view - 1, 1]], float)
    for name in synthetic.motion_classes():
        for clip_seed in range(30):
            for affine in synthetic.camera_path(name, [14, clip_seed], frames, size):
                seen = corners @ cv2.invertAffineTransform(affine).T
                assert seen.min() >= 1 and seen.max() <= side - 2, (name, clip_seed)


def test_write_video_round_trip_and_errors(tmp_path):
    frames = synthetic.render_video("ZoomIn", 5, frames=7, size=40)
    path = synthetic.write_video(tmp_path / "sub" / "clip.avi", frames, fps=12)
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12)
    capture.release()
    decoded = decode(path)
    assert decoded.shape == frames.shape
    # MJPG keeps brightness well; its 4:2:0 colour is coarse for small colourful frames.
    luma = lambda clip: np.stack([gray(f) for f in clip]).astype(int)
    assert np.abs(luma(decoded) - luma(frames)).mean() < 5
    assert np.abs(decoded.astype(int) - frames).mean() < 25
    grey = decode(synthetic.write_test_video(tmp_path / "grey.avi", frames[..., 0]))
    assert grey.shape == frames.shape
    assert np.abs(grey[..., 1].astype(int) - frames[..., 0]).mean() < 5
    with pytest.raises(VideoError, match=r"bad\.avi: frames must be uint8"):
        synthetic.write_video(tmp_path / "bad.avi", frames.astype(np.float32))
    with pytest.raises(VideoError, match=r"empty\.avi: frames must be"):
        synthetic.write_video(tmp_path / "empty.avi", frames[:0])
    with pytest.raises(VideoError, match=r"clip\.nosuchcontainer: OpenCV cannot write 'MJPG'"):
        synthetic.write_video(tmp_path / "clip.nosuchcontainer", frames)


def test_split_groups():
    assert synthetic.split_groups(5) == ([1, 2, 3], [4, 5])
    assert synthetic.split_groups(10) == (list(range(1, 8)), [8, 9, 10])
    assert synthetic.split_groups(2) == ([1], [2])
    assert synthetic.clips_per_group(7, 3) == [3, 2, 2]
    with pytest.raises(ValueError, match="groups must be an integer >= 2"):
        synthetic.split_groups(1)


def make(root, **overrides):
    args = dict(num_classes=3, videos_per_class=4, frames=6, size=32, seed=4, groups=4)
    args.update(overrides)
    return synthetic.make_demo_dataset(root, **args)


def test_demo_dataset_in_ucf101_layout(tmp_path):
    lines = []
    summary = make(tmp_path / "demo", log=lines.append)
    assert len(lines) == 3 and lines[0].startswith("[1/3] RoundTranslateLeft")
    assert summary["num_videos"] == 12 and summary["num_train"] == 9 and summary["num_test"] == 3
    assert json.loads((tmp_path / "demo" / "demo_data.json").read_text()) == summary
    splits = tmp_path / "demo" / "splits"
    # Byte for byte the official format: 1-based classInd, CRLF line ends.
    assert (splits / "classInd.txt").read_bytes() == (
        b"1 RoundTranslateLeft\r\n2 RoundTranslateRight\r\n3 RoundRotateCW\r\n"
    )
    # RoundRotateCCW is not in the set, so RoundRotateCW has no mirror class.
    assert summary["flip_label_map"] == str(splits / "flip_label_map.json")
    assert json.loads((splits / "flip_label_map.json").read_text()) == {
        "RoundTranslateLeft": "RoundTranslateRight", "RoundTranslateRight": "RoundTranslateLeft",
    }
    assert summary["flip_unpaired"] == ["RoundRotateCW"]
    train = (splits / "trainlist01.txt").read_bytes().decode().split("\r\n")
    test = (splits / "testlist01.txt").read_bytes().decode().split("\r\n")
    assert train[0] == "RoundTranslateLeft/v_RoundTranslateLeft_g01_c01.avi 1" and train[-1] == ""
    assert test[0] == "RoundTranslateLeft/v_RoundTranslateLeft_g04_c01.avi" and test[-1] == ""
    assert len(train) - 1 == 9 and len(test) - 1 == 3

    dataset = load_ucf101(splits, 1)
    assert dataset.classes == ["RoundTranslateLeft", "RoundTranslateRight", "RoundRotateCW"]
    group_of = lambda entry: (entry.label, re.search(r"_g(\d\d)_c\d\d$", entry.video_id).group(1))
    train_groups = {group_of(e) for e in dataset.splits["train"]}
    test_groups = {group_of(e) for e in dataset.splits["test"]}
    assert train_groups and test_groups and not train_groups & test_groups
    assert sorted(e.label for e in dataset.splits["test"]) == [0, 1, 2]

    for entry in dataset.splits["train"] + dataset.splits["test"]:
        video = decode(tmp_path / "demo" / "videos" / entry.path)
        assert video.shape == (6, 32, 32, 3), entry.path


def test_demo_dataset_is_deterministic_and_clips_of_a_group_share_a_scene(tmp_path):
    first = make(tmp_path / "a", num_classes=1, groups=2)
    make(tmp_path / "b", num_classes=1, groups=2)
    make(tmp_path / "c", num_classes=1, groups=2, seed=5)
    video_dir = Path(first["video_dir"])
    names = sorted(p.relative_to(video_dir) for p in video_dir.rglob("*.avi"))
    assert len(names) == 4
    for name in names:
        a, b, c = (decode(tmp_path / d / "videos" / name) for d in "abc")
        assert np.array_equal(a, b), name
        assert not np.array_equal(a, c), name
    # The middle frames of two clips of group 1 show one scene: they match
    # far better than clips of different groups do (colour histograms).
    def histogram(name):
        frames = decode(tmp_path / "a" / "videos" / "RoundTranslateLeft" / name)
        return cv2.calcHist([frames[3]], [0, 1, 2], None, [4, 4, 4], [0, 256] * 3).ravel()

    reference = histogram("v_RoundTranslateLeft_g01_c01.avi")
    same = cv2.compareHist(reference, histogram("v_RoundTranslateLeft_g01_c02.avi"), cv2.HISTCMP_CORREL)
    other = cv2.compareHist(reference, histogram("v_RoundTranslateLeft_g02_c01.avi"), cv2.HISTCMP_CORREL)
    assert same > other


def test_demo_dataset_refuses_bad_requests_and_overwrites_on_request(tmp_path):
    with pytest.raises(ValueError, match="num_classes=9 but only 8 classes exist"):
        make(tmp_path / "x", num_classes=9)
    with pytest.raises(ValueError, match="unknown kind 'Oval'"):
        make(tmp_path / "x", kinds=["Oval"])
    with pytest.raises(ValueError, match=r"translate=2.0,9.0 \(--translate_speed\): moves content"):
        make(tmp_path / "x", speeds=synthetic.Speeds(translate=(2.0, 9.0)))
    with pytest.raises(ValueError, match="videos_per_class=3 is fewer than groups=4"):
        make(tmp_path / "x", videos_per_class=3)
    with pytest.raises(ValueError, match="groups must be an integer >= 2"):
        make(tmp_path / "x", groups=1)
    assert not (tmp_path / "x").exists()

    tiny = dict(videos_per_class=2, groups=2, frames=3, size=16)
    make(tmp_path / "d", num_classes=2, **tiny)
    with pytest.raises(FileExistsError, match="already holds videos"):
        make(tmp_path / "d", num_classes=1, **tiny)
    make(tmp_path / "d", num_classes=1, overwrite=True, **tiny)
    assert [p.name for p in (tmp_path / "d" / "videos").iterdir()] == ["RoundTranslateLeft"]
    (tmp_path / "d" / "videos" / "RoundTranslateLeft" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt: not a demo video"):
        make(tmp_path / "d", num_classes=1, overwrite=True, **tiny)
    assert len(list((tmp_path / "d" / "videos" / "RoundTranslateLeft").glob("*.avi"))) == 2


def test_program_writes_the_data_set(tmp_path):
    command = [
        sys.executable, "-m", "avd_tf.apps.make_demo_data", "--output_dir", str(tmp_path / "demo"),
        "--num_classes", "2", "--videos_per_class", "3", "--groups", "3",
        "--frames", "4", "--size", "16", "--seed", "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "[1/2] RoundTranslateLeft: 3 videos"
    assert out[1] == "[2/2] RoundTranslateRight: 3 videos"
    assert out[-1].startswith("Wrote 6 videos (4 train, 2 test; 2 classes, 4 frames of 16x16)")
    video = decode(
        tmp_path / "demo" / "videos" / "RoundTranslateRight" / "v_RoundTranslateRight_g03_c01.avi"
    )
    assert video.shape == (4, 16, 16, 3)

    # Motion-only classes over mixed scenes, with their own speeds.
    command = command[:4] + [
        str(tmp_path / "demo2"), "--kinds", "", "--motions", "ZoomIn,TranslateUp", "--videos_per_class", "2",
        "--groups", "2", "--frames", "3", "--size", "16", "--translate_speed", "1,2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "demo2" / "demo_data.json").read_text())
    assert summary["classes"] == ["ZoomIn", "TranslateUp"]
    assert summary["speeds"]["translate"] == [1.0, 2.0]
    assert json.loads((tmp_path / "demo2" / "splits" / "flip_label_map.json").read_text()) == {}

    for flags, message in [
        (["--num_classes", "20"], "only 8 classes exist"),
        (["--motions", "Jump"], "unknown motion 'Jump'"),
        (["--rotate_speed", "3"], "--rotate_speed: expected two numbers LOW,HIGH, got '3'"),
    ]:
        bad = command[:4] + [str(tmp_path / "bad")] + flags
        done = subprocess.run(bad, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and message in done.stderr, (flags, done.stderr)
