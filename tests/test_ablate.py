"""avd_tf.ablate, avd_tf.records.holdout, avd-ablate: a real 2-cell x 3-seed ablation, tiny data."""
from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from avd_tf.ablate import FinetuneSettings, Grid, mean_std, run_ablation
from avd_tf.ablate.run import write_outputs
from avd_tf.inputs.holdout import video_group
from avd_tf.inputs.shards import read_manifest
from avd_tf.models import build_avd
from avd_tf.records import schema
from avd_tf.records.convert import ConvertOptions
from avd_tf.records.holdout import holdout_folder
from avd_tf.run_dir import read_metrics
from avd_tf.video import synthetic

from conftest import prepare_folder

CLASSES = ["TranslateLeft", "TranslateRight"]
SEEDS = (0, 1, 2)
TINY_FINETUNE = FinetuneSettings(backbone="alexnet", weights="none", input_size=64, epochs=1,
                                 steps_per_epoch=2, batch_size=8)
BASELINES = ("frame", "mean", "dynamic")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Folder layout with UCF101 names: per class 3 training groups of 2 clips, 1 test group."""
    root = tmp_path_factory.mktemp("ablate")
    for c, name in enumerate(CLASSES):
        for group in range(1, 5):
            split = "test" if group == 4 else "train"
            for clip in range(1, 3 if split == "train" else 2):
                frames = synthetic.render_video(name, seed=[c, group, clip], frames=16, size=32)
                synthetic.write_video(root / "videos" / split / name
                                      / f"v_{name}_g{group:02d}_c{clip:02d}.avi", frames)
    return prepare_folder(root / "videos", root / "prepared", ConvertOptions(size=32, flow="none"))


def _record_ids(folder: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, f"{split}-*-of-*.tfrecord")))
    return [video[schema.VIDEO_ID].decode("utf-8") for video in
            tf.data.TFRecordDataset(files).map(schema.parse).as_numpy_iterator()]


def _end_marks(folder: str) -> dict:
    paths = glob.glob(os.path.join(folder, "runs", "**", "*.json"), recursive=True)
    return {path: os.stat(path).st_mtime_ns for path in paths
            if os.path.basename(path) in ("metrics.json", "evaluation.json")}


@pytest.fixture(scope="module")
def ablation(data_dir, tmp_path_factory):
    """The ablation run twice on a copy of the data whose test shards are garbage."""
    root = tmp_path_factory.mktemp("ablation")
    source = str(root / "prepared")
    shutil.copytree(data_dir, source)
    corrupted = glob.glob(os.path.join(source, "test-*.tfrecord"))
    for path in corrupted:
        with open(path, "wb") as f:
            f.write(b"not a TFRecord")
    output = str(root / "out")
    kwargs = dict(avd_steps_per_epoch=2, finetune_settings=TINY_FINETUNE, eval_on="val",
                  progress=False)
    first = []
    content = run_ablation(source, output, Grid(lams=(0.95, 1.0), epochs=(1,)), SEEDS,
                           log=first.append, **kwargs)
    marks = _end_marks(output)
    second = []
    again = run_ablation(source, output, Grid(lams=(0.95, 1.0), epochs=(1,)), SEEDS,
                         log=second.append, **kwargs)
    return {"source": source, "corrupted": corrupted, "output": output, "content": content,
            "again": again, "first": first, "second": second, "marks": marks,
            "marks_after": _end_marks(output)}


def _fmt(values, scale=100.0, decimals=1):
    values = scale * np.asarray(values, float)
    return f"{values.mean():.{decimals}f} +- {values.std(ddof=1):.{decimals}f}"


def _table_line(markdown: str, name: str) -> list[str]:
    lines = [line for line in markdown.splitlines() if line.startswith(f"| {name} |")]
    assert len(lines) == 1, (name, markdown)
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


@pytest.mark.slow
def test_outputs_hold_every_run_and_mean_std_over_seeds(ablation):
    output, content = ablation["output"], ablation["content"]
    for name in ("ablation.json", "ablation.md", "ablation.csv", "ablation.png"):
        assert os.path.getsize(os.path.join(output, name)) > 0, name
    with open(os.path.join(output, "ablation.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(output, "ablation.json")) as f:
        assert json.load(f) == json.loads(json.dumps(content))
    runs = content["runs"]
    # Per seed: 3 baselines, 1 control, 2 cells.
    assert len(runs) == len(SEEDS) * 6
    assert {run["row"] for run in runs} == {*BASELINES, "control: untrained E", "lam=0.95", "lam=1"}
    assert all(run["num_videos"] == content["test_videos"] == 4 for run in runs)
    for line in ablation["first"]:
        if line.startswith("["):
            assert " seed=" in line and ", top-1 " in line, line
    assert sum(line.startswith("[") for line in ablation["first"]) == 18

    with open(os.path.join(output, "ablation.md")) as f:
        table = f.read()
    assert "Split: **val**, the 4 videos of 2 video groups" in table
    assert "original test split is never read" in table
    header = _table_line(table, "setting")
    top1 = {}
    for name in (*BASELINES, "control: untrained E", "lam=0.95", "lam=1"):
        members = sorted((run for run in runs if run["row"] == name), key=lambda r: r["seed"])
        assert [run["seed"] for run in members] == list(SEEDS)
        top1[name] = [run["top1"] for run in members]
        shown = "baseline: " + name if name in BASELINES else name
        line = dict(zip(header, _table_line(table, shown)))
        assert line["seeds"] == "3" and line["top-1 (%)"] == _fmt(top1[name])
        if name in BASELINES:
            assert line["motion_gain_db"] == "" and line["vs frame (pp)"] == ""
            continue
        for baseline in BASELINES:
            paired = np.subtract(top1[name], top1[baseline])
            assert line[f"vs {baseline} (pp)"] == _fmt(paired)
        gains = [run["figures"]["val_motion_gain_db"] for run in members]
        assert line["motion_gain_db"] == _fmt(gains, 1.0, 2)
        psnrs = [run["figures"]["val_scene_psnr"] for run in members]
        assert line["scene_psnr (dB)"] == _fmt(psnrs, 1.0, 1)
        if name == "control: untrained E":
            # Never trained: no teacher, no gradients.
            assert line["T acc real"] == line["grad_ratio"] == ""
        else:
            real = [run["figures"]["teacher_acc_real"] for run in members]
            assert line["T acc real"] == _fmt(real, 1.0, 2)

    with open(os.path.join(output, "ablation.csv"), newline="") as f:
        rows = {row["row"]: row for row in csv.DictReader(f)}
    for name, values in top1.items():
        assert float(rows[name]["top1_mean"]) == pytest.approx(np.mean(values))
        assert float(rows[name]["top1_std"]) == pytest.approx(np.std(values, ddof=1))


@pytest.mark.slow
def test_control_is_the_untrained_encoder_through_the_same_pipeline(ablation):
    from avd_tf.models.distill import load_encoder

    control = [run for run in ablation["content"]["runs"] if run["kind"] == "control"]
    weights = []
    for run in control:
        avd_dir = os.path.join(run["run_dir"], "avd")
        with open(os.path.join(avd_dir, "config.json")) as f:
            config = json.load(f)
        assert config["untrained"] and config["stream"] == "rgb" and config["seed"] == run["seed"]
        # Lambda is pinned (E's initial weights do not depend on it) ...
        assert config["config"]["lam"] == 1.0
        with open(os.path.join(run["run_dir"], "classifier", "config.json")) as f:
            assert json.load(f)["avd_model_dir"] == avd_dir
        weights.append(load_encoder(avd_dir).get_weights()[0])
        # ... and E is the one a training run of that seed starts from, whatever its lambda.
        keras.utils.set_random_seed(run["seed"])
        start = build_avd("small", "rgb", lam=0.5).encoder.get_weights()[0]
        np.testing.assert_array_equal(weights[-1], start)
        assert set(run["figures"]) == {"val_psnr", "val_still_psnr", "val_motion_gain_db",
                                       "val_motion_r2", "val_scene_psnr"}
        # Its metrics.json has avd-train's layout, with no epoch trained.
        metrics = read_metrics(avd_dir)
        assert metrics["history"] == [] and metrics["final"]["rule"] == "untrained"
        assert metrics["final"]["val_psnr"] == run["figures"]["val_psnr"]
    # Seeded: each seed its own initial E.
    assert not np.allclose(weights[0], weights[1])


@pytest.mark.slow
def test_a_rerun_trains_nothing_new(ablation):
    assert ablation["marks"] and ablation["marks_after"] == ablation["marks"]
    progress = [line for line in ablation["second"] if line.startswith("[")]
    assert len(progress) == 18
    for line in progress:
        assert "trained in" not in line and "fine-tuned in" not in line, line
        assert "classifier reused" in line, line
    assert ablation["again"]["runs"] == ablation["content"]["runs"]


@pytest.mark.slow
def test_eval_on_val_never_reads_the_original_test_split(ablation):
    # The garbage test shards are still there and garbage; nothing was cached next to them.
    assert ablation["corrupted"]
    for path in ablation["corrupted"]:
        with open(path, "rb") as f:
            assert f.read() == b"not a TFRecord"
    assert not os.path.exists(os.path.join(ablation["source"], "streams"))
    content = ablation["content"]
    assert content["eval_data_dir"] == os.path.join(ablation["output"], "val_data")
    for run in content["runs"]:
        with open(os.path.join(run["run_dir"], "classifier", "config.json")) as f:
            assert json.load(f)["data_dir"] == content["eval_data_dir"]


@pytest.mark.slow
def test_test_split_tables_say_they_must_not_choose_settings(ablation, tmp_path):
    content = dict(ablation["content"])
    runs = content.pop("runs")
    content.pop("rows")
    write_outputs(str(tmp_path), {**content, "eval_on": "test", "holdout": None}, runs)
    with open(tmp_path / "ablation.md") as f:
        table = f.read()
    assert "Split: **TEST**, the 4 test videos" in table
    assert "do not use them to choose settings" in table


def test_holdout_folder_holds_out_whole_training_groups(data_dir, tmp_path):
    out = str(tmp_path / "val")
    lines = []
    manifest = holdout_folder(data_dir, out, fraction=0.2, seed=3, log=lines.append)
    source = read_manifest(data_dir)
    train_ids = [video["id"] for video in source["videos"]["train"]]
    test_ids = [video["id"] for video in source["videos"]["test"]]
    new_train, new_test = _record_ids(out, "train"), _record_ids(out, "test")
    # The shards hold what the manifest lists, and only training videos.
    assert new_train == [video["id"] for video in manifest["videos"]["train"]]
    assert new_test == [video["id"] for video in manifest["videos"]["test"]]
    assert sorted(new_train + new_test) == sorted(train_ids)
    assert not set(new_test) & set(new_train) and not set(test_ids) & set(new_test + new_train)
    # Whole groups: 3 training groups of 2 clips a class, one of them held out (round(0.6)).
    held = {video_group(v) for v in new_test}
    assert len(held) == 2 and {g.rsplit("_g", 1)[0].split("/")[-1] for g in held} == set(CLASSES)
    assert sorted(new_test) == sorted(v for v in train_ids if video_group(v) in held)
    assert manifest["splits"]["test"]["videos"] == len(new_test) == 4
    assert manifest["splits"]["train"]["videos"] == len(new_train) == 8
    assert manifest["splits"]["test"]["videos_per_class"] == [2, 2]
    assert manifest["holdout"]["test_groups"] == sorted(held)
    assert manifest["classes"] == source["classes"] == CLASSES

    # Reused as it is; another seed for the same folder is refused.
    mtime = os.stat(os.path.join(out, "manifest.json")).st_mtime_ns
    assert holdout_folder(data_dir, out, fraction=0.2, seed=3, log=lines.append) == manifest
    assert os.stat(os.path.join(out, "manifest.json")).st_mtime_ns == mtime
    with pytest.raises(ValueError, match="seed differ"):
        holdout_folder(data_dir, out, fraction=0.2, seed=4, log=lines.append)


def test_grid_and_mean_std():
    grid = Grid(lams=(0.95, 1.0, 0.95), rec_losses=("sum", "mean"))
    cells = grid.cells()
    assert len(cells) == 4 and len(grid.architectures()) == 1
    assert {grid.label(cell) for cell in cells} == {
        "lam=0.95 rec=sum", "lam=0.95 rec=mean", "lam=1 rec=sum", "lam=1 rec=mean"}
    assert all(cell["num_frames"] == 8 for cell in cells)
    assert mean_std([0.5, 0.6, 0.7], 100.0) == "60.0 +- 10.0"
    assert mean_std([0.5]) == "0.5" and mean_std([]) == ""
    for bad, message in ((dict(lams=()), "lams"), (dict(presets=("big",)), "presets"),
                         (dict(gen_losses=("x",)), "gen_losses"),
                         (dict(num_frames=(6,)), "num_frames"), (dict(lams=(1.5,)), "lams"),
                         (dict(widths=("8-16",)), "widths"), (dict(widths=("0-1-1-1",)), "widths")):
        with pytest.raises(ValueError, match=message):
            Grid(**bad)


@pytest.mark.parametrize("args, expected", [
    (["--seeds", "0,1"], "--seeds"),
    (["--lams", ""], "lams (--lams) is empty"),
    (["--presets", "big"], "unknown 'big'"),
    (["--rec_losses", "sum,median"], "unknown 'median'"),
    ([], "no manifest"),
])
@pytest.mark.slow
def test_program_refuses_bad_input_in_one_line(args, expected, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    command = [sys.executable, "-m", "avd_tf.apps.ablate", "--data_dir", str(empty),
               "--output_dir", str(tmp_path / "out"), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("avd-ablate: ") and expected in last, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_readme_section_gets_the_table_and_plot(ablation, tmp_path):
    from avd_tf import readme_section
    from avd_tf.ablate import write_readme

    readme = tmp_path / "README.md"
    begin, end = readme_section.markers("avd-ablate results")
    readme.write_text(f"# Project\n\n{begin}\nold\n{end}\n\nafter\n")
    image = write_readme(ablation["output"], str(readme), "avd-ablate results")
    text = readme.read_text()
    table = open(os.path.join(ablation["output"], "ablation.md")).read().strip()
    assert table in text and "\nold\n" not in text and text.endswith(f"{end}\n\nafter\n")
    assert "(docs/images/avd_ablate_results.png)" in text
    with open(image, "rb") as copy, open(os.path.join(ablation["output"], "ablation.png"), "rb") as plot:
        assert copy.read() == plot.read()
    with pytest.raises(ValueError, match="no other section"):
        write_readme(ablation["output"], str(readme), "other section")


def test_widths_axis_sets_both_networks_and_the_control():
    from avd_tf.ablate.grid import config_overrides, folder_name

    grid = Grid(lams=(0.1,), widths=(None, "8-16-16-16"))
    cells = grid.cells()
    assert [cell["widths"] for cell in cells] == ["16-32-32-32", "8-16-16-16"]
    assert [arch["widths"] for arch in grid.architectures()] == ["16-32-32-32", "8-16-16-16"]
    assert grid.label(cells[1]) == "widths=8-16-16-16 lam=0.1"
    assert folder_name(cells[1]) == "small_T8_s32_w8-16-16-16_lam0.1_sum_nonsaturating_e10"
    overrides = config_overrides(cells[1])
    assert overrides["encoder_filters"] == (8, 16, 16, 16)
    assert overrides["decoder_filters"] == (16, 16, 16, 8)
    assert "preset" not in overrides and "widths" not in overrides
    # The preset's widths named explicitly are the same cell as None.
    assert len(Grid(lams=(0.1,), widths=(None, "16-32-32-32")).cells()) == 1


def test_size_and_epochs_axes():
    """Clip side is architecture (the control follows it); epochs only train longer."""
    from avd_tf.ablate.grid import config_overrides, folder_name, parse_cells

    grid = Grid(lams=(0.1,), image_sizes=(None, 40), epochs=(10, 5))
    cells = grid.cells()
    assert [(c["image_size"], c["epochs"]) for c in cells] == [(32, 10), (32, 5), (40, 10),
                                                              (40, 5)]
    assert [a["image_size"] for a in grid.architectures()] == [32, 40]
    assert grid.label(cells[3]) == "size=40 lam=0.1 epochs=5"
    assert folder_name(cells[3]) == "small_T8_s40_w16-32-32-32_lam0.1_sum_nonsaturating_e5"
    overrides = config_overrides(cells[3])
    assert overrides["image_size"] == 40 and "epochs" not in overrides
    # The small preset's T sees the whole image, at any size.
    from avd_tf.models.presets import get_preset
    assert get_preset("small", **overrides).teacher_input_resolution == 40
    one_extra = Grid(lams=(0.1,), extra=parse_cells("epochs=5;image_size=40")).cells()
    assert [(c["image_size"], c["epochs"]) for c in one_extra] == [(32, 10), (32, 5), (40, 10)]
    for bad in (dict(epochs=(0,)), dict(image_sizes=(0,))):
        with pytest.raises(ValueError, match="epochs|image_sizes"):
            Grid(**bad)
    with pytest.raises(ValueError, match="epochs expects a number"):
        parse_cells("epochs=ten")


def test_extra_cells_change_the_first_cell():
    from avd_tf.ablate.grid import parse_cells

    grid = Grid(lams=(0.5, 1.0), extra=parse_cells("rec_loss=mean; lam=1.0,gen_loss=saturating"))
    cells = grid.cells()
    assert len(cells) == 4
    assert cells[2] == {"preset": "small", "num_frames": 8, "image_size": 32,
                        "widths": "16-32-32-32", "lam": 0.5, "rec_loss": "mean",
                        "gen_loss": "nonsaturating", "epochs": 10}
    assert cells[3]["lam"] == 1.0 and cells[3]["gen_loss"] == "saturating"
    assert grid.label(cells[2]) == "lam=0.5 rec=mean gen=nonsaturating"
    # An extra cell equal to a product cell counts once.
    assert len(Grid(lams=(0.5,), extra=parse_cells("lam=0.5")).cells()) == 1
    for text, message in (("rec_loss=median", "extra cells .*median"), ("foo=1", "unknown field"),
                          ("lam", "expected field=value"), ("widths=8-x", "widths")):
        with pytest.raises(ValueError, match=message):
            Grid(extra=parse_cells(text))
