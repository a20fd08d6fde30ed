"""avd-bench's figures as a Markdown table (written into a README by `avd-bench --readme`)."""
from __future__ import annotations

# (label, key, format) per row; a preset that did not measure a key shows "-".
ROWS = (
    ("train clips/s", "train_clips_per_s", "{:.3g}"),
    ("train GFLOP/s (counted FLOPs x clips/s)", "train_gflops_per_s", "{:.0f}"),
    ("peak GFLOP/s (dense matmul / Conv3D, same process)", "peak_gflops_per_s", "{:.0f}"),
    ("**train MFU** (target >= 0.6)", "train_mfu", "**{:.2f}**"),
    ("peak RSS of training, MB (small: target < 4096)", "peak_rss_mb", "{:.0f}"),
    ("input clips/s (tf.data from real shards)", "input_clips_per_s", "{:.0f}"),
    ("**input / train** (target >= 3)", "input_over_train", "**{:.1f}**"),
    ("distill clips/s: E compiled", "distill_clips_per_s", "{:.3g}"),
    ("distill clips/s: SavedModel", "distill_savedmodel_clips_per_s", "{:.3g}"),
    ("TV-L1 pairs/s, 1 worker", "tvl1_pairs_per_s_1worker", "{:.1f}"),
    ("TV-L1 pairs/s, N workers", "tvl1_pairs_per_s_Nworkers", "{:.1f}"),
    ("**TV-L1 scaling** (target >= 0.9 N)", "tvl1_scaling", "**{:.2f}**"),
    ("dynamic images, clips/s", "dynamic_image_clips_per_s", "{:.3g}"),
    ("E's BN layers on 1 device, synchronised / local time", "bn_sync_over_local", "{:.2f}"),
    ("E's BN layers: peak RSS, MB, synchronised / local", "bn_sync_peak_rss_mb", None),
)
# The README section (avd_tf.readme_section) that `avd-bench --readme` replaces.
SECTION = "avd-bench table"


def _cell(result: dict, key: str, fmt: str | None) -> str:
    if key not in result:
        return "-"
    if fmt is None:  # the peak RSS pair: synchronised / local
        return f"{result[key]:.0f} / {result['bn_local_peak_rss_mb']:.0f}"
    return fmt.format(result[key])


