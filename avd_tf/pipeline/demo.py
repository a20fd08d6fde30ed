"""The whole pipeline on the built-in demo data, end to end (`avd-demo`).

Stages, each reused when its output is complete so the demo can be re-run
into the same folder: demo videos (class = kind of object x camera motion)
-> avd-prepare (RGB + TV-L1, with the data's mirror classes) -> per training
seed: avd-train (rgb and flow), fine-tuning of one ImageNet backbone per
stream (the AVD streams are distilled on the way), avd-evaluate -> the
seeds' mean +- std, figures and summary.md. The stages run in this process
on `avd_tf.pipeline.stages.Runner`, their times kept in timings.json
(`StageTimings`).

Every seed trains and evaluates on the same videos (`seed` draws them);
`seeds` vary AVD training and fine-tuning. The fine-tuned classifiers keep
their last epoch, so no figure is chosen on the test split.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np

from avd_tf.bench.machine import cpu_model
from avd_tf.files import write_json_atomically, write_text_atomically
from avd_tf.layout import MANIFEST, METRICS
from avd_tf.pipeline.stages import Runner, Stage, StageTimings
from avd_tf.readme_section import replace_section_with_image
from avd_tf.streams import CLIP_CHANNELS, avd_input, avd_stream

TIMINGS = "timings.json"
STREAMS = ("frame", "mean", "dynamic", "avd_rgb", "flow", "avd_flow")
# The paper's Table 1 fusions, plus RGB+OF (the classic two-stream pair).
FUSIONS = ("frame+flow", "flow+avd_flow", "avd_flow+avd_rgb", "flow+avd_flow+avd_rgb")


@dataclasses.dataclass
class DemoSettings:
    """Sizes chosen so that the demo runs in minutes on a 2-core CPU.

    `num_classes` None: every kind x motion class of the generator's defaults.
    """

    num_classes: int | None = None
    videos_per_class: int = 10
    frames: int = 24
    size: int = 40
    seed: int = 0
    seeds: tuple[int, ...] = (0,)
    workers: int = os.cpu_count() or 1
    avd_preset: str = "small"
    # 1500 steps per stream (cosine schedule). On held-out videos of a
    # second demo draw (3 seeds; README "Training length and clip side at
    # the chosen widths") 750 steps classified as well but left D's clips
    # 0.5 dB above the best still picture against 1.6 dB: less motion in
    # the image.
    avd_epochs: int = 10
    avd_steps: int = 150
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    input_size: int = 64
    # 3 x 60 steps. On the held-out videos of the preset sweep (16 videos,
    # 3 seeds, widths 8-16-16-16; README "The sweep behind the small
    # preset"), AVD(RGB) top-1 was 48 +- 10 % after 3 x 20 steps (training
    # accuracy ~0.5: under-trained), 79 +- 10 after 3 x 60 and 88 +- 6
    # after 3 x 120; the dynamic image 33, 56 and 65. 3 x 120 would be
    # better still but doubles fine-tuning time, which the demo's 600 s
    # budget does not allow.
    finetune_epochs: int = 3
    finetune_steps: int = 60
    finetune_lr: float = 0.01
    finetune_lr_decay: float = 0.3
    batch_size: int = 16
    streams: tuple[str, ...] = STREAMS
    progress: bool = True


def _announce(log: Callable[[str], None]):
    def announce(stage: Stage, index: int, total: int, done: bool) -> None:
        log(f"\n=== [{index}/{total}] {stage.text}")
        if done and not stage.always_run:
            log(f"reusing {stage.folder}")

    return announce


def seed_dir(output_dir: str, seed: int) -> str:
    """Where the AVD models, classifiers and results of training seed `seed` go."""
    return os.path.join(output_dir, f"seed-{seed}")


def run_demo(output_dir: str, settings: DemoSettings | None = None, log: Callable[[str], None] = print) -> dict:
    """Runs (or finishes) the demo in `output_dir`; returns the results over the seeds (`aggregate`)."""
    from avd_tf.classify.evaluate import evaluate
    from avd_tf.classify.finetune import finetune
    from avd_tf.datasets import load_dataset
    from avd_tf.models.training import train_avd
    from avd_tf.records.convert import ConvertOptions
    from avd_tf.records.prepare import prepare
    from avd_tf.video.synthetic import make_demo_dataset

    s = settings or DemoSettings()
    if not s.seeds:
        raise ValueError("avd-demo needs at least one training seed (--seeds)")
    os.makedirs(output_dir, exist_ok=True)
    timings = StageTimings(os.path.join(output_dir, TIMINGS), log)

    video_root = os.path.join(output_dir, "videos")
    data_dir = os.path.join(output_dir, "prepared")
    avd_streams = [x for x in CLIP_CHANNELS if avd_stream(x) in s.streams]
    avd_dirs = {seed: {stream: os.path.join(seed_dir(output_dir, seed), avd_stream(stream))
                       for stream in avd_streams} for seed in s.seeds}
    model_dirs = {seed: [os.path.join(seed_dir(output_dir, seed), "classifiers", stream)
                         for stream in s.streams] for seed in s.seeds}
    summary_path = os.path.join(video_root, "demo_data.json")
    made = {}

    def make_videos():
        made["data"] = make_demo_dataset(video_root, num_classes=s.num_classes,
                                         videos_per_class=s.videos_per_class, frames=s.frames,
                                         size=s.size, seed=s.seed, log=log)

    def prepare_videos():
        data = made.get("data") or json.load(open(summary_path))
        dataset = load_dataset("ucf101", video_dir=os.path.join(video_root, "videos"),
                               split_dir=os.path.join(video_root, "splits"))
        flip_map = json.load(open(data["flip_label_map"])) if data.get("flip_label_map") else None
        prepare(dataset, os.path.join(video_root, "videos"), data_dir,
                ConvertOptions(size=s.size, clip_frames=8), dataset_name="demo",
                workers=s.workers, progress=s.progress, flip_label_map=flip_map, log=log)

    def train():
        for seed in s.seeds:
            for stream in avd_streams:
                log(f"--- seed {seed}, AVD({stream})")
                train_avd(data_dir, avd_dirs[seed][stream], stream=stream, preset=s.avd_preset,
                          epochs=s.avd_epochs, steps_per_epoch=s.avd_steps, seed=seed,
                          progress=s.progress, log=log)

    def finetune_streams():
        for seed in s.seeds:
            for stream, model_dir in zip(s.streams, model_dirs[seed]):
                log(f"--- seed {seed}, stream {stream}")
                source = avd_input(stream)
                avd_dir = avd_dirs[seed].get(source) if source else None
                finetune(data_dir, stream, model_dir, backbone=s.backbone, weights=s.weights,
                         epochs=s.finetune_epochs, steps_per_epoch=s.finetune_steps,
                         batch_size=s.batch_size, input_size=s.input_size, lr=s.finetune_lr,
                         lr_decay=s.finetune_lr_decay, seed=seed, avd_model_dir=avd_dir,
                         progress=s.progress, log=log)

    def evaluate_seeds():
        fusions = [f for f in FUSIONS if set(f.split("+")) <= set(s.streams)]
        runs = {}
        for seed in s.seeds:
            folder = seed_dir(output_dir, seed)
            runs[seed] = evaluate(model_dirs[seed], data_dir, fusions=fusions or None,
                                  output=os.path.join(folder, "results.json"),
                                  confusion_png=os.path.join(folder, "confusion.png"),
                                  markdown=os.path.join(folder, "table.md"), progress=s.progress,
                                  log=log)
        made["results"] = aggregate(runs)
        made["results"]["avd"] = {stream: aggregate_avd([avd_dirs[seed][stream] for seed in s.seeds])
                                  for stream in avd_streams}
        write_json_atomically(os.path.join(output_dir, "results.json"), made["results"])

    def figures():
        first = s.seeds[0]
        made["figures"] = write_figures(output_dir, data_dir, avd_dirs[first], s)
        confusion = os.path.join(seed_dir(output_dir, first), "confusion.png")
        if os.path.exists(confusion):
            made["figures"].append(confusion)

    # A stage without outputs (evaluation, figures) always runs; training and
    # fine-tuning are called even when finished, since their model folders
    # resume a run and refuse one with other settings.
    Runner(log=log, timings=timings, announce=_announce(log)).run([
        Stage("videos", [summary_path], video_root, action=make_videos,
              text="demo videos (kinds of object x camera motions)"),
        Stage("prepare", [os.path.join(data_dir, MANIFEST)], data_dir, action=prepare_videos,
              text="avd-prepare: JPEG frames + TV-L1 flow -> TFRecords"),
        Stage("avd_train", [os.path.join(d, METRICS) for dirs in avd_dirs.values() for d in dirs.values()],
              output_dir, action=train, always_run=True,
              text=f"avd-train: AVD on {', '.join(avd_streams)}, seeds " + ", ".join(map(str, s.seeds))),
        Stage("finetune", [os.path.join(d, METRICS) for dirs in model_dirs.values() for d in dirs],
              output_dir, action=finetune_streams, always_run=True,
              text=f"avd-finetune: {s.backbone} ({s.weights}) on {', '.join(s.streams)}"),
        Stage("evaluate", [], output_dir, action=evaluate_seeds,
              text="avd-evaluate: video-level accuracy per stream and late fusion"),
        Stage("figures", [], output_dir, action=figures, text="figures and summary.md"),
    ])
    data = made.get("data") or json.load(open(summary_path))
    write_summary(output_dir, made["results"], made["figures"], timings.close(), s, data)
    log(open(os.path.join(output_dir, "summary.md")).read())
    return made["results"]


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(list(values), float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def factor_accuracies(confusion, classes) -> dict:
    """Shares of videos whose predicted class has the right kind of object, and the right motion.

    The demo's class is kind x motion (`synthetic.parse_class`): a frame can
    only get the kind right, optical flow only the motion.
    """
    from avd_tf.video.synthetic import parse_class

    confusion = np.asarray(confusion)
    factors = [parse_class(name) for name in classes]
    total = confusion.sum()
    out = {}
    for index, name in ((0, "kind"), (1, "motion")):
        same = np.array([[a[index] == b[index] for b in factors] for a in factors])
        out[f"{name}_accuracy"] = float((confusion * same).sum() / total) if total else 0.0
    return out


def aggregate(runs: dict) -> dict:
    """Per stream and fusion, mean and std over the seeds' evaluate() results.

    Of top-1, top-5 and, for kind x motion classes, the kind and motion
    accuracies (`factor_accuracies`); "*_runs" lists each seed's value.
    """
    seeds = sorted(runs)
    first = runs[seeds[0]]
    classes = first.get("classes") or []
    out = {"seeds": seeds, "classes": classes, "split": first.get("split", "test"),
           "streams": {}, "fusions": {}}
    for group in ("streams", "fusions"):
        for key, entry in first.get(group, {}).items():
            per_seed = [dict(runs[seed][group][key]) for seed in seeds]
            if all("confusion" in one for one in per_seed) and _has_factors(classes):
                for one in per_seed:
                    one.update(factor_accuracies(one["confusion"], classes))
            row = {"num_videos": entry["num_videos"]}
            for metric in ("top1", "top5", "kind_accuracy", "motion_accuracy"):
                if metric in per_seed[0]:
                    values = [one[metric] for one in per_seed]
                    row[metric], row[f"{metric}_std"] = mean_std(values)
                    row[f"{metric}_runs"] = values
            out[group][key] = row
    return out


def _has_factors(classes) -> bool:
    """Whether every class is a kind x motion class of the demo generator."""
    from avd_tf.video.synthetic import parse_class

    try:
        return bool(classes) and all(parse_class(name)[0] for name in classes)
    except ValueError:
        return False


# Figures of a trained AVD model that the demo reports (last epoch, test clips).
AVD_FIGURES = ("val_psnr", "val_still_psnr", "val_motion_gain_db", "val_motion_r2",
               "val_scene_psnr", "teacher_acc_real", "teacher_acc_fake", "grad_ratio",
               "clips_per_second")


def aggregate_avd(model_dirs: list[str]) -> dict:
    """AVD_FIGURES over the runs in `model_dirs`: {name: {"mean", "std", "runs"}}."""
    from avd_tf.run_dir import read_metrics

    # clips_per_second is in "timing", the other figures in "final".
    figures = [{**m["timing"], **m["final"]} for m in map(read_metrics, model_dirs)]
    out = {}
    for key in AVD_FIGURES:
        values = [m[key] for m in figures if m.get(key) is not None]
        if values:
            mean, std = mean_std(values)
            out[key] = {"mean": mean, "std": std, "runs": values}
    return out


def write_figures(output_dir: str, data_dir: str, avd_dirs: dict, s: DemoSettings) -> list[str]:
    """Contact sheet (clip frames | AVD(RGB) | AVD(OF) | dynamic image) and AVD loss curves."""
    from avd_tf import visualize
    from avd_tf.classify.dynamic_images import dynamic_image, to_uint8
    from avd_tf.inputs import class_names, clip_dataset
    from avd_tf.models.distill import distill, encoder_spec, load_encoder
    from avd_tf.run_dir import read_metrics

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
            history = read_metrics(path)["history"]
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
    return figures


def seeds_table(results: dict) -> str:
    """Markdown: top-1 (%) mean +- std over the seeds per stream and fusion, and each seed's value."""
    from avd_tf.classify.report import display_name

    seeds = results["seeds"]
    factors = "kind_accuracy" in next(iter(results["streams"].values()), {})
    header = f"| video top-1 (%) | mean ± std over {len(seeds)} seed(s) | " + " | ".join(
        f"seed {seed}" for seed in seeds) + " |"
    rule = "|---|---:|" + "---:|" * len(seeds)
    if factors:
        header += " kind right (%) | motion right (%) |"
        rule += "---:|---:|"
    lines = [header, rule]
    for group in ("streams", "fusions"):
        for key, row in results[group].items():
            runs = " | ".join(f"{100 * v:.1f}" for v in row["top1_runs"])
            line = f"| {display_name(key)} | {_percent(row, 'top1')} | {runs} |"
            if factors:
                line += f" {_percent(row, 'kind_accuracy')} | {_percent(row, 'motion_accuracy')} |"
            lines.append(line)
    return "\n".join(lines)


