"""Evaluates fine-tuned classifiers: video-level accuracy per stream and late fusions.

Paper section 4.3 and Table 1: each stream's images (frames, flow, AVD
images...) are classified one by one, their softmax scores averaged per
video, and streams combined by late fusion of those video scores. Section
4.5 (Table 3): a model fine-tuned on dataset A is tested on dataset B's
videos whose class matches one of A's.

A model folder (written by avd-finetune) holds `model.keras` (images in
[-1, 1] -> softmax scores) and `config.json` (stream, backbone, input_size,
classes, data_dir, avd_model_dir).
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from avd_tf.classify import report, scores
from avd_tf.files import write_json_atomically, write_text_atomically
from avd_tf.layout import AVD_MODEL, CLASSIFIER_MODEL, CONFIG, ENCODER

REQUIRED_CONFIG_KEYS = ("stream", "backbone", "input_size", "classes", "data_dir")
TOP5 = 5
# ensure_stream arguments that change a stream's images (recorded by avd-finetune).
STREAM_OPTIONS = ("frames_per_video", "window", "stride", "clips_per_video")


def read_model_config(model_dir: str) -> dict:
    """The config.json of a fine-tuned model folder, checked for the keys evaluation needs."""
    path = os.path.join(model_dir, CONFIG)
    if not os.path.isfile(os.path.join(model_dir, CLASSIFIER_MODEL)) and any(
            os.path.isfile(os.path.join(model_dir, name)) for name in (ENCODER, AVD_MODEL)):
        raise ValueError(f"{model_dir}: an AVD model folder (avd-train's), not a fine-tuned "
                         "classifier (avd-finetune's)")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no model config (avd-finetune writes it next to {CLASSIFIER_MODEL})")
    try:
        with open(path) as f:
            config = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    missing = [k for k in REQUIRED_CONFIG_KEYS if not isinstance(config, dict) or k not in config]
    if missing:
        raise ValueError(f"{path}: missing keys {', '.join(missing)}")
    if not isinstance(config["stream"], str) or not config["stream"] or "+" in config["stream"]:
        raise ValueError(f"{path}: 'stream' must be a stream name without '+', got {config['stream']!r}")
    if not isinstance(config["classes"], list) or not config["classes"]:
        raise ValueError(f"{path}: 'classes' must be a non-empty list of class names")
    return config


def load_model(model_dir: str):
    """The Keras classifier of a model folder (the avd_tf layers are registered first)."""
    import keras

    # Importing the backbones registers the custom layers saved models refer to.
    from avd_tf.classify import backbones  # noqa: F401
    from avd_tf.models.distill import check_keras_file

    path = os.path.join(model_dir, CLASSIFIER_MODEL)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no saved model (avd-finetune writes it)")
    check_keras_file(path)
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError) as error:
        raise ValueError(f"{path}: cannot load the model ({error})") from error


def predict(model, dataset, *, source: str = "model") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs `model` over a finite dataset of {"image", "label", "video_id"} batches.

    Returns image-level (probs [N, K], video ids [N] str, labels [N]).
    Outputs that are not probability rows are an error naming `source`:
    averaging and fusing logits would silently weigh streams differently.
    """
    probs, ids, labels = [], [], []
    for batch in dataset:
        out = np.asarray(model.predict_on_batch(batch["image"]), dtype=np.float64)
        if out.ndim != 2:
            raise ValueError(f"{source}: expected [batch, classes] scores, got shape {out.shape}")
        if np.any(out < -1e-6) or np.any(np.abs(out.sum(axis=1) - 1.0) > 1e-2):
            raise ValueError(f"{source}: outputs are not softmax probabilities (row sums {out.sum(axis=1)[:3]})")
        probs.append(out)
        ids.extend(v.decode("utf-8") for v in np.asarray(batch["video_id"]).ravel())
        labels.append(np.asarray(batch["label"], dtype=np.int64).ravel())
    if not probs:
        raise ValueError(f"{source}: the dataset holds no image")
    return np.concatenate(probs), np.asarray(ids), np.concatenate(labels)


def default_fusions(streams: Sequence[str]) -> list[tuple[str, ...]]:
    """Every combination of two or more streams, in the given order (Table 1's fusion rows)."""
    return [c for n in range(2, len(streams) + 1) for c in itertools.combinations(streams, n)]


