"""Fine-tuning an ImageNet-style 2D CNN on one image stream (paper section 4.2).

The paper fine-tunes ImageNet-pretrained AlexNet, Inception-V1, ResNet-50 and
ResNet-101 "by using stochastic gradient descent with the momentum of 0.9 and
an annealed learning rate that is started with 3e-3 and multiplied by a
factor of 0.1 per epoch", with "size jittering, cropping, flipping, and
re-scaling" (`avd_tf.inputs.images.stream_dataset`). Here:

* the learning rate of epoch e (0-based) is lr * lr_decay**e, set by a
  `keras.callbacks.LearningRateScheduler` at the start of each epoch (it
  also logs "learning_rate" per epoch, and follows the epoch number a
  resumed run starts at);
* the train split trains; the test split is never read here, so no
  figure avd-evaluate reports on it was chosen by it. `select_on` picks
  the epoch kept as `model_dir/model.keras`: "last" (default) the last
  epoch, with no validation; "val" the epoch with the best image-level
  val_accuracy on a share (`val_fraction`) of the training videos held out
  whole groups at a time (`avd_tf.inputs.holdout`) and not trained on
  (`ModelCheckpoint(save_best_only=True)`, seeded with the best epoch
  before an interruption). Video-level scores are avd-evaluate's job;
* `model_dir/backup` (`keras.callbacks.BackupAndRestore`) holds the state
  after the last finished epoch, so a killed run resumes there;
  `model_dir/history.csv` logs every epoch,
  `model_dir/logs` is for TensorBoard (`avd_tf.run_dir.tensorboard`);
* `model_dir/config.json` records the run (stream, backbone, input_size,
  classes, data_dir, avd_model_dir, the held-out groups, ... : what
  avd-evaluate reads) and `model_dir/metrics.json` (`avd_tf.run_dir`'s
  layout) every epoch, the kept one with its rule, and the times.

A model_dir whose config.json differs from the requested run is refused; a
finished run with the same config is not trained again.
"""
from __future__ import annotations

import math
import os
import time

import keras
import tensorflow as tf

from avd_tf import streams, terminal
from avd_tf.classify.backbones import build_classifier, get_spec, resolve_weights
from avd_tf.classify.stream_cache import ensure_stream
from avd_tf.datasets import flip_labels
from avd_tf.distribution import (
    check_batch_size,
    check_strategy,
    data_sharded,
    make_strategy,
    output_dir,
)
from avd_tf.files import write_json_atomically
from avd_tf.inputs import holdout
from avd_tf.inputs.augment import check_flip
from avd_tf.inputs.images import num_images, stream_dataset, stream_info
from avd_tf.inputs.shards import list_shards, read_manifest
from avd_tf.layout import BACKUP, CLASSIFIER_MODEL, CONFIG, HISTORY, METRICS
from avd_tf.records import images
from avd_tf.run_dir import (
    EpochTimer,
    check_precision,
    fits_in_memory,
    model_checkpoint,
    open_run,
    precision,
    read_history,
    run_metrics,
    start_run,
    tensorboard,
    write_metrics,
)

SELECTION_RULES = ("last", "val")
# Seed of the held-out split when the run has none: a resumed run must hold
# out the same videos it held out before.
HOLDOUT_SEED = 0
NO_NETWORK = ("no network: use --weights none, a local file, or --backbone "
              "efficientnet_lite0 which ships its weights")


def _build(backbone, num_classes, weights, channels, size, dropout) -> keras.Model:
    try:
        return build_classifier(backbone, num_classes, weights=weights, input_channels=channels,
                                input_size=size, dropout=dropout)
    except Exception as error:  # keras.utils.get_file raises a bare Exception
        if weights == "imagenet" and (isinstance(error, OSError)
                                      or "URL fetch failure" in str(error)):
            raise RuntimeError(f"{backbone}: cannot download the ImageNet weights "
                               f"({error}); {NO_NETWORK}") from error
        raise


def _selected(history: list[dict], select_on: str) -> dict:
    """The row of the epoch in model.keras: the last, or for "val" the best.

    The best is the first epoch of the highest val_accuracy, as
    ModelCheckpoint keeps it (it saves only on a strict improvement).
    """
    if select_on == "last":
        return history[-1]
    return max(history, key=lambda row: row.get("val_accuracy", -math.inf))


