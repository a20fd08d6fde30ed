"""Tests for avd_tf.classify.scores (video scores, fusion, accuracy, class matching) and .report."""
import numpy as np
import pytest

from avd_tf.classify import report, scores
from conftest import SHARED_DATA, needs_real

# Two streams, two videos, three classes (hand-computed below).
A = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
B = np.array([[0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
LABELS = np.array([1, 2])


def test_fuse_mean_by_hand():
    fused = scores.fuse([A, B])
    np.testing.assert_allclose(fused, [[0.45, 0.45, 0.10], [0.15, 0.30, 0.55]])
    # Video 0 ties classes 0 and 1: the lower index wins, so it is wrong.
    assert scores.topk_accuracy(fused, LABELS, 1) == 0.5


def test_fuse_weighted_by_hand():
    # Weights 1 : 1.5 normalise to 0.4 : 0.6.
    np.testing.assert_allclose(scores.fusion_weights(2, [1, 1.5], "weighted"), [0.4, 0.6])
    fused = scores.fuse([A, B], weights=[1, 1.5], method="weighted")
    np.testing.assert_allclose(fused, [[0.42, 0.48, 0.10], [0.14, 0.26, 0.60]])
    assert scores.topk_accuracy(fused, LABELS, 1) == 1.0
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    # Scaling all weights changes nothing.
    np.testing.assert_allclose(scores.fuse([A, B], [2, 3], "weighted"), fused)


def test_fuse_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method 'weighted'"):
        scores.fuse([A, B], weights=[1, 2])  # weights with method "mean"
    with pytest.raises(ValueError, match="needs 2 weights"):
        scores.fuse([A, B], weights=[1], method="weighted")
    with pytest.raises(ValueError, match="needs one weight"):
        scores.fuse([A, B], method="weighted")
    with pytest.raises(ValueError, match="non-negative"):
        scores.fuse([A, B], weights=[1, -1], method="weighted")
    with pytest.raises(ValueError, match="unknown fusion method"):
        scores.fuse([A, B], method="max")
    with pytest.raises(ValueError, match="differ in shape"):
        scores.fuse([A, B[:1]])


def test_topk_accuracy():
    probs = np.array([[0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    assert scores.topk_accuracy(probs, [2, 2], 1) == 0.5
    assert scores.topk_accuracy(probs, [2, 2], 2) == 1.0
    assert scores.topk_accuracy(probs, [0, 0], 2) == 0.0
    assert scores.topk_accuracy(probs, [0, 0], 3) == 1.0
    # k beyond the class count: every row is right.
    assert scores.topk_accuracy(probs, [0, 1], 5) == 1.0


def test_topk_ties_go_to_the_lower_class_index():
    flat = np.full((1, 4), 0.25)
    assert scores.topk_accuracy(flat, [0], 1) == 1.0
    assert scores.topk_accuracy(flat, [3], 1) == 0.0
    assert scores.topk_accuracy(flat, [3], 3) == 0.0
    assert scores.topk_accuracy(flat, [3], 4) == 1.0
    tie = np.array([[0.1, 0.45, 0.45]])
    assert scores.topk_accuracy(tie, [1], 1) == 1.0
    assert scores.topk_accuracy(tie, [2], 1) == 0.0
    # The same answer as np.argmax on random ties.
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 3, (200, 5)).astype(float)
    labels = rng.integers(0, 5, 200)
    assert scores.topk_accuracy(probs, labels, 1) == np.mean(np.argmax(probs, 1) == labels)


def test_topk_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be at least 1"):
        scores.topk_accuracy(A, LABELS, 0)
    with pytest.raises(ValueError, match="outside"):
        scores.topk_accuracy(A, [0, 3], 1)
    with pytest.raises(ValueError, match="NaN"):
        scores.topk_accuracy(np.array([[np.nan, 1.0]]), [0], 1)
    with pytest.raises(ValueError, match="2 integer labels"):
        scores.topk_accuracy(A, [0], 1)


def test_video_scores_average_clips_per_video():
    clip_probs = np.array([
        [0.9, 0.1, 0.0],  # v2
        [0.2, 0.8, 0.0],  # v1
        [0.0, 0.4, 0.6],  # v2
        [0.4, 0.6, 0.0],  # v1
        [0.3, 0.3, 0.4],  # v1
        [0.0, 0.0, 1.0],  # v3
    ])
    ids = [b"v2", "v1", "v2", "v1", b"v1", "v3"]
    labels = [2, 0, 2, 0, 0, 1]
    vids, probs, vlabels = scores.video_scores(clip_probs, ids, labels)
    assert list(vids) == ["v1", "v2", "v3"]
    np.testing.assert_allclose(probs, [[0.3, 1.7 / 3, 0.4 / 3], [0.45, 0.25, 0.3], [0, 0, 1]])
    np.testing.assert_array_equal(vlabels, [0, 2, 1])

    order = np.random.default_rng(1).permutation(len(ids))
    shuffled = scores.video_scores(clip_probs[order], [ids[i] for i in order], [labels[i] for i in order])
    np.testing.assert_array_equal(shuffled[0], vids)
    np.testing.assert_allclose(shuffled[1], probs)
    np.testing.assert_array_equal(shuffled[2], vlabels)


def test_video_scores_errors():
    with pytest.raises(ValueError, match="video 'v1' has images labelled 0 and 1"):
        scores.video_scores(A, ["v1", "v1"], [0, 1])
    with pytest.raises(ValueError, match="2 score rows but 3 video ids"):
        scores.video_scores(A, ["a", "b", "c"], [0, 1])
    with pytest.raises(ValueError, match="no image scores"):
        scores.video_scores(np.zeros((0, 3)), [], [])


def _stream(ids, probs, labels):
    return np.asarray(ids), np.asarray(probs, dtype=float), np.asarray(labels)


def test_align_orders_videos_by_id_and_keeps_common_ones():
    frame = _stream(["b", "a", "c"], [[0, 1], [1, 0], [0.5, 0.5]], [1, 0, 1])
    flow = _stream(["a", "b"], [[0.7, 0.3], [0.2, 0.8]], [0, 1])
    ids, probs, labels = scores.align({"frame": frame, "flow": flow})
    assert list(ids) == ["a", "b"]
    np.testing.assert_allclose(probs["frame"], [[1, 0], [0, 1]])
    np.testing.assert_allclose(probs["flow"], [[0.7, 0.3], [0.2, 0.8]])
    np.testing.assert_array_equal(labels, [0, 1])


def test_align_errors_give_counts():
    frame = _stream(["b", "a", "c"], np.eye(3)[:, :2], [1, 0, 1])
    flow = _stream(["a", "b"], np.eye(2), [0, 1])
    with pytest.raises(ValueError, match=r"different videos \(frame 3 videos, flow 2 videos; 2 in all of them\)"):
        scores.align({"frame": frame, "flow": flow}, strict=True)
    other = _stream(["x"], [[1, 0]], [0])
    with pytest.raises(ValueError, match=r"share no video \(frame 3 videos, other 1 videos; 0 in all"):
        scores.align({"frame": frame, "other": other})
    relabelled = _stream(["a", "b"], np.eye(2), [0, 0])
    with pytest.raises(ValueError, match="video 'b' is labelled 1 by stream 'frame' and 0 by stream 'flow'"):
        scores.align({"frame": frame, "flow": relabelled})


def test_confusion_matrix():
    matrix = scores.confusion_matrix([0, 1, 1, 2, 0], [0, 1, 2, 2, 1], 4)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = expected[1, 1] = expected[2, 1] = expected[2, 2] = expected[1, 0] = 1
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == 5
    with pytest.raises(ValueError, match="label 4 is outside"):
        scores.confusion_matrix([4], [0], 4)


def _class_names(name):
    if name == "ucf101":
        lines = (SHARED_DATA / "ucf101_splits" / "classInd.txt").read_text().split("\n")
        return [line.split()[1] for line in lines if line.strip()]
    lines = (SHARED_DATA / "hmdb51_splits" / "class_list.txt").read_text().split("\n")
    return [line.strip() for line in lines if line.strip()]


def test_match_classes_ignores_case_and_separators_only():
    a = ["ApplyEyeMakeup", "PullUps", "Fencing"]
    b = ["fencing", "apply_eye_makeup", "pullup", "apply eye makeup "]
    with pytest.raises(ValueError, match="'apply_eye_makeup' and 'apply eye makeup '"):
        scores.match_classes(a, b)
    # Only normalised exact names match: "PullUps" is not "pullup".
    assert scores.match_classes(a, b[:3]) == {0: 2, 1: 0}
    assert scores.match_classes(a, ["Apply-Eye-Makeup"]) == {0: 0}
    assert scores.match_classes(a, ["walk"]) == {}


@needs_real
def test_match_classes_on_the_real_ucf101_and_hmdb51_names():
    ucf, hmdb = _class_names("ucf101"), _class_names("hmdb51")
    assert len(ucf) == 101 and len(hmdb) == 51
    mapping = scores.match_classes(ucf, hmdb)
    assert {hmdb[b]: ucf[a] for b, a in mapping.items()} == {"fencing": "Fencing", "punch": "Punch"}
    reverse = scores.match_classes(hmdb, ucf)
    assert {ucf[b]: hmdb[a] for b, a in reverse.items()} == {"Fencing": "fencing", "Punch": "punch"}


def test_mapping_from_pairs_and_restriction():
    model = ["Fencing", "Punch", "PullUps"]
    data = ["punch", "golf", "pullup", "fencing"]
    mapping = scores.mapping_from_pairs({"pullup": "PullUps", "Punch": "punch"}, model, data)
    assert mapping == {0: 1, 2: 2}
    with pytest.raises(ValueError, match="'walk' is not a class of the test data"):
        scores.mapping_from_pairs({"walk": "Punch"}, model, data)
    with pytest.raises(ValueError, match="both map to"):
        scores.mapping_from_pairs({"punch": "Punch", "golf": "Punch"}, model, data)

    # Model scores (columns: Fencing, Punch, PullUps) of four test videos.
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])
    labels = np.array([0, 1, 2, 3])  # punch, golf, pullup, fencing
    keep, kept, new_labels, matched = scores.restrict_to_matches(probs, labels, scores.match_classes(model, data))
    np.testing.assert_array_equal(keep, [True, False, False, True])  # "pullup" has no name match
    np.testing.assert_array_equal(matched, [0, 3])
    # Columns in test-class order (punch, fencing) -> model (Punch, Fencing), renormalised.
    np.testing.assert_allclose(kept, [[0.3 / 0.8, 0.5 / 0.8], [0.2 / 0.4, 0.2 / 0.4]])
    np.testing.assert_array_equal(new_labels, [0, 1])
    with pytest.raises(ValueError, match="no class of the test data matches"):
        scores.restrict_to_matches(probs, labels, {})


RESULTS = {
    "dataset": "ucf101",
    "streams": {
        "frame": {"top1": 0.836, "top5": 0.95, "num_videos": 10},
        "flow": {"top1": 0.865, "top5": 0.97, "num_videos": 10},
        "avd_rgb": {"top1": 0.887, "top5": 0.98, "num_videos": 10},
        "avd_flow": {"top1": 0.872, "top5": 0.97, "num_videos": 10},
    },
    "fusions": {
        "flow+avd_flow": {"top1": 0.911, "top5": 0.99, "num_videos": 10},
        "avd_flow+avd_rgb": {"top1": 0.919, "top5": 0.99, "num_videos": 10},
        "flow+avd_flow+avd_rgb": {"top1": 0.969, "top5": 1.0, "num_videos": 10},
    },
}


def test_markdown_table_is_laid_out_like_table_1():
    assert report.markdown_table(RESULTS) == (
        "|  | UCF101 |\n"
        "|---|---:|\n"
        "| RGB | 83.6 |\n"
        "| OF | 86.5 |\n"
        "| AVD (RGB) | 88.7 |\n"
        "| AVD (OF) | 87.2 |\n"
        "| OF+AVD (OF) | 91.1 |\n"
        "| AVD (OF)+AVD (RGB) | 91.9 |\n"
        "| OF+AVD (OF)+AVD (RGB) | **96.9** |\n"
    )


def test_markdown_table_several_datasets_and_kinetics_top5():
    hmdb = {"streams": {"frame": {"top1": 0.535, "top5": 0.8, "num_videos": 3}}, "fusions": {}}
    kinetics = {
        "streams": {"frame": {"top1": 0.6134, "top5": 0.831, "num_videos": 5},
                    "avd_rgb": {"top1": 0.679, "top5": 0.892, "num_videos": 5}},
    }
    table = report.markdown_table({"ucf101": RESULTS, "hmdb51": hmdb, "kinetics": kinetics})
    lines = table.splitlines()
    assert lines[0] == "|  | UCF101 | HMDB51 | Kinetics top-1 | Kinetics top-5 |"
    assert lines[2] == "| RGB | 83.6 | 53.5 | 61.3 | 83.1 |"
    assert lines[3] == "| OF | 86.5 | – | – | – |"
    assert lines[4] == "| AVD (RGB) | 88.7 | – | **67.9** | **89.2** |"
    assert len(lines) == 2 + 7
    assert "top-5" not in report.markdown_table({"ucf101": RESULTS}, top5=False)
    assert "UCF101 top-5" in report.markdown_table({"ucf101": RESULTS}, top5=True)


def test_display_names():
    assert [report.display_name(s) for s in report.DISPLAY_NAMES] == [
        "RGB", "OF", "Mean frame", "DI (RGB)", "DI (OF)", "AVD (RGB)", "AVD (OF)"]
    assert report.display_name("dynamic+dynamic_flow+frame") == "DI (RGB)+DI (OF)+RGB"
    assert report.display_name("my_stream") == "my_stream"


def test_backbone_and_cross_dataset_tables():
    def avd(top1):
        return {"streams": {"avd_rgb": {"top1": top1, "top5": 1.0, "num_videos": 1}}}

    table = report.backbone_table({"alexnet": {"ucf101": avd(0.833)}, "resnet101": {"ucf101": avd(0.902)}})
    assert table.splitlines()[0] == "| AVD (RGB) | UCF101 |"
    assert table.splitlines()[2:] == ["| AlexNet | 83.3 |", "| ResNet-101 | **90.2** |"]
    cross = report.cross_dataset_table({
        "ucf101": {"ucf101": avd(0.887), "hmdb51": avd(0.597)},
        "hmdb51": {"ucf101": avd(0.833), "hmdb51": avd(0.628)},
    })
    assert cross.splitlines()[2:] == ["| UCF101 | **88.7** | 59.7 |", "| HMDB51 | 83.3 | **62.8** |"]


def test_plot_confusion_writes_png(tmp_path):
    import matplotlib.image

    path = report.plot_confusion(np.array([[3, 1, 0], [0, 2, 0], [1, 0, 4]]), ["a", "b", "c"],
                                 str(tmp_path / "cm.png"), title="RGB")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.std() > 0
    many = report.plot_confusion(np.eye(120, dtype=int), [f"c{i}" for i in range(120)], str(tmp_path / "big.png"))
    assert matplotlib.image.imread(many).shape[0] > image.shape[0]
    with pytest.raises(ValueError, match="bad.png: confusion matrix of shape"):
        report.plot_confusion(np.eye(3), ["a", "b"], str(tmp_path / "bad.png"))