def _percent(row: dict, metric: str) -> str:
    return f"{100 * row[metric]:.1f} ± {100 * row[metric + '_std']:.1f}"


def _figure(entry: dict, digits: int = 1) -> str:
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def avd_lines(results: dict) -> list[str]:
    """Per AVD stream: the motion diagnostic and training figures, mean ± std over the seeds."""
    lines = []
    for stream, figures in results.get("avd", {}).items():
        get = figures.get
        line = (f"* AVD({stream}), last epoch on the test clips: reconstruction PSNR "
                f"{_figure(get('val_psnr'))} dB against {_figure(get('val_still_psnr'))} dB for the "
                f"best still picture (the mean frame repeated): motion gain "
                f"{_figure(get('val_motion_gain_db'), 2)} dB, motion R² "
                f"{_figure(get('val_motion_r2'), 3)}")
        if get("val_scene_psnr"):
            line += f"; image vs the clip's mean frame {_figure(get('val_scene_psnr'))} dB"
        line += (f"; teacher accuracy {_figure(get('teacher_acc_real'), 2)} on real frames, "
                 f"{_figure(get('teacher_acc_fake'), 2)} on distilled images; adversarial / "
                 f"reconstruction gradient at E's output {_figure(get('grad_ratio'), 3)}; "
                 f"{get('clips_per_second')['mean']:.0f} training clips/s.")
        lines.append(line)
    return lines


