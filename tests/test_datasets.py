"""Split readers on the real UCF101/HMDB51/Kinetics split files and on small folders."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from avd_tf.datasets import (
    SplitFileError,
    VideoEntry,
    load_dataset,
    load_folder,
    load_hmdb51,
    load_kinetics,
    load_ucf101,
    resolve_path,
)
from conftest import SHARED_DATA, needs_real

UCF_SPLITS = SHARED_DATA / "ucf101_splits"
HMDB_SPLITS = SHARED_DATA / "hmdb51_splits"
KINETICS_SPLITS = SHARED_DATA / "kinetics400"



@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory) -> bytes:
    """A real 4-frame 16x16 MJPG AVI, copied to every file the tests need."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (16, 16))
    for i in range(4):
        writer.write(np.full((16, 16, 3), 40 * i, np.uint8))
    writer.release()
    return path.read_bytes()


def _put(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- real files


@needs_real
def test_ucf101_real_split1():
    data = load_ucf101(UCF_SPLITS, split=1)
    train, test = data.splits["train"], data.splits["test"]
    assert (len(train), len(test), len(data.classes)) == (9537, 3783, 101)
    assert data.classes[0] == "ApplyEyeMakeup" and data.classes[36] == "HandstandPushups"
    assert train[0] == VideoEntry(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        0,
        "ApplyEyeMakeup",
        "v_ApplyEyeMakeup_g08_c01",
    )
    for entries in (train, test):
        assert {e.label for e in entries} == set(range(101))
        assert all(e.label_name == data.classes[e.label] for e in entries)
        assert all(Path(e.path).parts[0].lower() == e.label_name.lower() for e in entries)
    handstand = [e for e in train + test if e.label == 36]
    assert handstand and all(
        e.path.startswith("HandstandPushups/v_HandStandPushups_") for e in handstand
    )
    train_ids, test_ids = {e.video_id for e in train}, {e.video_id for e in test}
    assert len(train_ids) == len(train) and not train_ids & test_ids
    assert len(train_ids | test_ids) == 13320


@needs_real
@pytest.mark.parametrize("split,n_train,n_test", [(2, 9586, 3734), (3, 9624, 3696)])
def test_ucf101_real_other_splits(split, n_train, n_test):
    data = load_dataset("ucf101", split_dir=UCF_SPLITS, split=split)
    assert (len(data.splits["train"]), len(data.splits["test"])) == (n_train, n_test)
    assert min(e.label for e in data.splits["test"]) == 0
    assert max(e.label for e in data.splits["test"]) == 100


@needs_real
@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_real(split):
    data = load_hmdb51(HMDB_SPLITS, split=split)
    assert len(data.classes) == 51 and data.classes == sorted(data.classes)
    assert {"brush_hair", "climb_stairs", "shoot_gun", "sword_exercise"} <= set(data.classes)
    train, test = data.splits["train"], data.splits["test"]
    assert (len(train), len(test)) == (3570, 1530)
    # HMDB51's splits put 70 videos of every class in train and 30 in test.
    for entries, per_class in ((train, 70), (test, 30)):
        counts = np.bincount([e.label for e in entries], minlength=51)
        assert counts.tolist() == [per_class] * 51
        assert all(e.path == f"{e.label_name}/{e.video_id}.avi" for e in entries)
    assert not {e.video_id for e in train} & {e.video_id for e in test}


@needs_real
def test_kinetics_real_validate_only():
    data = load_dataset("kinetics", split_dir=KINETICS_SPLITS)
    assert len(data.classes) == 400 and data.classes == sorted(data.classes)
    assert {"petting animal (not cat)", "massaging person's head"} <= set(data.classes)
    assert data.splits["train"] == []
    test = data.splits["test"]
    # validate.csv has 18375 rows and no repeated clip.
    assert len(test) == 18375 and len({e.video_id for e in test}) == 18375
    assert test[0] == VideoEntry(
        "--07WQ2iBlw_000001_000011.mp4",
        data.classes.index("javelin throw"),
        "javelin throw",
        "--07WQ2iBlw_000001_000011",
    )
    assert all(re.fullmatch(r".{11}_\d{6}_\d{6}", e.video_id) for e in test)
    assert all(e.path == e.video_id + ".mp4" for e in test)
    assert {e.label for e in test} == set(range(400))


@needs_real
def test_load_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="ucf101, hmdb51, kinetics, folder"):
        load_dataset("ucf-101", split_dir=UCF_SPLITS)
    with pytest.raises(ValueError, match="split_dir.*classInd.txt"):
        load_dataset("ucf101")
    with pytest.raises(ValueError, match="split_dir.*_test_split1.txt"):
        load_dataset("hmdb51", video_dir=tmp_path)
    with pytest.raises(ValueError, match="split_dir.*validate.csv"):
        load_dataset("kinetics")
    with pytest.raises(ValueError, match="video_dir"):
        load_dataset("folder", split_dir=UCF_SPLITS)
    for name, split_dir in (("ucf101", UCF_SPLITS), ("hmdb51", HMDB_SPLITS)):
        with pytest.raises(ValueError, match="split must be 1, 2 or 3"):
            load_dataset(name, split_dir=split_dir, split=4)
    shutil.copy(UCF_SPLITS / "classInd.txt", tmp_path / "classInd.txt")
    with pytest.raises(SplitFileError, match=r"trainlist02\.txt: split file not found"):
        load_dataset("ucf101", split_dir=tmp_path, split=2)
    with pytest.raises(SplitFileError, match="no Kinetics CSV.*validate.csv"):
        load_dataset("kinetics", split_dir=tmp_path)
    with pytest.raises(SplitFileError, match="not found"):
        load_dataset("hmdb51", split_dir=tmp_path / "missing")


