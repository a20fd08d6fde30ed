"""Fine-tuning an ImageNet-style 2D CNN on one image stream (paper section 4.2).

The paper fine-tunes ImageNet-pretrained AlexNet, Inception-V1, ResNet-50 and
ResNet-101 "by using stochastic gradient descent with the momentum of 0.9 and
an annealed learning rate that is started with 3e-3 and multiplied by a
factor of 0.1 per epoch", with "size jittering, cropping, flipping, and
re-scaling" (`avd_tf.classify.streams.stream_dataset`). Here:

* the learning rate of epoch e (0-based) is lr * lr_decay**e, set by a
  `keras.callbacks.LearningRateScheduler` at the start of each epoch (it
  also logs "learning_rate" per epoch, and follows the epoch number a
  resumed run starts at);
* the train split trains, the test split validates (image-level
  val_accuracy after each epoch); video-level scores are avd-evaluate's job;
* `model_dir/backup` (`keras.callbacks.BackupAndRestore`) holds the state
  after the last finished epoch, so a killed run resumes there;
  `model_dir/model.keras` is the best epoch by val_accuracy
  (`ModelCheckpoint(save_best_only=True)`, seeded with the best epoch
  before an interruption); `model_dir/history.csv` logs every epoch,
  `model_dir/logs` is for TensorBoard (when the tensorboard package is
  installed: Keras' callback needs it);
* `model_dir/config.json` records the run (stream, backbone, input_size,
  classes, data_dir, avd_model_dir, ... : what avd-evaluate reads) and
  `model_dir/metrics.json` the last and best epochs and the times.

A model_dir whose config.json differs from the requested run is refused; a
finished run with the same config is not trained again.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time

import keras

from avd_tf.classify import streams
from avd_tf.classify.backbones import build_classifier, get_spec
from avd_tf.records.shards import write_json_atomically
from avd_tf.run_dir import BACKUP, CONFIG, HISTORY, METRICS, open_run, read_history, start_run

MODEL = "model.keras"
LOGS = "logs"
# Below this many bytes of stream shards the decoded images are kept in
# memory (our choice: the demo and HMDB51-sized streams fit, UCF101 frames at
# full size would not).
CACHE_LIMIT_BYTES = 1 << 30
NO_NETWORK = ("no network: use --weights none, a local file, or --backbone "
              "efficientnet_lite0 which ships its weights")


class _EpochTimer(keras.callbacks.Callback):
    """Adds "epoch_seconds" (training + validation) to each epoch's logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.time() - self._start


def _resolve_weights(weights) -> str | None:
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = os.path.abspath(os.fspath(weights))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file not found")
    return path


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


def _summary(history: list[dict]) -> dict:
    best = max(history, key=lambda row: row.get("val_accuracy", -math.inf))
    return {"last": history[-1], "best": best}


def _tensorboard(log_dir: str, log) -> list[keras.callbacks.Callback]:
    """The TensorBoard callback, or none when the tensorboard package is missing.

    Keras' callback writes through tf.summary, which TensorFlow implements
    only when tensorboard is installed; training must not fail without it.
    """
    if importlib.util.find_spec("tensorboard") is None:
        log(f"finetune: the tensorboard package is not installed, so no logs go to {log_dir} "
            "(pip install tensorboard)")
        return []
    return [keras.callbacks.TensorBoard(log_dir)]