def markdown_table(report: dict) -> str:
    """The table of one avd-bench report, with the machine and settings it was measured with."""
    presets = report["presets"]
    header = " | ".join(
        f"{name} ({result['num_frames']}x{result['image_size']}x{result['image_size']}, "
        f"batch {result['batch_size']})"
        for name, result in presets.items()
    )
    lines = [f"| | {header} |", "|---" + "|---:" * len(presets) + "|"]
    for label, key, fmt in ROWS:
        cells = [_cell(r, key, fmt) for r in presets.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    missed = [
        f"{name} {key} {check['value']:.3g} (target {check['target']:.3g})"
        for name, result in presets.items()
        for key, check in result.get("checks", {}).items()
        if not check["met"]
    ]
    m, s = report["machine"], report["settings"]
    load = m.get("load_at_start", [0.0])[0], m.get("load_at_end", [0.0])[0]
    lines += [
        "",
        f"Measured by `avd-bench{' --quick' if s['quick'] else ''}` on {m['cpu_model']}, "
        f"{m['cores']} cores; TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
        f"oneDNN {'on' if m['onednn'] else 'off'}, XLA {'on' if m['xla_jit_compile'] else 'off'}; "
        f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end. "
        f"N = {s['workers']} workers.",
        "Targets missed: " + ("; ".join(missed) if missed else "none") + ".",
    ]
    return "\n".join(lines) + "\n"


# (label, key, format) per row of the `avd-bench --scale` table; "ratio" is
# the largest N's figure over the smallest N's (avd_tf.bench.scale.ratios).
SCALE_ROWS = (
    ("train / test videos", None, None),
    ("prepare (`--flow none`, 1 process), ms per video", "prepare_ms_per_video", "{:.2f}"),
    ("prepare, ms per video added since the previous N", "prepare_added_ms_per_video", "{:.2f}"),
    ("prepare, CPU ms per video", "prepare_cpu_ms_per_video", "{:.2f}"),
    ("prepare: peak RSS, MB", "prepare_peak_rss_mb", "{:.0f}"),
    ("prepare: RSS growth during the step, MB", "prepare_rss_growth_mb", "{:.0f}"),
    ("shards (10 videos each)", "shards", "{:d}"),
    ("manifest.json, KB", "manifest_bytes", "{:.0f}"),
    ("manifest load, ms", "manifest_load_ms", "{:.1f}"),
    ("frame stream cache, ms per video", "stream_ms_per_video", "{:.2f}"),
    ("frame stream cache, ms per video added since the previous N", "stream_added_ms_per_video",
     "{:.2f}"),
    ("frame stream cache, CPU ms per video", "stream_cpu_ms_per_video", "{:.2f}"),
    ("frame stream cache, bytes per image", "cache_bytes_per_image", "{:.0f}"),
    ("frame stream cache: peak RSS, MB", "stream_peak_rss_mb", "{:.0f}"),
    ("frame stream cache: RSS growth during the step, MB", "stream_rss_growth_mb", "{:.0f}"),
    ("input pipeline, clips/s over one epoch", "input_clips_per_s", "{:.0f}"),
    ("input pipeline: peak RSS, MB", "input_peak_rss_mb", "{:.0f}"),
    ("input pipeline: RSS growth during the step, MB", "input_rss_growth_mb", "{:.0f}"),
)
# The README section that `avd-bench --scale --readme` replaces.
SCALE_SECTION = "avd-bench scale table"


def _scale_cell(result: dict, key: str, fmt: str) -> str:
    value = result[key] / 1024 if key == "manifest_bytes" else result[key]
    return fmt.format(value)


def scale_markdown_table(report: dict) -> str:
    """The table of an `avd-bench --scale` report: a column per N, and largest / smallest N."""
    scale = report["scale"]
    results = [scale["sizes"][n] for n in sorted(scale["sizes"], key=int)]
    lines = ["| N videos | " + " | ".join(f"{r['videos']:,}" for r in results) + " | ratio |",
             "|---" + "|---:" * (len(results) + 1) + "|"]
    for label, key, fmt in SCALE_ROWS:
        if key is None:
            cells = [f"{r['train_videos']:,} / {r['test_videos']:,}" for r in results]
            ratio = ""
        else:
            cells = [_scale_cell(r, key, fmt) if key in r else "-" for r in results]
            ratio = f"{scale['ratios'][key]:.2f}" if key in scale["ratios"] else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    s, tvl1, m = scale["settings"], scale["tvl1"], report["machine"]
    loads = [r["load_at_start"] for r in results] + [results[-1]["load_at_end"]]
    missed = [f"{key} ratio {check['value']:.2f} (target <= {check['target']:.2f})"
              for key, check in scale["checks"].items() if not check["met"]]
    lines += [
        "",
        f"TV-L1 (`--flow tvl1`, CPU, 1 process) on {tvl1['tvl1_videos']} of the videos: "
        f"{tvl1['tvl1_ms_per_video']:.1f} ms per video against "
        f"{tvl1['tvl1_none_ms_per_video']:.1f} ms without flow, so flow adds "
        f"{tvl1['tvl1_added_ms_per_video']:.1f} ms per video "
        f"({tvl1['tvl1_pairs_per_video']} frame pairs).",
        f"Measured by `avd-bench --scale` on {m['cpu_model']}, {m['cores']} cores: "
        f"{s['classes']} classes of {s['frames']}-frame {s['size']}x{s['size']} videos "
        f"(`avd_tf.bench.scale_videos`), each step in a fresh process (peak RSS includes "
        f"TensorFlow); input batch {s['batch_size']}; load average "
        f"{min(loads):.1f}-{max(loads):.1f}.",
        "Linear cost (ratios: " + ", ".join(
            f"{key} <= {check['target']:.2f}" for key, check in scale["checks"].items())
        + "): " + ("met." if not missed else "missed: " + "; ".join(missed) + "."),
    ]
    return "\n".join(lines) + "\n"
