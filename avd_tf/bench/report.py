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
)
# The README section (avd_tf.readme_section) that `avd-bench --readme` replaces.
SECTION = "avd-bench table"


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
        cells = [fmt.format(r[key]) if key in r else "-" for r in presets.values()]
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