def _train_videos(stream_dir: str) -> dict[str, tuple[int, int]]:
    """{video id: (label, images)} of the stream's train split, read without its images."""
    features = {key: images.FEATURES[key] for key in (images.LABEL, images.VIDEO_ID)}
    records = tf.data.TFRecordDataset(list_shards(stream_dir, "train")).map(
        lambda record: tf.io.parse_single_example(record, features),
        num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
    videos: dict[str, tuple[int, int]] = {}
    for batch in records.as_numpy_iterator():
        for video_id, label in zip(batch[images.VIDEO_ID], batch[images.LABEL]):
            video_id = video_id.decode("utf-8")
            videos[video_id] = (int(label), videos.get(video_id, (0, 0))[1] + 1)
    return videos


def _hold_out(stream_dir: str, fraction: float, seed: int | None,
              classes: list[str]) -> tuple[holdout.Holdout, dict]:
    """The held-out split of the stream's training videos and its record for config.json."""
    videos = _train_videos(stream_dir)
    seed = HOLDOUT_SEED if seed is None else int(seed)
    split = holdout.split_videos({v: label for v, (label, _) in videos.items()}, fraction, seed)
    return split, {
        "val_fraction": float(fraction),
        "seed": seed,
        "groups": split.groups,
        "val_groups": list(split.val_groups),
        "val_videos": len(split.val_ids),
        "val_images": sum(videos[v][1] for v in split.val_ids),
        "train_videos": len(split.train_ids),
        "train_images": sum(videos[v][1] for v in split.train_ids),
        "unvalidated_classes": [classes[label] for label in split.unvalidated_labels],
    }


def finetune(
    data_dir: str,
    stream: str,
    model_dir: str,
    *,
    backbone: str = "resnet50",
    weights="imagenet",
    epochs: int = 3,
    batch_size: int = 32,
    input_size: int | None = None,
    lr: float = 3e-3,
    lr_decay: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    dropout: float = 0.5,
    steps_per_epoch: int | None = None,
    seed: int | None = None,
    select_on: str = "last",
    val_fraction: float = 0.2,
    mixed_precision: str = "none",
    jit_compile: bool = False,
    distribution_strategy: str = "default",
    avd_model_dir: str | None = None,
    cache_dir: str | None = None,
    frames_per_video: int = 8,
    window: int = 10,
    stride: int = 6,
    clips_per_video: int = 4,
    flip: str = "mirror",
    flip_label_map: str | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Fine-tunes `backbone` on `stream` of prepared `data_dir`; returns the metrics.

    The stream is computed and cached on first use (`stream_cache.ensure_stream`;
    AVD streams need `avd_model_dir`). `weights`: "imagenet" (downloads
    through keras.applications except for efficientnet_lite0, which ships
    them; an error for alexnet), None/"none", or a weights file (see
    `backbones.build_backbone`). `input_size` defaults to the backbone's
    ImageNet size; `steps_per_epoch` to one pass over the images trained
    on. `select_on`: "last" keeps the last epoch; "val" holds out
    `val_fraction` of the training videos' groups (seeded by `seed`, or
    HOLDOUT_SEED without one) and keeps the epoch of the best val_accuracy
    on them. Returns (and writes to metrics.json) `avd_tf.run_dir.run_metrics`'s
    layout: "final" is the kept epoch's figures and its rule, "run" holds
    stream, backbone, image counts, replicas and the "validation" record; see the
    module docstring for the files written.

    `flip`: "mirror" (a training image is flipped with probability 0.5 and
    its label becomes the mirror class of the dataset's flip_label_map:
    `flip_label_map`, a JSON file, when given, else the manifest's) or
    "none" (never flipped; for classes that are directions without a map).

    `distribution_strategy`: one of `avd_tf.distribution.STRATEGIES`, as
    avd-train's; `batch_size` is the global batch, split evenly over the
    replicas. Under "multi_worker_mirrored" every worker reads the whole
    image stream (computing it if it is not cached: cache it first to
    compute it once) and keeps its share of each batch, and only the chief
    writes model_dir.
    """
    started = time.time()
    streams.check_avd_model(stream, avd_model_dir)
    spec = get_spec(backbone)
    size = int(input_size or spec.input_size)
    if size < spec.min_input_size:
        raise ValueError(f"{backbone} needs input_size >= {spec.min_input_size}, got {size}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    check_precision(mixed_precision)
    check_strategy(distribution_strategy)
    if select_on not in SELECTION_RULES:
        raise ValueError(f"select_on must be one of {', '.join(SELECTION_RULES)}, "
                         f"got {select_on!r}")
    if select_on == "val" and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    weights = resolve_weights(weights)
    check_flip(flip)
    read_manifest(data_dir)  # one line for a folder that is not prepared data
    # Before any TensorFlow op: multi_worker_mirrored configures the
    # collective ops, which only a program that has run none yet can.
    strategy = make_strategy(distribution_strategy)
    check_batch_size(batch_size, strategy, distribution_strategy)
    mirror_map = flip_labels.dataset_flip_label_map(data_dir, flip_label_map)

    stream_dir = ensure_stream(
        data_dir, stream, avd_model_dir=avd_model_dir, cache_dir=cache_dir,
        frames_per_video=frames_per_video, window=window, stride=stride,
        clips_per_video=clips_per_video, progress=progress)
    info = stream_info(stream_dir)
    split, validation = None, None
    if select_on == "val":
        split, validation = _hold_out(stream_dir, val_fraction, seed, list(info["classes"]))
        train_images = validation["train_images"]
    else:
        train_images = num_images(stream_dir, "train")
    if train_images < batch_size:
        raise ValueError(f"{stream_dir}: the train split has {train_images} images to train "
                         f"on, fewer than one batch of {batch_size}; lower batch_size")
    steps = int(steps_per_epoch or train_images // batch_size)
    channels = int(info["channels"])
    config = {
        "stream": stream,
        "backbone": backbone,
        "weights": weights if weights is not None else "none",
        "input_size": size,
        "input_channels": channels,
        "classes": list(info["classes"]),
        "data_dir": os.path.abspath(data_dir),
        "stream_dir": stream_dir,
        "stream_parameters": info["parameters"],
        "avd_model_dir": os.path.abspath(avd_model_dir) if avd_model_dir else None,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "steps_per_epoch": steps,
        "lr": float(lr),
        "lr_decay": float(lr_decay),
        "lr_schedule": "LearningRateScheduler: lr * lr_decay ** epoch (0-based), per epoch",
        "optimizer": "SGD",
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "dropout": float(dropout),
        "seed": seed,
        "select_on": select_on,
        "validation": validation,
        "mixed_precision": mixed_precision,
        "jit_compile": bool(jit_compile),
        "flip": flip,
        "flip_label_map": flip_labels.to_json(mirror_map),
    }
    if distribution_strategy != "default":
        # Only then: folders fine-tuned before the key existed still resume.
        config["distribution_strategy"] = distribution_strategy
    finished, done = open_run(model_dir, config, program="finetune", log=log)
    if finished is not None:
        return finished
    out_dir, throwaway = output_dir(strategy, model_dir, done is not None, "finetune")
    start_run(model_dir, done, epochs, program="finetune", log=log, out_dir=out_dir)

    if seed is not None:
        keras.utils.set_random_seed(seed)
    cache = fits_in_memory(stream_dir)
    train = stream_dataset(
        stream_dir, "train", size=size, training=True, batch_size=batch_size, seed=seed,
        cache=cache, flip=flip,
        mirror_classes=flip_labels.flip_permutation(mirror_map, len(config["classes"])))
    val = None
    if split is not None:
        # Filtered per image, so the cached train split serves both sides.
        train = holdout.only_videos(train.unbatch(), split.train_ids).batch(
            batch_size, drop_remainder=True)
        val = stream_dataset(stream_dir, "train", size=size, training=False,
                             batch_size=batch_size, cache=cache)
        val = holdout.only_videos(val.unbatch(), split.val_ids).batch(batch_size).apply(
            tf.data.experimental.assert_cardinality(-(-validation["val_images"] // batch_size)))
        val = val.map(lambda batch: (batch["image"], batch["label"])).prefetch(tf.data.AUTOTUNE)
    train = data_sharded(train.map(lambda batch: (batch["image"], batch["label"])))
    val = None if val is None else data_sharded(val)

    with precision(mixed_precision), strategy.scope():
        model = _build(backbone, len(config["classes"]), weights, channels, size, dropout)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=momentum,
                                           weight_decay=weight_decay or None),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )
    # Written once the model is built, so a run that cannot build it (no
    # network for the weights) leaves no config to refuse a corrected run with.
    write_json_atomically(os.path.join(out_dir, CONFIG), config)
    history = read_history(model_dir)
    if select_on == "val":
        best = max((row.get("val_accuracy", -math.inf) for row in history), default=None)
        checkpoint = model_checkpoint(
            os.path.join(out_dir, CLASSIFIER_MODEL), monitor="val_accuracy", mode="max",
            save_best_only=True, initial_value_threshold=best)
    else:
        checkpoint = model_checkpoint(os.path.join(out_dir, CLASSIFIER_MODEL))
    callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch: lr * lr_decay ** epoch),
        EpochTimer(steps * batch_size, "images"),
        tensorboard(out_dir),
        keras.callbacks.CSVLogger(os.path.join(out_dir, HISTORY), append=True),
        *checkpoint,
        # Last, so an epoch is marked done only after it is logged and checkpointed.
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, BACKUP)),
    ]
    model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps,
              callbacks=callbacks, shuffle=False, verbose=terminal.keras_verbose(progress))

    history = read_history(out_dir)
    if not history:
        raise RuntimeError(f"{os.path.join(out_dir, HISTORY)}: no epoch was logged")
    run = {"stream": stream, "backbone": backbone, "train_images": train_images,
           "test_images": num_images(stream_dir, "test"), "validation": validation,
           "replicas": strategy.num_replicas_in_sync}
    metrics = run_metrics("finetune", run, history, started=started,
                          final=_selected(history, select_on), rule=select_on)
    write_metrics(out_dir, metrics)
    if throwaway is not None:
        throwaway.cleanup()
    return metrics


__all__ = ["CONFIG", "HOLDOUT_SEED", "METRICS", "NO_NETWORK", "SELECTION_RULES",
           "finetune"]
