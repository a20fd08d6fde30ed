"""avd-bench and avd_tf.bench: the program runs end to end with tiny settings and
reports every figure; FLOP counts are checked against the layer shapes. No timing
is asserted (speed targets are what avd-bench reports, never test conditions)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from avd_tf.bench import flops
from avd_tf import readme_section
from avd_tf.bench import report as bench_report
from avd_tf.bench import scale, scale_videos
from avd_tf.bench.memory import peak_rss_mb, rss_mb
from avd_tf.bench.preparation import tvl1_pairs_per_s
from avd_tf.bench.training import TrainSettings, peak_gflops
from avd_tf.models import PRESETS, get_preset

REQUIRED = (
    "train_clips_per_s",
    "train_gflop_per_clip",
    "train_gflop_per_clip_profiler",
    "train_gflops_per_s",
    "matmul_gflops_per_s",
    "conv3d_gflops_per_s",
    "peak_gflops_per_s",
    "train_mfu",
    "peak_rss_mb",
    "input_clips_per_s",
    "input_cached_clips_per_s",
    "input_over_train",
    "decode_jpeg_frames_per_s",
    "distill_clips_per_s",
    "distill_savedmodel_clips_per_s",
    "tvl1_pairs_per_s_1worker",
    "tvl1_pairs_per_s_Nworkers",
    "tvl1_scaling",
    "dynamic_image_clips_per_s",
    "bn_sync_step_ms",
    "bn_local_step_ms",
    "bn_sync_over_local",
    "bn_sync_peak_rss_mb",
    "bn_local_peak_rss_mb",
)


@pytest.mark.slow
def test_avd_bench_writes_every_figure(tmp_path):
    output = tmp_path / "bench.json"
    readme = tmp_path / "README.md"
    begin, end = readme_section.markers(bench_report.SECTION)
    readme.write_text(f"# Title\n\n{begin}\nold table\n{end}\n\nAfter.\n")
    run = subprocess.run(
        [sys.executable, "-m", "avd_tf.apps.bench", "--quick", "--preset", "small",
         "--batch_size", "2", "--steps", "1", "--min_seconds", "0", "--repeats", "1", "--tvl1_pairs", "1",
         "--profile_dir", str(tmp_path / "profile"), "--output", str(output),
         "--markdown", str(tmp_path / "bench.md"), "--readme", str(readme)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(output.read_text())
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["tensorflow"]
    # The program switches oneDNN on by default, and the training process saw it.
    assert machine["onednn"] is True and machine["xla_jit_compile"] is False
    small = report["presets"]["small"]
    for key in REQUIRED:
        assert isinstance(small[key], float) and math.isfinite(small[key]) and small[key] > 0, key
    assert small["batch_size"] == 2 and small["train_steps"] == 1
    assert small["onednn"] is True and small["native_strides"] is True
    assert small["input_over_train"] == pytest.approx(
        small["input_clips_per_s"] / small["train_clips_per_s"])
    assert small["train_mfu"] == pytest.approx(
        small["train_gflops_per_s"] / small["peak_gflops_per_s"])
    assert small["peak_gflops_per_s"] == max(
        small["matmul_gflops_per_s"], small["conv3d_gflops_per_s"])
    assert small["dtype_policy"] == "float32" and small["peak_dtype"] == "float32"
    assert set(small["checks"]) == {"train_mfu", "input_over_train", "tvl1_scaling", "peak_rss_mb"}
    # The trace of the profiled step was read: convolutions are among its top ops.
    op_types = [entry["name"] for entry in small["train_profile"]["op_types"]]
    assert any("Conv3D" in name for name in op_types), op_types
    assert "== small (batch 2) ==" in run.stdout
    # The Markdown table shows the measured figures, and replaced only the README's section.
    table = (tmp_path / "bench.md").read_text()
    assert f"| **{small['train_mfu']:.2f}** |" in table and "small (8x32x32, batch 2)" in table
    assert bench_report.markdown_table(report) == table
    assert readme.read_text() == f"# Title\n\n{begin}\n{table}{end}\n\nAfter.\n"
    assert report["machine"]["cpu_model"] in table


def test_batch_norm_shapes_follow_the_encoder_and_both_paths_run():
    from avd_tf.bench.batch_norm import _step, encoder_norm_shapes
    from avd_tf.models import build_avd

    for preset in ("small", "paper"):
        config = get_preset(preset)
        built = [norm._build_shapes_dict["input_shape"][1:]
                 for norm in build_avd(config).encoder.norms]
        assert [shape[1:] for shape in encoder_norm_shapes(config, 2)] == built, preset
    for synchronized in (True, False):
        _step(encoder_norm_shapes(get_preset("small"), 1), synchronized)()


@pytest.mark.slow
def test_batch_norm_peak_rss_is_the_childs_own():
    """Linux carries ru_maxrss over exec; the figure must not be the parent's peak."""
    from avd_tf.bench.batch_norm import _child_peak_rss_mb, encoder_norm_shapes

    ballast = bytearray(3 * 2**30)  # zero pages: touch them so they are resident
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    assert peak_rss_mb() > 3 * 1024
    child = _child_peak_rss_mb(encoder_norm_shapes(get_preset("small"), 1), True, 1)
    assert 0 < child < 3 * 1024
    del ballast


