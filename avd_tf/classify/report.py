"""Result tables laid out like the paper's, and confusion-matrix plots.

`markdown_table` follows Table 1 (rows: streams, then late fusions; one
top-1 column per dataset, top-1 and top-5 for Kinetics), `backbone_table`
Table 2 (rows: backbones) and `cross_dataset_table` Table 3 (train on rows,
test on columns). Accuracies are fractions in [0, 1] in the results and
percentages with one decimal in the tables; as in the paper, the best value
of each column is bold.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

# Paper Table 1 names the inputs RGB, OF and AVD (RGB/OF); Bilen et al.'s
# dynamic images are "DI" (Table 4).
DISPLAY_NAMES = {
    "frame": "RGB",
    "flow": "OF",
    "mean": "Mean frame",
    "dynamic": "DI (RGB)",
    "dynamic_flow": "DI (OF)",
    "avd_rgb": "AVD (RGB)",
    "avd_flow": "AVD (OF)",
}
DATASET_NAMES = {"ucf101": "UCF101", "hmdb51": "HMDB51", "kinetics": "Kinetics"}
BACKBONE_NAMES = {
    "alexnet": "AlexNet",
    "inception_v3": "Inception-V3",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "efficientnet_lite0": "EfficientNet-Lite0",
}
MISSING = "–"


def display_name(key: str) -> str:
    """A stream or fusion key as the paper writes it: "flow+avd_flow" -> "OF+AVD (OF)"."""
    return "+".join(DISPLAY_NAMES.get(part, part) for part in key.split("+"))


def dataset_name(key: str) -> str:
    return DATASET_NAMES.get(key.lower(), key)


def _wants_top5(dataset: str, top5: bool | None) -> bool:
    # The paper reports top-5 for Kinetics only (section 4.1).
    return "kinetics" in dataset.lower() if top5 is None else top5


def _entries(results: Mapping) -> dict[str, Mapping]:
    return {**results.get("streams", {}), **results.get("fusions", {})}


def _by_dataset(results: Mapping) -> Mapping[str, Mapping]:
    """One evaluation's results, or {dataset: results} of several."""
    if "streams" in results or "fusions" in results:
        return {dataset_name(results.get("dataset") or "Accuracy"): results}
    return {dataset_name(name): r for name, r in results.items()}


def _render(header: list[str], rows: list[list[float | None]], row_names: list[str]) -> str:
    """Markdown with percentages to one decimal and each column's best in bold."""
    best = []
    for c in range(len(header) - 1):
        values = [r[c] for r in rows if r[c] is not None]
        # A lone value is nobody's best.
        best.append(round(100 * max(values), 1) if len(values) > 1 else None)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, row in zip(row_names, rows):
        cells = []
        for c, value in enumerate(row):
            if value is None:
                cells.append(MISSING)
                continue
            text = f"{100 * value:.1f}"
            # Compared as printed, so rows that look equal are all bold.
            cells.append(f"**{text}**" if round(100 * value, 1) == best[c] else text)
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines) + "\n"


def _columns(datasets: list[str], top5: bool | None) -> list[tuple[str, str, str]]:
    columns = []
    for d in datasets:
        if _wants_top5(d, top5):
            columns += [(d, "top1", f"{d} top-1"), (d, "top5", f"{d} top-5")]
        else:
            columns.append((d, "top1", d))
    return columns


def markdown_table(results: Mapping, *, top5: bool | None = None) -> str:
    """Paper Table 1: one row per stream and fusion, one column per dataset.

    `results` is what `avd_tf.classify.evaluate.evaluate` returns (or the
    "mean" of a protocol.json), or {dataset name: such results} for several
    datasets. Rows keep the results' order (streams, then fusions) across
    datasets; a row a dataset lacks shows "–". `top5=None` adds a top-5
    column for datasets named like Kinetics only.
    """
    per_dataset = _by_dataset(results)
    columns = _columns(list(per_dataset), top5)
    keys: list[str] = []
    for res in per_dataset.values():
        keys += [k for k in _entries(res) if k not in keys]
    rows = [[_entries(per_dataset[d]).get(k, {}).get(metric) for d, metric, _ in columns] for k in keys]
    return _render([""] + [title for _, _, title in columns], rows, [display_name(k) for k in keys])


def backbone_table(results: Mapping[str, Mapping], *, stream: str = "avd_rgb", top5: bool | None = None) -> str:
    """Paper Table 2: one row per backbone, the accuracy of `stream` (a stream or fusion key).

    `results` maps a backbone name to its results (one dataset) or to
    {dataset: results}.
    """
    per_backbone = {b: _by_dataset(r) for b, r in results.items()}
    datasets: list[str] = []
    for r in per_backbone.values():
        datasets += [d for d in r if d not in datasets]
    columns = _columns(datasets, top5)
    rows = [
        [_entries(r.get(d, {})).get(stream, {}).get(metric) for d, metric, _ in columns]
        for r in per_backbone.values()
    ]
    names = [BACKBONE_NAMES.get(b, b) for b in per_backbone]
    return _render([display_name(stream)] + [title for _, _, title in columns], rows, names)


def cross_dataset_table(results: Mapping[str, Mapping[str, Mapping]], *, stream: str = "avd_rgb") -> str:
    """Paper Table 3: train on (rows) x test on (columns), top-1 of `stream`.

    `results[train][test]` is the evaluation of a model fine-tuned on
    `train` and tested on `test` (with a label map when they differ).
    """
    tests: list[str] = []
    for row in results.values():
        tests += [t for t in row if t not in tests]
    rows = [[_entries(row.get(t, {})).get(stream, {}).get("top1") for t in tests] for row in results.values()]
    header = [f"train \\ test ({display_name(stream)})"] + [dataset_name(t) for t in tests]
    return _render(header, rows, [dataset_name(t) for t in results])


def plot_confusion(matrix, class_names, path: str, *, title: str | None = None) -> str:
    """Writes the confusion matrix (rows: true class) as a PNG; returns `path`.

    Colours are row-normalised (each true class's share of predictions), so
    small classes read as well as large ones; counts are printed in the cells
    when there are at most 20 classes, and class names are left out beyond
    100 (Kinetics' 400 would be unreadable).
    """
    # The object API with an Agg canvas: no pyplot state, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"{path}: confusion matrix of shape {matrix.shape} for {k} class names")
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = min(max(4.0, 0.3 * k + 2.0), 40.0)
    figure = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)
    if k <= 100:
        font = 8 if k <= 30 else 5
        axes.set_xticks(range(k), class_names, rotation=90, fontsize=font)
        axes.set_yticks(range(k), class_names, fontsize=font)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    axes.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                              color="white" if shares[i, j] > 0.5 else "black")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    return path