def write_summary(output_dir: str, results: dict, figures: list[str], timings: dict, s: DemoSettings,
                  data: dict) -> None:
    classes = results["classes"] or data.get("classes", [])
    videos = max(row["num_videos"] for row in results["streams"].values())
    kinds = ", ".join(data.get("kinds") or []) or "none"
    motions = ", ".join(data.get("motions") or [])
    lines = [
        "# avd-demo summary",
        "",
        f"{len(classes)} classes = kind of object ({kinds}) x camera motion ({motions}); "
        f"{s.videos_per_class} videos per class of {s.frames} frames at {s.size}x{s.size}; "
        f"{videos} test videos (chance {100 / max(len(classes), 1):.1f}% top-1). "
        f"AVD preset `{s.avd_preset}` ({s.avd_epochs} epochs x {s.avd_steps} steps); backbone "
        f"`{s.backbone}` (weights: {s.weights}) at {s.input_size}x{s.input_size}, "
        f"{s.finetune_epochs} epochs x {s.finetune_steps} steps, SGD lr {s.finetune_lr} "
        f"x{s.finetune_lr_decay} per epoch, last epoch kept. Seeds {', '.join(map(str, results['seeds']))} "
        "vary AVD training and fine-tuning on the same videos.",
        "",
        seeds_table(results),
        "",
        *avd_lines(results),
        "",
        "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f" on {cpu_model()}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "Figures: " + ", ".join(os.path.basename(f) for f in figures),
        "",
    ]
    write_text_atomically(os.path.join(output_dir, "summary.md"), "\n".join(lines))


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
    return replace_section_with_image(readme, README_SECTION, body,
                                      os.path.join(output_dir, "contact_sheet.png"),
                                      "demo_contact_sheet.png")