def test_readme_without_the_section_is_refused_with_its_name(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# No markers here\n")
    with pytest.raises(ValueError, match="README.md: no avd-bench table section"):
        readme_section.replace_section(str(readme), bench_report.SECTION, "| table |\n")
    assert readme.read_text() == "# No markers here\n"


@pytest.mark.parametrize("preset", ["small", "paper"])
@pytest.mark.slow
def test_profiler_count_agrees_with_layer_shapes(preset):
    config = get_preset(preset)
    analytic = flops.analytic_train_flops(config)
    profiled = flops.profiled_train_flops(config, batch_size=2)
    assert profiled["train"] == pytest.approx(analytic["train"], rel=0.01)
    # Each convolution's two gradients cost what its forward pass does.
    convs = sum(analytic["encoder_layers"]) + sum(analytic["decoder_layers"])
    for op_type in ("Conv3D", "Conv3DBackpropInputV2", "Conv3DBackpropFilterV2"):
        assert profiled["by_op"][op_type] == pytest.approx(convs)


def test_layer_flops_of_the_paper_preset():
    config = PRESETS["paper"]
    encoder = flops.encoder_layer_flops(config, 3)
    # E's second layer: 3x5x5 kernel, 32 -> 64 channels, 32 -> 16 -> 8 frames of 112x112.
    assert encoder[1] == 2 * 75 * 32 * 64 * 8 * 112 * 112
    # D mirrors E: the same layer costs the same transposed (RGB: 3 channels both ends).
    assert flops.decoder_layer_flops(config, 3) == encoder[::-1]
    assert 79e9 < sum(encoder) < 81e9  # "about 80 GFLOP per clip in E alone" (presets.py)
    flow = flops.analytic_train_flops(config, "flow")
    assert flow["encoder_layers"][0] == encoder[0] * 2 // 3


def test_peak_is_measured_in_the_compute_dtype():
    peak = peak_gflops(repeats=1, dtype="bfloat16")
    assert peak["peak"] == max(peak["matmul"]["best"], peak["conv3d"]["best"]) > 0


def test_memory_and_bad_settings():
    assert 0 < rss_mb() <= peak_rss_mb()
    with pytest.raises(ValueError, match="steps, peak_repeats and profile_steps"):
        TrainSettings(steps=0)
    with pytest.raises(ValueError, match="workers, pairs_per_worker and repeats"):
        tvl1_pairs_per_s(32, 0)


def test_scale_benchmark_on_a_few_videos(tmp_path):
    """avd-bench --scale's steps on 12 real tiny videos of 4 classes, in this process (the
    program runs each in a fresh one): every figure is there, shard and split sizes follow
    the plan, and the README table shows them."""
    sizes = scale_videos.videos_per_class(250)
    assert sum(sizes) == 250 and max(sizes) - min(sizes) == 1 and len(sizes) == 101
    with pytest.raises(ValueError, match="at least 101"):
        scale.check_sizes([100, 1000])
    report = scale.measure_scale(str(tmp_path), [12], tvl1_videos=1, classes=4,
                                 in_process=True, log=lambda _: None)
    result = report["sizes"]["12"]
    # Three videos per class: groups 1 and 2 train, group 3 tests; one shard per split.
    assert (result["train_videos"], result["test_videos"]) == (8, 4)
    assert result["prepared_videos"] == 12 and result["shards"] == 2
    assert result["stream_images"] == 12 * scale_videos.FRAMES
    assert result["image_shape"] == [scale_videos.SIZE, scale_videos.SIZE, 3]
    assert result["epoch_batches"] == 8 // scale.BATCH_SIZE
    for key in ("prepare_ms_per_video", "prepare_cpu_ms_per_video", "stream_ms_per_video",
                "stream_cpu_ms_per_video", "cache_bytes_per_image",
                "manifest_load_ms", "input_clips_per_s", "input_peak_rss_mb"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["prepare_rss_growth_mb"] == pytest.approx(
        result["prepare_peak_rss_mb"] - result["prepare_rss_before_mb"])
    assert result["prepare_rss_growth_mb"] >= 0 and result["prepare_rss_before_mb"] > 0
    tvl1 = report["tvl1"]
    assert tvl1["tvl1_videos"] == 1 and tvl1["tvl1_ms_per_video"] > 0
    assert tvl1["tvl1_added_ms_per_video"] == pytest.approx(
        tvl1["tvl1_ms_per_video"] - tvl1["tvl1_none_ms_per_video"])
    # One N: every ratio is 1 and every check met.
    assert all(value == pytest.approx(1.0) for value in report["ratios"].values())
    assert all(check["met"] for check in report["checks"].values())
    train_list = (tmp_path / "splits-12" / "trainlist01.txt").read_text().splitlines()
    labels = [int(line.split()[1]) for line in train_list]
    assert labels == sorted(labels), "split files list videos class by class, as UCF101's do"

    table = bench_report.scale_markdown_table(
        {"machine": {"cpu_model": "a CPU", "cores": 2}, "scale": report})
    assert f"| shards (10 videos each) | {result['shards']} |" in table
    assert "4 classes of 8-frame 16x16 videos" in table


@pytest.mark.slow
def test_avd_bench_scale_writes_its_readme_section(tmp_path):
    readme = tmp_path / "README.md"
    begin, end = readme_section.markers(bench_report.SCALE_SECTION)
    readme.write_text(f"# Title\n\n{begin}\nold\n{end}\n")
    run = subprocess.run(
        [sys.executable, "-m", "avd_tf.apps.bench", "--scale", "--scale_sizes", "101",
         "--scale_tvl1_videos", "1", "--output", str(tmp_path / "scale.json"),
         "--readme", str(readme)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "scale.json").read_text())
    result = report["scale"]["sizes"]["101"]
    assert report["scale"]["settings"]["steps_in_subprocesses"] is True
    # Each step's peak is its own process's: TensorFlow's baseline, not the steps before it.
    assert result["prepare_peak_rss_mb"] >= result["prepare_rss_before_mb"] > 0
    table = bench_report.scale_markdown_table(report)
    assert readme.read_text() == f"# Title\n\n{begin}\n{table}{end}\n"
    bad = subprocess.run([sys.executable, "-m", "avd_tf.apps.bench", "--scale",
                          "--scale_sizes", "50"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == (
        "avd-bench: --scale_sizes=50: need numbers of videos of at least 101 (one per class), "
        "got [50]")
