"""Every program fails cleanly: a bad invocation or damaged input ends with a non-zero
exit, no traceback and one last stderr line "<program>: <file or flag>: <reason>".

One table of cases runs through the installed console scripts. The folders they
need are made once: six 12-frame 32x32 videos prepared with TV-L1 flow and
without flow, an AVD flow model trained by avd-train for one step and a flow
classifier fine-tuned by avd-finetune for one step; then damaged copies and
text files where Keras files belong. The cases run two at a time (most start
TensorFlow, which takes 10-20 s on 2 cores).
"""
from __future__ import annotations

import fnmatch

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from avd_tf.records.convert import ConvertOptions
from conftest import prepare_folder, write_motion_videos

pytestmark = pytest.mark.slow  # some 20 programs start TensorFlow: minutes on 2 cores

CLASSES = ["TranslateLeft", "TranslateRight"]
TIMEOUT = 300
TINY_AVD = ["--preset", "small", "--num_frames", "8", "--image_size", "32", "--epochs", "1",
            "--steps_per_epoch", "1", "--batch_size", "2", "--validation_steps", "1",
            "--encoder_filters", "4,4,4,4", "--decoder_filters", "4,4,4,4", "--noprogress"]
TINY_CLASSIFIER = ["--backbone", "alexnet", "--weights", "none", "--input_size", "64",
                   "--epochs", "1", "--steps_per_epoch", "1", "--batch_size", "4", "--noprogress"]
NOT_A_FOLDER = "Not a directory (a file stands where the path needs a folder)"
NO_FOLDER = "no such folder; prepared data is a folder that avd-prepare makes"
NO_MANIFEST = ("no manifest.json in this folder, so not prepared data (avd-prepare writes it "
               "when it finishes)")
# Which video is named first depends on the seeded shard order: '*' matches it.
NO_FLOW = "{w}/rgb/manifest.json: video 'train/*' has no optical flow frames"

