"""An ablation's runs gathered into rows (mean +- std over seeds): table, CSV and plot.

A row is a cell of the grid, the untrained-E control of an E architecture,
or a baseline stream; its figures are the mean and the sample standard
deviation (n - 1) over the seeds it ran with. "vs <baseline>" columns are
paired by seed: the mean +- std of (row's top-1 - baseline's top-1) over
the seeds both ran with, in percentage points.
"""
from __future__ import annotations

import csv
import math
import os
import re
import statistics

from avd_tf.readme_section import replace_section_with_image

BASELINES = ("frame", "mean", "dynamic")
KINDS = ("cell", "control", "baseline")
# (key in a run's figures, column title, scale, number format: "2" = 2 decimals, "3g" = 3 digits)
FIGURES = (
    ("val_motion_gain_db", "motion_gain_db", 1.0, 2),
    ("val_motion_r2", "motion_r2", 1.0, 3),
    ("val_psnr", "psnr (dB)", 1.0, 1),
    ("val_still_psnr", "still_psnr (dB)", 1.0, 1),
    ("val_scene_psnr", "scene_psnr (dB)", 1.0, 1),
    ("teacher_acc_real", "T acc real", 1.0, 2),
    ("teacher_acc_fake", "T acc fake", 1.0, 2),
    ("grad_ratio", "grad_ratio", 1.0, "3g"),
)
COLUMN_NOTES = (
    "top-1: video-level top-1 accuracy (%) of the classifier fine-tuned on the row's images "
    "(cells and control: E's distilled AVD(RGB) images; baselines: their stream).",
    "vs frame / mean / dynamic: the row's top-1 minus that baseline's, paired by seed "
    "(percentage points); above 0 the row beats it.",
    "motion_gain_db: PSNR of D(E(V)) minus that of the clip's mean frame repeated; above 0 the "
    "image carries motion no still picture holds.",
    "motion_r2: share of the clip's temporal variance the reconstruction recovers "
    "(0 for any still picture, 1 exact).",
    "psnr / still_psnr: PSNR of D(E(V)) / of the mean frame repeated against the clip; "
    "scene_psnr: E's image against the clip's mean frame (does it look like the scene).",
    "T acc real / fake: the teacher's accuracy on real frames / on E's images in the last "
    "training epoch (near 0.5 / 0.5: T cannot tell them apart; at lam = 1 T trains but "
    "does not act on E).",
    "grad_ratio: norm of the adversarial over the reconstruction gradient at E's output "
    "(Eq. 3's two terms; 0 when lam = 1).",
)


def mean_std(values, scale: float = 1.0, decimals: int | str = 1) -> str:
    """"61.2 +- 3.4": mean and sample standard deviation of `values` times `scale`.

    `decimals`: digits after the point, or a string such as "3g" for
    significant digits (figures spanning decades). One value gives just the
    value; no value (missing ones are skipped) gives "".
    """
    spec = f".{decimals}" if isinstance(decimals, str) else f".{decimals}f"
    values = [scale * float(v) for v in values if v is not None]
    if not values or not all(math.isfinite(v) for v in values):
        return "" if not values else "nan"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:{spec}}"
    return f"{mean:{spec}} +- {statistics.stdev(values):{spec}}"


def _stats(values) -> dict | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def summarise(runs: list[dict]) -> list[dict]:
    """Rows (cells, controls, then baselines; otherwise in run order): name, kind, seeds, stats."""
    baseline_top1 = {(run["row"], run["seed"]): run["top1"]
                     for run in runs if run["kind"] == "baseline"}
    rows: dict[str, dict] = {}
    for run in runs:
        rows.setdefault(run["row"], {"row": run["row"], "kind": run["kind"],
                                     "setting": run["setting"], "runs": []})["runs"].append(run)
    summary = []
    for row in rows.values():
        runs_of_row = row.pop("runs")
        row["seeds"] = [run["seed"] for run in runs_of_row]
        row["top1"] = _stats(run["top1"] for run in runs_of_row)
        row["num_videos"] = sorted({run["num_videos"] for run in runs_of_row})
        if row["kind"] != "baseline":
            for baseline in BASELINES:
                row[f"vs_{baseline}"] = _stats(
                    run["top1"] - baseline_top1[(baseline, run["seed"])]
                    for run in runs_of_row if (baseline, run["seed"]) in baseline_top1)
            for key, *_ in FIGURES:
                row[key] = _stats(run["figures"].get(key) for run in runs_of_row)
        summary.append(row)
    return sorted(summary, key=lambda row: KINDS.index(row["kind"]))


