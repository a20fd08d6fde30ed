"""avd-demo end to end with tiny settings: every stage, its outputs, a re-run that
reuses them, and the README section it writes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from avd_tf import readme_section
from avd_tf.pipeline.demo import README_SECTION

TINY = [
    "--num_classes", "3", "--videos_per_class", "5", "--frames", "12", "--size", "32",
    "--avd_epochs", "1", "--avd_steps", "2", "--finetune_epochs", "1", "--finetune_steps", "2",
    "--input_size", "32", "--batch_size", "4", "--workers", "1", "--progress=false",
    "--seeds", "0,1", "--streams", "frame,avd_rgb,flow,avd_flow",
]


def run_demo(output_dir, *extra):
    run = subprocess.run([sys.executable, "-m", "avd_tf.apps.demo", "--output_dir", str(output_dir), *TINY, *extra],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
def test_bad_settings_end_with_one_clear_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "avd_tf.apps.demo", "--output_dir", str(tmp_path),
                          "--videos_per_class", "2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "avd-demo: videos_per_class=2 is fewer than groups=5: every group needs at least one clip")
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_demo_runs_every_stage_reuses_them_and_fills_the_readme(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out)
    for stage in range(1, 7):
        assert f"=== [{stage}/6]" in first
    results = json.loads((out / "results.json").read_text())
    streams = ["frame", "avd_rgb", "flow", "avd_flow"]
    fusions = ["frame+flow", "flow+avd_flow", "avd_flow+avd_rgb", "flow+avd_flow+avd_rgb"]
    assert results["seeds"] == [0, 1]
    for key in streams + fusions:
        entry = results["streams"][key] if key in streams else results["fusions"][key]
        assert 0.0 <= entry["top1"] <= entry["top5"] <= 1.0 and entry["num_videos"] > 0, key
        # The mean and std over the seeds are those of each seed's own evaluation.
        group = "streams" if key in streams else "fusions"
        runs = [json.loads((out / f"seed-{seed}" / "results.json").read_text())[group][key]["top1"]
                for seed in (0, 1)]
        assert entry["top1_runs"] == runs
        assert entry["top1"] == pytest.approx(np.mean(runs))
        assert entry["top1_std"] == pytest.approx(np.std(runs, ddof=1))
    for name in ("summary.md", "contact_sheet.png", "avd_training.png", "seed-0/confusion.png",
                 "seed-1/table.md"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "| AVD (RGB) |" in summary and "Wall time (s):" in summary
    assert "mean ± std over 2 seed(s)" in summary
    # The motion diagnostic per AVD stream, and for RGB the image-vs-scene PSNR.
    assert "* AVD(rgb), last epoch on the test clips" in summary and "motion gain" in summary
    assert "image vs the clip's mean frame" in summary
    assert "* AVD(flow), last epoch on the test clips" in summary
    for stream in ("rgb", "flow"):
        gain = results["avd"][stream]["val_motion_gain_db"]
        assert len(gain["runs"]) == 2 and gain["mean"] == pytest.approx(np.mean(gain["runs"]))

    timings = json.loads((out / "timings.json").read_text())
    readme = tmp_path / "README.md"
    begin, end = readme_section.markers(README_SECTION)
    readme.write_text(f"# Project\n\n{begin}\nold\n{end}\n\n## Next\n")
    second = run_demo(out, "--readme", str(readme))
    # Finished stages are reused, not redone.
    assert "reusing" in second and second.count("Epoch 1/") == 0
    assert json.loads((out / "results.json").read_text()) == results
    # Reused stages keep the first run's wall time; the total still adds up.
    again = json.loads((out / "timings.json").read_text())
    for stage in ("videos", "prepare", "avd_train", "finetune"):
        assert again[stage] == timings[stage], stage
    assert again["total"] == pytest.approx(sum(v for k, v in again.items() if k != "total"))
    text = readme.read_text()
    assert text.startswith(f"# Project\n\n{begin}\n") and text.endswith(f"{end}\n\n## Next\n")
    assert "old" not in text and "| AVD (RGB) |" in text and "Wall time (s):" in text
    assert (tmp_path / "docs" / "images" / "demo_contact_sheet.png").read_bytes() == (out / "contact_sheet.png").read_bytes()


def test_kind_and_motion_accuracies_from_the_confusion_matrix():
    from avd_tf.pipeline.demo import aggregate, factor_accuracies

    classes = ["RoundTranslateLeft", "RoundTranslateRight", "BoxTranslateLeft", "BoxTranslateRight"]
    # Rows: true class; columns: predicted. 10 videos.
    confusion = [[1, 1, 0, 0],   # Round Left: one right, one mirror partner (kind right)
                 [0, 0, 2, 0],   # Round Right -> Box Left: both factors wrong
                 [0, 0, 1, 2],   # Box Left: one right, two with the motion wrong
                 [0, 1, 0, 2]]   # Box Right: two right, one with the kind wrong
    figures = factor_accuracies(confusion, classes)
    assert figures["kind_accuracy"] == pytest.approx(7 / 10)
    assert figures["motion_accuracy"] == pytest.approx(5 / 10)
    runs = {seed: {"classes": classes, "fusions": {}, "streams": {"frame": {
                "top1": top1, "top5": 1.0, "num_videos": 10, "confusion": confusion}}}
            for seed, top1 in ((0, 0.4), (1, 0.6))}
    row = aggregate(runs)["streams"]["frame"]
    assert row["top1"] == pytest.approx(0.5) and row["top1_std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert row["kind_accuracy"] == pytest.approx(0.7) and row["kind_accuracy_std"] == 0.0


def test_stage_times_are_kept_as_each_stage_finishes_and_reused_after_a_kill(tmp_path):
    import time

    from avd_tf.pipeline.demo import TIMINGS
    from avd_tf.pipeline.stages import TOTAL, StageTimings

    path = str(tmp_path / TIMINGS)
    first = StageTimings(path, log=lambda _: None)
    first.finish("videos", time.time() - 5, reused=False)
    first.finish("prepare", time.time() - 7, reused=False)
    # Killed here: the finished stages' times are on disk already.
    kept = json.loads((tmp_path / TIMINGS).read_text())
    assert set(kept) == {"videos", "prepare"} and kept["prepare"] >= 7
    lines = []
    second = StageTimings(path, log=lines.append)
    second.finish("videos", time.time(), reused=True)
    second.finish("prepare", time.time() - 2, reused=False)  # its output was gone: redone
    assert second.times["videos"] == kept["videos"] and 2 <= second.times["prepare"] < 7
    assert lines == [f"videos: reused, {kept['videos']:.0f} s in an earlier run"]
    done = second.close()
    assert json.loads((tmp_path / TIMINGS).read_text()) == done
    assert done[TOTAL] == pytest.approx(done["videos"] + done["prepare"])
    # The total of a finished run is not taken for a stage's time by the next one.
    assert TOTAL not in StageTimings(path).previous
