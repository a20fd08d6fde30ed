"""The whole pipeline on the built-in motion data, end to end (`avd-demo`).

Stages, each reused when its output is complete so the demo can be re-run
into the same folder: demo videos -> avd-prepare (RGB + TV-L1) -> avd-train
(rgb and flow) -> fine-tuning of one ImageNet backbone per stream (the AVD
streams are distilled on the way) -> avd-evaluate -> figures and summary.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Callable

import numpy as np

from avd_tf.bench.machine import cpu_model
from avd_tf.readme_section import replace_section

STREAMS = ("frame", "mean", "dynamic", "avd_rgb", "flow", "avd_flow")
# The paper's Table 1 fusions, plus RGB+OF (the classic two-stream pair).
FUSIONS = ("frame+flow", "flow+avd_flow", "avd_flow+avd_rgb", "flow+avd_flow+avd_rgb")


@dataclasses.dataclass
class DemoSettings:
    """Sizes chosen so that the demo runs in minutes on a 2-core CPU."""

    num_classes: int = 8
    videos_per_class: int = 10
    frames: int = 24
    size: int = 40
    seed: int = 0
    workers: int = os.cpu_count() or 1
    avd_preset: str = "small"
    avd_epochs: int = 6
    # 600 steps per stream (~50 s each on 2 AVX-512 cores): the images then
    # show the clip's scene in most runs (PSNR against the clip's mean frame:
    # 19.9-20.5 dB for seeds 0 and 1 of AVD training, 12-13 dB for seed 2 and
    # for the videos of --seed 1; README).
    avd_steps: int = 100
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    input_size: int = 64
    finetune_epochs: int = 3
    finetune_steps: int = 20
    finetune_lr: float = 0.01
    finetune_lr_decay: float = 0.3
    batch_size: int = 16
    streams: tuple[str, ...] = STREAMS
    progress: bool = True


def _stage(log, index: int, total: int, text: str) -> float:
    log(f"\n=== [{index}/{total}] {text}")
    return time.time()


def run_demo(output_dir: str, settings: DemoSettings | None = None, log: Callable[[str], None] = print) -> dict:
    """Runs (or finishes) the demo in `output_dir`; returns the evaluation results."""
    from avd_tf.classify.evaluate import evaluate
    from avd_tf.classify.finetune import finetune
    from avd_tf.datasets import load_dataset
    from avd_tf.models.training import train_avd
    from avd_tf.records.convert import ConvertOptions
    from avd_tf.records.prepare import prepare
    from avd_tf.video.synthetic import make_demo_dataset

    s = settings or DemoSettings()
    os.makedirs(output_dir, exist_ok=True)
    timings = {}
    # A stage reused from an earlier run keeps that run's wall time, so the
    # summary of a re-run still says what the whole demo costs.
    timings_path = os.path.join(output_dir, "timings.json")
    previous = json.load(open(timings_path)) if os.path.exists(timings_path) else {}

    def finish(name: str, started: float, reused: bool) -> None:
        timings[name] = previous[name] if reused and name in previous else time.time() - started

    video_root = os.path.join(output_dir, "videos")
    data_dir = os.path.join(output_dir, "prepared")
    avd_streams = [x for x in ("rgb", "flow") if f"avd_{x}" in s.streams]
    total = 6

    t = _stage(log, 1, total, "demo videos (camera motions over random textures)")
    reused = os.path.exists(os.path.join(video_root, "demo_data.json"))
    if reused:
        log(f"reusing {video_root}")
    else:
        make_demo_dataset(video_root, num_classes=s.num_classes, videos_per_class=s.videos_per_class,
                          frames=s.frames, size=s.size, seed=s.seed, log=log)
    finish("videos", t, reused)

    t = _stage(log, 2, total, "avd-prepare: JPEG frames + TV-L1 flow -> TFRecords")
    reused = os.path.exists(os.path.join(data_dir, "manifest.json"))
    if reused:
        log(f"reusing {data_dir}")
    else:
        dataset = load_dataset("ucf101", video_dir=os.path.join(video_root, "videos"),
                               split_dir=os.path.join(video_root, "splits"))
        prepare(dataset, os.path.join(video_root, "videos"), data_dir,
                ConvertOptions(size=s.size, clip_frames=8), dataset_name="demo",
                workers=s.workers, progress=s.progress, log=log)
    finish("prepare", t, reused)

    t = _stage(log, 3, total, f"avd-train: AVD on {', '.join(avd_streams)}")
    avd_dirs = {stream: os.path.join(output_dir, f"avd_{stream}") for stream in avd_streams}
    reused = _all_finished(avd_dirs.values())
    for stream in avd_streams:
        train_avd(data_dir, avd_dirs[stream], stream=stream, preset=s.avd_preset,
                  epochs=s.avd_epochs, steps_per_epoch=s.avd_steps, seed=s.seed,
                  progress=s.progress, log=log)
    finish("avd_train", t, reused)

    t = _stage(log, 4, total, f"avd-finetune: {s.backbone} ({s.weights}) on {', '.join(s.streams)}")
    model_dirs = [os.path.join(output_dir, "classifiers", stream) for stream in s.streams]
    reused = _all_finished(model_dirs)
    for stream, model_dir in zip(s.streams, model_dirs):
        log(f"--- stream {stream}")
        finetune(data_dir, stream, model_dir, backbone=s.backbone, weights=s.weights,
                 epochs=s.finetune_epochs, steps_per_epoch=s.finetune_steps, batch_size=s.batch_size,
                 input_size=s.input_size, lr=s.finetune_lr, lr_decay=s.finetune_lr_decay,
                 seed=s.seed, avd_model_dir=avd_dirs.get(stream.replace("avd_", "")) if stream.startswith("avd_") else None,
                 progress=s.progress, log=log)
    finish("finetune", t, reused)

    t = _stage(log, 5, total, "avd-evaluate: video-level accuracy per stream and late fusion")
    fusions = [f for f in FUSIONS if set(f.split("+")) <= set(s.streams)]
    results = evaluate(model_dirs, data_dir, fusions=fusions or None,
                       output=os.path.join(output_dir, "results.json"),
                       confusion_png=os.path.join(output_dir, "confusion.png"),
                       markdown=os.path.join(output_dir, "table.md"), progress=s.progress, log=log)
    finish("evaluate", t, False)

    t = _stage(log, 6, total, "figures and summary.md")
    figures = write_figures(output_dir, data_dir, avd_dirs, s)
    finish("figures", t, False)
    timings["total"] = sum(timings.values())
    write_summary(output_dir, results, figures, timings, s, avd_dirs)
    log(open(os.path.join(output_dir, "summary.md")).read())
    return results


def _all_finished(run_dirs) -> bool:
    """Whether every training run in `run_dirs` has written its metrics.json (its end mark)."""
    from avd_tf.run_dir import METRICS

    return all(os.path.exists(os.path.join(path, METRICS)) for path in run_dirs)


def write_figures(output_dir: str, data_dir: str, avd_dirs: dict, s: DemoSettings) -> list[str]:
    """Contact sheet (clip frames | AVD(RGB) | AVD(OF) | dynamic image) and AVD loss curves."""
    from avd_tf import visualize
    from avd_tf.classify.dynamic_images import dynamic_image, to_uint8
    from avd_tf.inputs import class_names, clip_dataset
    from avd_tf.models.distill import distill, encoder_spec, load_encoder

    figures = []
    classes = class_names(data_dir)
    encoders = {stream: load_encoder(path) for stream, path in avd_dirs.items()}
    specs = [encoder_spec(e) for e in encoders.values()]
    num_frames = max((spec.num_frames for spec in specs), default=8)
    size = max((spec.image_size for spec in specs), default=32)
    rgb = clip_dataset(data_dir, "test", stream="rgb", num_frames=num_frames, size=size, batch_size=64)
    flow = clip_dataset(data_dir, "test", stream="flow", num_frames=num_frames, size=size, batch_size=64)
    rgb_batch, flow_batch = next(iter(rgb)), next(iter(flow))
    labels = rgb_batch["label"].numpy()
    rows, seen = [], set()
    for i, label in enumerate(labels):
        if label in seen:
            continue
        seen.add(label)
        clip = np.round((rgb_batch["clip"][i].numpy() + 1) * 127.5).astype(np.uint8)
        images, names = [], []
        if "rgb" in encoders:
            images.append(distill(encoders["rgb"], clip))
            names.append("AVD(RGB)")
        if "flow" in encoders:
            # distill() takes flow in pixels; the dataset gives it in units of 20 px.
            images.append(distill(encoders["flow"], flow_batch["clip"][i].numpy() * 20.0))
            names.append("AVD(OF)")
        images.append(to_uint8(dynamic_image(clip.astype(np.float32))))
        names.append("dynamic image")
        shown = [clip[j] for j in np.linspace(0, len(clip) - 1, 6).round().astype(int)]
        rows.append({"frames": shown, "image": np.concatenate(images, axis=1),
                     "caption": f"{classes[label]}: frames | " + " | ".join(names)})
    path = os.path.join(output_dir, "contact_sheet.png")
    visualize.save_png(path, visualize.contact_sheet(rows, min_tile=64))
    figures.append(path)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if avd_dirs:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        for stream, path in avd_dirs.items():
            history = json.load(open(os.path.join(path, "metrics.json")))["history"]
            epochs = list(range(1, len(history) + 1))
            axes[0].plot(epochs, [h["rec_loss"] for h in history], label=f"{stream} train")
            axes[0].plot(epochs, [h["val_rec_loss"] for h in history], "--", label=f"{stream} test")
            axes[1].plot(epochs, [h["val_psnr"] for h in history], label=f"{stream}: clip")
            if "val_scene_psnr" in history[-1]:
                axes[1].plot(epochs, [h["val_scene_psnr"] for h in history], ":",
                             label=f"{stream}: image vs mean frame")
            axes[2].plot(epochs, [h["teacher_acc_real"] for h in history], label=f"{stream} real")
            axes[2].plot(epochs, [h["teacher_acc_fake"] for h in history], "--", label=f"{stream} distilled")
        for ax, title in zip(axes, ("reconstruction loss (Eq. 1)", "test PSNR (dB)", "teacher accuracy")):
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(output_dir, "avd_training.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figures.append(path)
    confusion = os.path.join(output_dir, "confusion.png")
    if os.path.exists(confusion):
        figures.append(confusion)
    return figures


def avd_training_lines(avd_dirs: dict) -> list[str]:
    """Per AVD stream: test PSNR per epoch, image-vs-scene PSNR, teacher accuracy, speed."""
    lines = []
    for stream, path in avd_dirs.items():
        metrics = json.load(open(os.path.join(path, "metrics.json")))
        history = metrics["history"]
        line = (f"* AVD({stream}): test PSNR per epoch "
                + ", ".join(f"{h['val_psnr']:.1f}" for h in history) + " dB")
        if "val_scene_psnr" in history[-1]:
            line += ("; image vs the clip's mean frame "
                     + ", ".join(f"{h['val_scene_psnr']:.1f}" for h in history) + " dB")
        line += (f"; teacher accuracy (last epoch) {metrics['teacher_acc_real']:.2f} on real "
                 f"frames, {metrics['teacher_acc_fake']:.2f} on distilled images; "
                 f"{metrics['clips_per_second']:.0f} training clips/s.")
        lines.append(line)
    return lines


def write_summary(output_dir: str, results: dict, figures: list[str], timings: dict, s: DemoSettings,
                  avd_dirs: dict) -> None:
    table = open(os.path.join(output_dir, "table.md")).read()
    lines = [
        "# avd-demo summary",
        "",
        f"{s.num_classes} motion classes x {s.videos_per_class} videos of {s.frames} frames at "
        f"{s.size}x{s.size}; AVD preset `{s.avd_preset}` ({s.avd_epochs} epochs x {s.avd_steps} steps); "
        f"backbone `{s.backbone}` (weights: {s.weights}) at {s.input_size}x{s.input_size}, "
        f"{s.finetune_epochs} epochs x {s.finetune_steps} steps, SGD lr {s.finetune_lr} x{s.finetune_lr_decay} per epoch. "
        f"Chance is {100 / s.num_classes:.1f}% top-1.",
        "",
        table.strip(),
        "",
        *avd_training_lines(avd_dirs),
        "",
        "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f" on {cpu_model()}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "Figures: " + ", ".join(os.path.basename(f) for f in figures),
        "",
    ]
    with open(os.path.join(output_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(output_dir, "timings.json"), "w") as f:
        json.dump(timings, f, indent=1)


README_SECTION = "avd-demo results"


def write_readme(output_dir: str, readme: str) -> str:
    """Puts a finished demo's summary (table, AVD figures, wall time) into `readme`.

    Replaces the README's "avd-demo results" section (avd_tf.readme_section)
    and copies the contact sheet to docs/images/ next to it, so the README
    shows what the demo printed rather than typed-in figures. Returns the
    image's path.
    """
    summary = os.path.join(output_dir, "summary.md")
    if not os.path.exists(summary):
        raise FileNotFoundError(f"{summary}: no finished demo in {output_dir}")
    body = open(summary, encoding="utf-8").read().split("\n", 1)[1]
    body = "\n".join(line for line in body.splitlines() if not line.startswith("Figures: ")).strip()
    image = os.path.join(os.path.dirname(os.path.abspath(readme)), "docs", "images", "demo_contact_sheet.png")
    os.makedirs(os.path.dirname(image), exist_ok=True)
    shutil.copyfile(os.path.join(output_dir, "contact_sheet.png"), image)
    replace_section(readme, README_SECTION, body + "\n\n![demo contact sheet](docs/images/demo_contact_sheet.png)\n")
    return image