def _stream_bytes(stream_dir: str) -> int:
    return sum(os.path.getsize(os.path.join(stream_dir, name))
               for name in os.listdir(stream_dir) if name.endswith(".tfrecord"))


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
    mixed_precision: bool = False,
    jit_compile: bool = False,
    avd_model_dir: str | None = None,
    cache_dir: str | None = None,
    frames_per_video: int = 8,
    window: int = 10,
    stride: int = 6,
    clips_per_video: int = 4,
    progress: bool = True,
    log=print,
) -> dict:
    """Fine-tunes `backbone` on `stream` of prepared `data_dir`; returns the metrics.

    The stream is computed and cached on first use (`streams.ensure_stream`;
    AVD streams need `avd_model_dir`). `weights`: "imagenet" (downloads
    through keras.applications except for efficientnet_lite0, which ships
    them; an error for alexnet), None/"none", or a weights file (see
    `backbones.build_backbone`). `input_size` defaults to the backbone's
    ImageNet size; `steps_per_epoch` to one pass over the train split's
    images. Returns (and writes to metrics.json) {"last": ..., "best": ...,
    "history": [...], "wall_time_s", "train_time_s", ...}; see the module
    docstring for the files written.
    """
    started = time.time()
    streams.stream_channels(stream)  # validates the name
    if stream in streams.AVD_STREAMS and not avd_model_dir:
        raise ValueError(f"stream {stream!r} needs avd_model_dir (--avd_model_dir): the folder "
                         "of an AVD model trained by avd-train")
    spec = get_spec(backbone)
    size = int(input_size or spec.input_size)
    if size < spec.min_input_size:
        raise ValueError(f"{backbone} needs input_size >= {spec.min_input_size}, got {size}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    weights = _resolve_weights(weights)

    stream_dir = streams.ensure_stream(
        data_dir, stream, avd_model_dir=avd_model_dir, cache_dir=cache_dir,
        frames_per_video=frames_per_video, window=window, stride=stride,
        clips_per_video=clips_per_video, progress=progress)
    info = streams.stream_info(stream_dir)
    train_images = streams.num_images(stream_dir, "train")
    if train_images < batch_size:
        raise ValueError(f"{stream_dir}: the train split has {train_images} images, fewer "
                         f"than one batch of {batch_size}; lower batch_size")
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
        "mixed_precision": bool(mixed_precision),
        "jit_compile": bool(jit_compile),
    }
    finished, done = open_run(model_dir, config, program="finetune", log=log)
    if finished is not None:
        return finished
    start_run(model_dir, done, epochs, program="finetune", log=log)

    if seed is not None:
        keras.utils.set_random_seed(seed)
    cache = _stream_bytes(stream_dir) <= CACHE_LIMIT_BYTES
    train = streams.stream_dataset(stream_dir, "train", size=size, training=True,
                                   batch_size=batch_size, seed=seed, cache=cache)
    test = streams.stream_dataset(stream_dir, "test", size=size, training=False,
                                  batch_size=batch_size, cache=cache)
    train = train.map(lambda batch: (batch["image"], batch["label"]))
    test = test.map(lambda batch: (batch["image"], batch["label"]))

    policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _build(backbone, len(config["classes"]), weights, channels, size, dropout)
    finally:
        keras.config.set_dtype_policy(policy)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=momentum,
                                       weight_decay=weight_decay or None),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    # Written once the model is built, so a run that cannot build it (no
    # network for the weights) leaves no config to refuse a corrected run with.
    write_json_atomically(os.path.join(model_dir, CONFIG), config)
    history = read_history(model_dir)
    best = max((row.get("val_accuracy", -math.inf) for row in history), default=None)
    callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch: lr * lr_decay ** epoch),
        _EpochTimer(),
        *_tensorboard(os.path.join(model_dir, LOGS), log),
        keras.callbacks.CSVLogger(os.path.join(model_dir, HISTORY), append=True),
        keras.callbacks.ModelCheckpoint(os.path.join(model_dir, MODEL), monitor="val_accuracy",
                                        mode="max", save_best_only=True,
                                        initial_value_threshold=best),
        # Last, so an epoch is marked done only after it is logged and checkpointed.
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, BACKUP)),
    ]
    model.fit(train, validation_data=test, epochs=epochs, steps_per_epoch=steps,
              callbacks=callbacks, shuffle=False, verbose=1 if progress else 2)

    history = read_history(model_dir)
    if not history:
        raise RuntimeError(f"{os.path.join(model_dir, HISTORY)}: no epoch was logged")
    metrics = {
        **_summary(history),
        "history": history,
        "stream": stream,
        "backbone": backbone,
        "epochs": len(history),
        "train_images": train_images,
        "test_images": streams.num_images(stream_dir, "test"),
        "train_time_s": round(sum(row.get("epoch_seconds", 0.0) for row in history), 3),
        "wall_time_s": round(time.time() - started, 3),
    }
    write_json_atomically(os.path.join(model_dir, METRICS), metrics)
    return metrics


__all__ = ["CONFIG", "METRICS", "MODEL", "NO_NETWORK", "finetune"]