def parse_fusions(spec: str | Sequence[str] | None, streams: Sequence[str]) -> list[tuple[str, ...]]:
    """"flow+avd_flow,avd_flow+avd_rgb" -> [("flow", "avd_flow"), ...]; None: `default_fusions`."""
    if spec is None:
        return default_fusions(streams)
    items = [s for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    fusions = []
    for item in items:
        members = tuple(m.strip() for m in item.split("+"))
        unknown = [m for m in members if m not in streams]
        if unknown:
            raise ValueError(
                f"fusion {item!r} names {', '.join(map(repr, unknown))}, not among the evaluated "
                f"streams ({', '.join(streams)})"
            )
        if len(members) < 2 or len(set(members)) != len(members):
            raise ValueError(f"fusion {item!r} must combine two or more different streams")
        fusions.append(members)
    return fusions


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1/top-5 over the videos, and the confusion matrix (rows: true class, columns: predicted)."""
    confusion = scores.confusion_matrix(np.argmax(probs, axis=1), labels, probs.shape[1])
    return {
        "confusion": confusion.tolist(),
        "top1": scores.topk_accuracy(probs, labels, 1),
        "top5": scores.topk_accuracy(probs, labels, TOP5),
        "num_videos": int(len(labels)),
    }


def score_streams(
    video_level: Mapping[str, scores.VideoScores],
    *,
    fuse: str = "mean",
    weights: Mapping[str, float] | None = None,
    fusions: Sequence[Sequence[str]] = (),
    strict: bool = True,
) -> tuple[dict, dict]:
    """Accuracy of each stream's video scores and of each late fusion.

    `weights` gives every stream its fusion weight (method "weighted"); a
    fusion uses its members' weights, normalised. Returns ({"streams": ...,
    "fusions": ...}, {key: (probs, labels)}) - the second for confusion
    matrices.
    """
    results = {"streams": {}, "fusions": {}}
    outputs = {}
    for name, (_, probs, labels) in video_level.items():
        results["streams"][name] = _accuracy(probs, labels)
        outputs[name] = (probs, labels)
    for members in fusions:
        key = "+".join(members)
        _, aligned, labels = scores.align({m: video_level[m] for m in members}, strict=strict)
        member_weights = None if fuse == "mean" else [weights[m] for m in members]
        w = scores.fusion_weights(len(members), member_weights, fuse)
        fused = scores.fuse([aligned[m] for m in members], member_weights, fuse)
        results["fusions"][key] = {**_accuracy(fused, labels), "weights": dict(zip(members, w.tolist()))}
        outputs[key] = (fused, labels)
    return results, outputs


def _best(results: dict) -> str:
    entries = {**results["streams"], **results["fusions"]}
    return max(entries, key=lambda k: entries[k]["top1"])  # max keeps the first of ties


def read_label_map(label_map: str, model_classes: list[str], data_classes: list[str]) -> dict[int, int]:
    """"name": classes matched by name; otherwise a JSON file {test class: model class}."""
    if label_map == "name":
        return scores.match_classes(model_classes, data_classes)
    try:
        with open(label_map) as f:
            pairs = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{label_map}: label map not found (use 'name' or a JSON file)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{label_map}: not valid JSON ({error})") from None
    if not isinstance(pairs, dict) or not all(isinstance(v, str) for v in pairs.values()):
        raise ValueError(f"{label_map}: expected a JSON object {{test class name: model class name}}")
    try:
        return scores.mapping_from_pairs(pairs, model_classes, data_classes)
    except ValueError as error:
        raise ValueError(f"{label_map}: {error}") from None


def _stream_options(config: dict, data_dir: str) -> dict:
    """The stream parameters the model was fine-tuned with, so its test images are made alike.

    On the model's own data the stream folder it used is named too, so a
    stream cached somewhere else (avd-finetune --cache_dir) is found again.
    """
    parameters = config.get("stream_parameters") or {}
    options = {k: parameters[k] for k in STREAM_OPTIONS if k in parameters}
    same_data = os.path.abspath(data_dir) == os.path.abspath(config["data_dir"])
    if same_data and config.get("stream_dir"):
        options["cache_dir"] = config["stream_dir"]
    return options


def evaluate(
    model_dirs: Sequence[str],
    data_dir: str | None = None,
    split: str = "test",
    fuse: str = "mean",
    fusions: str | Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    batch_size: int = 64,
    output: str | None = None,
    *,
    confusion_png: str | None = None,
    markdown: str | None = None,
    label_map: str | None = None,
    stream_dirs: Mapping[str, str] | None = None,
    strict: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluates each model folder on `split` of a prepared dataset, and their fusions.

    `data_dir` defaults to the first model's config data_dir. `fusions`
    ("a+b,a+b+c", or a list of such keys) defaults to every combination of
    two or more streams; `weights` (one per model folder) are the fusion
    weights of method "weighted". `label_map` ("name" or a JSON file
    {test class: model class}) tests models of another dataset (Table 3).
    `stream_dirs` ({stream: folder}) reads already made image-stream shards
    instead of making the stream from `data_dir`. `strict=False` fuses
    over the videos all members scored when their coverage differs.
    Returns the results (also written to `output` as JSON): {"streams":
    {name: {top1, top5, num_videos, ...}}, "fusions": {key: {top1, top5,
    num_videos, weights}}, "classes", "split", "dataset", "best", ...}.
    """
    from avd_tf.inputs import read_manifest

    if not model_dirs:
        raise ValueError("no model folder given")
    configs = [read_model_config(d) for d in model_dirs]
    names = [c["stream"] for c in configs]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ValueError(
                f"{model_dirs[names.index(name)]} and {model_dirs[i]} are both stream {name!r}; "
                "results are keyed by stream, so evaluate them in separate runs"
            )
    if fuse == "weighted":
        if weights is None or len(weights) != len(model_dirs):
            raise ValueError(f"--fuse weighted needs one fusion weight per model folder ({len(model_dirs)})")
        scores.fusion_weights(len(weights), weights, "weighted")
    elif weights is not None:
        raise ValueError("fusion weights were given with --fuse mean; use --fuse weighted")
    fusion_list = parse_fusions(fusions, names)
    stream_dirs = dict(stream_dirs or {})
    unknown = sorted(set(stream_dirs) - set(names))
    if unknown:
        raise ValueError(f"stream folders given for {', '.join(unknown)}, which no model folder evaluates")

    data_dir = data_dir or configs[0]["data_dir"]
    manifest = read_manifest(data_dir)
    data_classes = list(manifest["classes"])
    model_classes = configs[0]["classes"]
    for model_dir, config in zip(model_dirs, configs):
        if config["classes"] != model_classes:
            raise ValueError(
                f"{os.path.join(model_dir, CONFIG)}: its classes differ from those of "
                f"{os.path.join(model_dirs[0], CONFIG)}; fused models must share one class list"
            )
    mapping = None
    if label_map:
        mapping = read_label_map(label_map, model_classes, data_classes)
        if not mapping:
            raise ValueError(
                f"no class of {data_dir} ({len(data_classes)} classes) matches a class of the "
                f"model ({len(model_classes)} classes, {os.path.join(model_dirs[0], CONFIG)}) "
                "by name; give a JSON label map instead"
            )
        log(f"label map: {len(mapping)} of {len(data_classes)} test classes match a model class")
    elif model_classes != data_classes:
        raise ValueError(
            f"{os.path.join(model_dirs[0], CONFIG)}: the model's {len(model_classes)} classes differ "
            f"from the {len(data_classes)} classes of {data_dir}; pass label_map='name' "
            "(--label_map name) to test on another dataset"
        )

    # Imported only now, so bad arguments are reported without building any stream.
    from avd_tf.classify.stream_cache import ensure_stream
    from avd_tf.inputs.images import stream_dataset

    video_level = {}
    total_videos = {}
    for model_dir, config, name in zip(model_dirs, configs, names):
        source = os.path.join(model_dir, CLASSIFIER_MODEL)
        model = load_model(model_dir)
        stream_dir = stream_dirs.get(name) or ensure_stream(
            data_dir, name, avd_model_dir=config.get("avd_model_dir"), progress=progress,
            **_stream_options(config, data_dir),
        )
        log(f"{name}: predicting {split} images of {stream_dir} with {source}")
        dataset = stream_dataset(
            stream_dir, split, size=int(config["input_size"]), training=False,
            batch_size=batch_size, repeat=False, cache=False,
        )
        probs, ids, labels = predict(model, dataset, source=source)
        if probs.shape[1] != len(model_classes):
            raise ValueError(
                f"{source}: {probs.shape[1]} outputs but {len(model_classes)} classes in its {CONFIG}"
            )
        try:
            vids, vprobs, vlabels = scores.video_scores(probs, ids, labels)
            if mapping is not None:
                total_videos[name] = len(vids)
                keep, vprobs, vlabels, _ = scores.restrict_to_matches(vprobs, vlabels, mapping)
                vids = vids[keep]
        except ValueError as error:
            raise ValueError(f"{stream_dir} ({split}): {error}") from None
        if not len(vids):
            raise ValueError(f"{stream_dir} ({split}): no video of a matched class")
        video_level[name] = (vids, vprobs, vlabels)

    stream_weights = dict(zip(names, weights)) if fuse == "weighted" else None
    results, outputs = score_streams(
        video_level, fuse=fuse, weights=stream_weights, fusions=fusion_list, strict=strict
    )
    for model_dir, config, name in zip(model_dirs, configs, names):
        results["streams"][name].update(model_dir=os.path.abspath(model_dir), backbone=config["backbone"])
    matched = sorted(mapping or {})
    classes = data_classes if mapping is None else [data_classes[b] for b in matched]
    results.update(
        classes=classes,
        split=split,
        dataset=manifest.get("dataset") or os.path.basename(os.path.normpath(data_dir)),
        data_dir=os.path.abspath(data_dir),
        fuse=fuse,
        best=_best(results),
    )
    if mapping is not None:
        results["cross_dataset"] = {
            "label_map": label_map,
            "model_classes": len(model_classes),
            "data_classes": len(data_classes),
            "matched_classes": [
                {"test": data_classes[b], "model": model_classes[mapping[b]]} for b in matched
            ],
            "test_videos": total_videos,
        }
    table = report.markdown_table(results)
    log(table)
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        write_json_atomically(output, results, sort_keys=False)
    if markdown:
        write_text_atomically(markdown, table)
    if confusion_png:
        best = results["best"]
        probs, labels = outputs[best]
        matrix = scores.confusion_matrix(np.argmax(probs, axis=1), labels, len(classes))
        entry = results["streams"].get(best) or results["fusions"][best]
        report.plot_confusion(
            matrix, classes, confusion_png,
            title=f"{report.display_name(best)}: top-1 {100 * entry['top1']:.1f}% "
                  f"({entry['num_videos']} videos)",
        )
    return results