# ---------------------------------------------------------------- UCF101


def _ucf_split_dir(root: Path, trainlist: str, testlist: str) -> Path:
    # CRLF endings, blank lines and trailing blanks, as in (or worse than) the real files.
    classes = "1 ApplyEyeMakeup  \r\n\r\n2 HandstandPushups\r\n"
    root.mkdir()
    for name, text in (("classInd.txt", classes), ("trainlist01.txt", trainlist),
                       ("testlist01.txt", testlist)):
        (root / name).write_bytes(text.encode())
    return root


def test_ucf101_handstand_case_resolves_on_disk(tmp_path, video_bytes):
    split_dir = _ucf_split_dir(
        tmp_path / "splits",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\n"
        "HandstandPushups/v_HandStandPushups_g01_c01.avi 2 \r\n\r\n",
        "handstandpushups/v_HandStandPushups_g02_c01.avi\r\n"
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi\r\n"
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi\r\n",
    )
    videos = tmp_path / "UCF-101"
    on_disk = {
        "eye": _put(videos, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", video_bytes),
        "hs1": _put(videos, "HandStandPushups/v_HandStandPushups_g01_c01.avi", video_bytes),
        "hs2": _put(videos, "HandStandPushups/v_HandStandPushups_g02_c01.avi", video_bytes),
        # A copy converted to another container keeps its stem.
        "mp4": _put(videos, "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.mp4", video_bytes),
    }
    data = load_dataset("ucf101", video_dir=videos, split_dir=split_dir, split=1)
    assert data.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    train, test = data.splits["train"], data.splits["test"]
    assert [(e.label, e.label_name) for e in train] == [
        (0, "ApplyEyeMakeup"), (1, "HandstandPushups")
    ]
    assert [e.label for e in test] == [1, 0, 0]
    assert test[0].label_name == "HandstandPushups"
    assert test[0].path == "handstandpushups/v_HandStandPushups_g02_c01.avi"

    resolved = [resolve_path(videos, e) for e in train + test]
    expected = [on_disk["eye"], on_disk["hs1"], on_disk["hs2"], on_disk["mp4"], None]
    assert resolved == [None if p is None else str(p) for p in expected]
    capture = cv2.VideoCapture(resolved[1])
    assert capture.isOpened() and capture.read()[0]
    capture.release()


def test_ucf101_trainlist_label_disagreeing_with_classind_names_file_and_line(tmp_path):
    split_dir = _ucf_split_dir(
        tmp_path / "splits",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\n\r\n"
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi 2\r\n",
        "",
    )
    with pytest.raises(SplitFileError) as error:
        load_ucf101(split_dir, split=1)
    message = str(error.value)
    assert "trainlist01.txt:3" in message and "HandstandPushups" in message
    assert "ApplyEyeMakeup" in message

    (split_dir / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 3\n")
    with pytest.raises(SplitFileError, match=r"trainlist01\.txt:1: label 3 is outside"):
        load_ucf101(split_dir, split=1)


def test_ucf101_unknown_test_class_gets_label_minus_one(tmp_path):
    split_dir = _ucf_split_dir(
        tmp_path / "splits",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n",
        "Skydiving/v_Skydiving_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi\n",
    )
    test = load_ucf101(split_dir, split=1).splits["test"]
    assert [(e.label, e.label_name, e.video_id) for e in test] == [
        (-1, "Skydiving", "v_Skydiving_g01_c01"),
        (0, "ApplyEyeMakeup", "v_ApplyEyeMakeup_g02_c01"),
    ]


def test_ucf101_malformed_lines_are_reported(tmp_path):
    split_dir = _ucf_split_dir(tmp_path / "splits", "v_ApplyEyeMakeup_g01_c01.avi 1\n", "")
    with pytest.raises(SplitFileError, match=r"trainlist01\.txt:1: expected a '<Class>/<file>'"):
        load_ucf101(split_dir)
    (split_dir / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(SplitFileError, match=r"classInd\.txt: class indices must run 1\.\.2"):
        load_ucf101(split_dir)


# ---------------------------------------------------------------- HMDB51


def test_hmdb51_flags_underscored_classes_and_errors(tmp_path):
    (tmp_path / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n\n")
    (tmp_path / "climb_stairs_test_split1.txt").write_text("d.avi 2\ne.avi 1\n")
    (tmp_path / "climb_stairs_test_split2.txt").write_text("d.avi 1\ne.avi 2\n")
    (tmp_path / "class_list.txt").write_text("brush_hair\nclimb_stairs\n")
    data = load_hmdb51(tmp_path, split=1)
    assert data.classes == ["brush_hair", "climb_stairs"]
    assert data.splits["train"] == [
        VideoEntry("brush_hair/a.avi", 0, "brush_hair", "a"),
        VideoEntry("climb_stairs/e.avi", 1, "climb_stairs", "e"),
    ]
    assert [e.path for e in data.splits["test"]] == ["brush_hair/b.avi", "climb_stairs/d.avi"]
    assert load_hmdb51(tmp_path, split=2).classes == ["climb_stairs"]
    with pytest.raises(SplitFileError, match=r"no <class>_test_split3\.txt files"):
        load_hmdb51(tmp_path, split=3)

    (tmp_path / "climb_stairs_test_split1.txt").write_text("d.avi 2\ne.avi 3\n")
    with pytest.raises(SplitFileError, match=r"climb_stairs_test_split1\.txt:2: expected"):
        load_hmdb51(tmp_path, split=1)
    # The same video under two classes would be a silently wrong label.
    (tmp_path / "climb_stairs_test_split1.txt").write_text("a.avi 1\n")
    with pytest.raises(SplitFileError, match=r"climb_stairs_test_split1\.txt:1: video 'a'"):
        load_hmdb51(tmp_path, split=1)


# ---------------------------------------------------------------- Kinetics


def test_kinetics_nested_layout_resolves_by_file_name(tmp_path, video_bytes):
    splits = tmp_path / "annotations"
    splits.mkdir()
    (splits / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        'petting animal (not cat),aaaaaaaaaaa,1,11,train,0\n'
        '"say ""hi"", loudly",bbbbbbbbbbb,30.0,40.0,train,0\n'
        "abseiling,ccccccccccc,0,10,train,0\n"
        "abseiling,ccccccccccc,0,10,train,0\n"
    )
    (splits / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "massaging person's head,-dddddddddd,125,135,validate\n"
        "abseiling,Eeeeeeeeeee,7,17,validate\n"
        "abseiling,fffffffffff,3,13,validate\n"
    )
    data = load_kinetics(splits)
    assert data.classes == [
        "abseiling", "massaging person's head", "petting animal (not cat)", 'say "hi", loudly'
    ]
    train, test = data.splits["train"], data.splits["test"]
    assert [e.video_id for e in train] == [
        "aaaaaaaaaaa_000001_000011", "bbbbbbbbbbb_000030_000040", "ccccccccccc_000000_000010"
    ]
    assert [(e.label, e.label_name) for e in train] == [
        (2, "petting animal (not cat)"), (3, 'say "hi", loudly'), (0, "abseiling")
    ]
    assert test[0] == VideoEntry("-dddddddddd_000125_000135.mp4", 1, "massaging person's head",
                                 "-dddddddddd_000125_000135")

    videos = tmp_path / "kinetics"
    on_disk = [
        _put(videos, "train/petting animal (not cat)/aaaaaaaaaaa_000001_000011.mp4", video_bytes),
        _put(videos, "train/say hi/bbbbbbbbbbb_000030_000040.webm", video_bytes),
        _put(videos, "ccccccccccc_000000_000010.mkv", video_bytes),
        _put(videos, "massaging person's head/-dddddddddd_000125_000135.mp4", video_bytes),
    ]
    # YouTube ids are case-sensitive: this is another video than Eeeeeeeeeee.
    _put(videos, "validate/abseiling/eeeeeeeeeee_000007_000017.mp4", video_bytes)
    _put(videos, "fffffffffff_000003_000013.json", b"{}")
    resolved = [resolve_path(videos, e) for e in train + test]
    assert resolved == [str(p) for p in on_disk] + [None, None]


def test_kinetics_reports_bad_rows(tmp_path):
    (tmp_path / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaaaaaaaaaa,1,11,validate\n"
        "abseiling,bbbbbbbbbbb,soon,11,validate\n"
    )
    with pytest.raises(SplitFileError, match=r"validate\.csv:3: time_start 'soon' is not a number"):
        load_kinetics(tmp_path)
    (tmp_path / "validate.csv").write_text("youtube_id,time_start,time_end\naaaaaaaaaaa,1,11\n")
    with pytest.raises(SplitFileError, match=r"validate\.csv: header lacks column\(s\) label"):
        load_kinetics(tmp_path)
    (tmp_path / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaaaaaaaaaa,1,11,validate\n"
        "archery,aaaaaaaaaaa,1.0,11,validate\n"
    )
    with pytest.raises(SplitFileError, match=r"validate\.csv:3: video 'aaaaaaaaaaa_000001_000011'"):
        load_kinetics(tmp_path)


# ---------------------------------------------------------------- folders


def test_folder_with_split_folders(tmp_path, video_bytes):
    for rel in ("train/run/r1.mp4", "train/run/sub/r2.AVI", "train/walk/w1.mkv",
                "val/walk/w2.webm", "val/jump/j1.mov"):
        _put(tmp_path, rel, video_bytes)
    for rel in ("train/run/notes.txt", "train/run/frame.jpg", "train/run/._r1.mp4",
                "train/.cache/x.mp4", "val/empty/readme.md"):
        _put(tmp_path, rel, b"not a video")
    data = load_dataset("folder", video_dir=tmp_path)
    assert data.classes == ["jump", "run", "walk"]
    assert data.splits["train"] == [
        VideoEntry("train/run/r1.mp4", 1, "run", "train/run/r1"),
        VideoEntry("train/run/sub/r2.AVI", 1, "run", "train/run/sub/r2"),
        VideoEntry("train/walk/w1.mkv", 2, "walk", "train/walk/w1"),
    ]
    assert [(e.path, e.label) for e in data.splits["test"]] == [
        ("val/jump/j1.mov", 0), ("val/walk/w2.webm", 2)
    ]
    assert all(resolve_path(tmp_path, e) for e in data.splits["train"] + data.splits["test"])

    # test/ wins over val/ when both exist.
    _put(tmp_path, "test/walk/w3.mp4", video_bytes)
    assert [e.path for e in load_folder(tmp_path).splits["test"]] == ["test/walk/w3.mp4"]
    shutil.rmtree(tmp_path / "test")
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(SplitFileError, match="only one of the split folders"):
        load_folder(tmp_path)


def _class_folders(root: Path, video_bytes: bytes) -> set[str]:
    paths = {f"{name}/clip_{i:03d}.mp4" for name in ("walk", "run") for i in range(40)}
    for rel in paths:
        _put(root, rel, video_bytes)
    _put(root, "walk/list.txt", b"")
    return paths


def test_folder_hash_split_is_deterministic_and_disjoint(tmp_path, video_bytes):
    paths = _class_folders(tmp_path / "a", video_bytes)
    first = load_folder(tmp_path / "a", test_fraction=0.3)
    assert first.classes == ["run", "walk"]
    train = {e.path for e in first.splits["train"]}
    test = {e.path for e in first.splits["test"]}
    assert not train & test and train | test == paths
    assert 0.15 < len(test) / len(paths) < 0.45
    assert all(e.label == first.classes.index(e.path.split("/")[0])
               for e in first.splits["train"] + first.splits["test"])
    # Same relative paths elsewhere, read again: the same split. SHA-1 of the
    # relative path puts these four in test (Python's hash() would differ).
    _class_folders(tmp_path / "b", video_bytes)
    assert load_folder(tmp_path / "b", test_fraction=0.3) == first
    golden = {f"{c}/clip_{i:03d}.mp4" for c in ("walk", "run") for i in range(4)}
    assert test & golden == {"walk/clip_000.mp4", "walk/clip_001.mp4",
                             "run/clip_001.mp4", "run/clip_003.mp4"}

    assert load_folder(tmp_path / "a", test_fraction=0.0).splits["test"] == []
    assert load_folder(tmp_path / "a", test_fraction=1.0).splits["train"] == []
    with pytest.raises(ValueError, match="test_fraction"):
        load_folder(tmp_path / "a", test_fraction=1.5)


def test_folder_without_videos_is_an_error(tmp_path):
    _put(tmp_path, "walk/readme.txt", b"")
    with pytest.raises(SplitFileError, match="no video files"):
        load_folder(tmp_path)
    with pytest.raises(SplitFileError, match="video folder not found"):
        load_folder(tmp_path / "missing")