# (case, argv, text of the last stderr line after "<program>: "); {w} is the work folder:
# videos/, flow/ and rgb/ (prepared with and without flow), avd_flow/ (avd-train),
# cls_flow/ (avd-finetune), damaged/ (flow/ with a flipped byte in its test shard),
# text_avd/ and text_cls/ (config.json beside a text file named encoder.keras / model.keras),
# afile (a regular file) and notes.txt.
CASES = [
    ("flag value not a number", ["avd-prepare", "--dataset", "folder", "--video_dir", "{w}/videos",
                                 "--size", "abc"], "--size=abc: invalid literal for int()"),
    ("required flag missing", ["avd-train", "--model_dir", "{w}/out1"], "--data_dir: required"),
    ("one of two flags", ["avd-export", "--export_dir", "{w}/out2"],
     "--model_dir, --classifier_dir: give exactly one of them"),
    ("stray argument", ["avd-train", "--data_dir", "{w}/rgb", "--model_dir", "{w}/out3", "5"],
     "unexpected arguments: 5"),
    ("no video folder", ["avd-prepare", "--dataset", "folder", "--video_dir", "{w}/none",
                         "--output_dir", "{w}/out4"], "{w}/none: video folder not found"),
    ("prepare into a path under a file", ["avd-prepare", "--dataset", "folder", "--video_dir",
                                          "{w}/videos", "--output_dir", "{w}/afile/p"],
     "{w}/afile/p: " + NOT_A_FOLDER),
    ("demo data under a file", ["avd-make-demo-data", "--output_dir", "{w}/afile/demo"],
     "{w}/afile/demo/splits: " + NOT_A_FOLDER),
    ("bench work folder under a file", ["avd-bench", "--measure", "dynamic", "--work_dir",
                                        "{w}/afile/bench"], "{w}/afile/bench: " + NOT_A_FOLDER),
    ("protocol without videos", ["avd-protocol", "--dataset", "ucf101", "--video_dir", "{w}/none",
                                 "--split_dir", "{w}/none", "--work_dir", "{w}/protocol"],
     "{w}/none: UCF101 split folder not found"),
    ("train on no folder", ["avd-train", "--data_dir", "{w}/none", "--model_dir", "{w}/out5"],
     "{w}/none: " + NO_FOLDER),
    ("train on videos, not prepared", ["avd-train", "--data_dir", "{w}/videos", "--model_dir",
                                       "{w}/out6"], "{w}/videos: " + NO_MANIFEST),
    ("train flow on data without flow", ["avd-train", "--data_dir", "{w}/rgb", "--model_dir",
                                         "{w}/out7", "--stream", "flow", *TINY_AVD],
     NO_FLOW),
    ("train into a path under a file", ["avd-train", "--data_dir", "{w}/rgb", "--model_dir",
                                        "{w}/afile/m"], "{w}/afile/m: " + NOT_A_FOLDER),
    ("distill with a prepared folder as model", ["avd-distill", "--model_dir", "{w}/rgb",
                                                 "--data_dir", "{w}/rgb",
                                                 "--output_dir", "{w}/out8"],
     "{w}/rgb: neither encoder.keras nor avd.keras in this folder"),
    ("distill with a text encoder.keras", ["avd-distill", "--model_dir", "{w}/text_avd",
                                           "--data_dir", "{w}/flow", "--output_dir", "{w}/out9"],
     "{w}/text_avd/encoder.keras: not a Keras model file"),
    ("distill a flow model on data without flow", ["avd-distill", "--model_dir", "{w}/avd_flow",
                                                   "--data_dir", "{w}/rgb", "--output_dir",
                                                   "{w}/out10", "--noprogress"],
     NO_FLOW),
    ("distill a text file as video", ["avd-distill", "--model_dir", "{w}/avd_flow", "--video",
                                      "{w}/notes.txt", "--output", "{w}/notes.png"],
     "{w}/notes.txt: OpenCV cannot open it"),
    ("export a classifier as AVD model", ["avd-export", "--model_dir", "{w}/cls_flow",
                                          "--export_dir", "{w}/out11"],
     "{w}/cls_flow: neither encoder.keras nor avd.keras in this folder"),
    ("export into a path under a file", ["avd-export", "--model_dir", "{w}/avd_flow",
                                         "--export_dir", "{w}/afile/e"],
     "{w}/afile/e: " + NOT_A_FOLDER),
    ("fine-tune on a model folder", ["avd-finetune", "--data_dir", "{w}/avd_flow", "--stream",
                                     "frame", "--model_dir", "{w}/out12"],
     "{w}/avd_flow: " + NO_MANIFEST),
    ("fine-tune on a file", ["avd-finetune", "--data_dir", "{w}/afile", "--stream", "frame",
                             "--model_dir", "{w}/out20"],
     "{w}/afile: a file, not a folder; prepared data is a folder that avd-prepare makes"),
    ("fine-tune with a prepared folder as AVD model", [
        "avd-finetune", "--data_dir", "{w}/flow", "--stream", "avd_flow", "--avd_model_dir",
        "{w}/rgb", "--model_dir", "{w}/out13"],
     "{w}/rgb: neither encoder.keras nor avd.keras in this folder"),
    ("evaluate a prepared folder", ["avd-evaluate", "--model_dirs", "{w}/rgb", "--output",
                                    "{w}/out14"], "{w}/rgb/config.json: no model config"),
    ("evaluate an AVD model folder", ["avd-evaluate", "--model_dirs", "{w}/avd_flow",
                                      "--data_dir", "{w}/flow", "--output", "{w}/out15"],
     "{w}/avd_flow: an AVD model folder (avd-train's), not a fine-tuned classifier"),
    ("evaluate a text model.keras", ["avd-evaluate", "--model_dirs", "{w}/text_cls", "--data_dir",
                                     "{w}/flow", "--output", "{w}/out16"],
     "{w}/text_cls/model.keras: not a Keras model file"),
    ("evaluate on a corrupted shard", ["avd-evaluate", "--model_dirs", "{w}/cls_flow",
                                       "--data_dir", "{w}/damaged", "--output", "{w}/out17",
                                       "--noprogress"],
     "{w}/damaged/test-00000-of-00001.tfrecord: corrupted TFRecord (corrupted record at "),
    ("evaluate flow on data without flow", ["avd-evaluate", "--model_dirs", "{w}/cls_flow",
                                            "--data_dir", "{w}/rgb", "--output", "{w}/out18",
                                            "--noprogress"],
     NO_FLOW),
    ("evaluate into a path under a file", ["avd-evaluate", "--model_dirs", "{w}/cls_flow",
                                           "--output", "{w}/afile/r.json", "--noprogress"],
     "{w}/afile: File exists (a file stands where the path needs a folder)"),
    ("demo into a path under a file", ["avd-demo", "--output_dir", "{w}/afile/demo"],
     "{w}/afile/demo: " + NOT_A_FOLDER),
    ("ablate on no folder", ["avd-ablate", "--data_dir", "{w}/none", "--output_dir", "{w}/out19"],
     "{w}/none: " + NO_FOLDER),
]


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The folders the cases name (see CASES)."""
    w = tmp_path_factory.mktemp("clean_failures")
    write_motion_videos(w / "videos", CLASSES, 12, 32)
    for name, flow in (("flow", "tvl1"), ("rgb", "none")):
        prepare_folder(w / "videos", w / name, ConvertOptions(size=32, flow=flow))
    shutil.copytree(w / "flow", w / "damaged")
    flip_byte(w / "damaged" / "test-00000-of-00001.tfrecord")
    with ThreadPoolExecutor(2) as pool:
        trained = pool.submit(run, ["avd-train", "--data_dir", str(w / "flow"), "--model_dir",
                                    str(w / "avd_flow"), "--stream", "flow", *TINY_AVD])
        tuned = pool.submit(run, ["avd-finetune", "--data_dir", str(w / "flow"), "--model_dir",
                                  str(w / "cls_flow"), "--stream", "flow", *TINY_CLASSIFIER])
        for result in (trained.result(), tuned.result()):
            assert result.returncode == 0, result.stderr[-3000:]
    for folder, model, name in (("text_avd", "avd_flow", "encoder.keras"),
                                ("text_cls", "cls_flow", "model.keras")):
        (w / folder).mkdir()
        shutil.copy(w / model / "config.json", w / folder)
        (w / folder / name).write_text("not a Keras file\n")
    (w / "afile").write_text("a file, not a folder\n")
    (w / "notes.txt").write_text("not a video\n")
    return w


@pytest.fixture(scope="module")
def results(work):
    """{case: CompletedProcess}, two programs at a time."""
    with ThreadPoolExecutor(2) as pool:
        runs = {case: pool.submit(run, [arg.format(w=work) for arg in argv])
                for case, argv, _ in CASES}
        return {case: future.result() for case, future in runs.items()}


@pytest.mark.parametrize("case,argv,expected", CASES, ids=[case for case, _, _ in CASES])
def test_program_fails_with_one_line(results, work, case, argv, expected):
    result = results[case]
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{argv[0]}: "), result.stderr[-3000:]
    assert fnmatch.fnmatchcase(last, f"*{expected.format(w=work)}*"), last