def _cell(stats: dict | None, scale: float, decimals: int) -> str:
    return mean_std(stats["values"], scale, decimals) if stats else ""


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The table's header and its rows of formatted cells (markdown and CSV share them)."""
    header = ["setting", "seeds", "top-1 (%)",
              *[f"vs {b} (pp)" for b in BASELINES], *[title for _, title, _, _ in FIGURES]]
    body = []
    for row in rows:
        name = row["row"] if row["kind"] != "baseline" else f"baseline: {row['row']}"
        line = [name, str(len(row["seeds"])), _cell(row["top1"], 100.0, 1)]
        line += [_cell(row.get(f"vs_{b}"), 100.0, 1) for b in BASELINES]
        line += [_cell(row.get(key), scale, decimals) for key, _, scale, decimals in FIGURES]
        body.append(line)
    return header, body


def markdown(rows: list[dict], preamble: list[str]) -> str:
    """The whole ablation.md: `preamble` lines, the table, what each column means."""
    header, body = table_rows(rows)
    lines = [*preamble, "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    lines += ["", "Columns:", "", *[f"* {note}" for note in COLUMN_NOTES], ""]
    return "\n".join(lines)


def write_csv(path: str, rows: list[dict]) -> None:
    """One line per row: mean and std of every figure in separate columns (top-1 as a fraction)."""
    keys = ["top1", *[f"vs_{b}" for b in BASELINES], *[key for key, *_ in FIGURES]]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "kind", "seeds",
                         *[f"{k}_{s}" for k in keys for s in ("mean", "std")]])
        for row in rows:
            values = []
            for key in keys:
                stats = row.get(key)
                values += ["" if not stats else stats["mean"],
                           "" if not stats or stats["std"] is None else stats["std"]]
            writer.writerow([row["row"], row["kind"], len(row["seeds"]), *values])


def plot(path: str, rows: list[dict], title: str) -> None:
    """Top-1 per cell and control with std error bars, baselines as bands; motion_gain_db too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mean_and_err(stats, scale=1.0):
        return (scale * stats["mean"], scale * (stats["std"] or 0.0)) if stats else (math.nan, 0.0)

    shown = [row for row in rows if row["kind"] != "baseline"]
    names = [row["row"] for row in shown]
    colours = ["tab:grey" if row["kind"] == "control" else "tab:blue" for row in shown]
    x = list(range(len(shown)))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(shown) + 4.0), 4.2))
    top1 = [mean_and_err(row["top1"], 100.0) for row in shown]
    axes[0].bar(x, [m for m, _ in top1], yerr=[e for _, e in top1], color=colours, capsize=4)
    for row, colour in zip((r for r in rows if r["kind"] == "baseline"),
                           ("tab:orange", "tab:green", "tab:red")):
        mean, err = mean_and_err(row["top1"], 100.0)
        axes[0].axhspan(mean - err, mean + err, color=colour, alpha=0.15)
        axes[0].axhline(mean, color=colour, linestyle="--", label=row["row"])
    axes[0].set_ylabel("video top-1 (%)")
    axes[0].set_title("top-1 (bands: baselines, mean ± std)", fontsize=10)
    axes[0].legend(fontsize=8)
    gains = [mean_and_err(row.get("val_motion_gain_db")) for row in shown]
    axes[1].bar(x, [m for m, _ in gains], yerr=[e for _, e in gains], color=colours, capsize=4)
    axes[1].axhline(0.0, color="black", linewidth=0.8)
    axes[1].set_ylabel("dB")
    axes[1].set_title("motion_gain_db (> 0: motion in the image)", fontsize=10)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["BASELINES", "FIGURES", "markdown", "mean_std", "plot", "summarise", "table_rows",
           "write_csv"]


def write_readme(output_dir: str, readme: str, section: str) -> str:
    """Puts a finished ablation's table (ablation.md) and plot into section `section` of `readme`.

    Returns the plot's copy under docs/images/ (named after the section).
    """
    table = os.path.join(output_dir, "ablation.md")
    if not os.path.exists(table):
        raise FileNotFoundError(f"{table}: no finished ablation in {output_dir}")
    name = re.sub(r"[^a-z0-9]+", "_", section.lower()).strip("_") + ".png"
    return replace_section_with_image(readme, section, open(table, encoding="utf-8").read(),
                                      os.path.join(output_dir, "ablation.png"), name)
