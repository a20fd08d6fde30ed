"""Training AVD (paper section 3.4, Eq. 1-3) on prepared data: `train_avd`, used by avd-train.

One call builds the tf.data inputs (`avd_tf.inputs.avd_dataset`: training
clips with real RGB frames for T from the same read of the records, and
one centre clip per test video for validation), the distribution strategy,
the model (`build_avd` / `compile_avd` from a preset with overrides) and
the callbacks, runs `model.fit` and writes, in `model_dir`:

* `checkpoints/epoch-{epoch:03d}.weights.h5`: the weights (E, D, T and both
  optimizers) after every epoch;
* `backup/`: `keras.callbacks.BackupAndRestore` state after the last
  finished epoch, so a killed run started again with the same arguments
  resumes there (removed when training ends);
* `history.csv`: one row per epoch (training metrics, `grad_ratio`,
  `val_rec_loss`, `val_psnr`, the motion diagnostic `val_still_psnr`,
  `val_motion_gain_db`, `val_motion_r2` (`avd_tf.models.diagnostics`), for
  RGB `val_scene_psnr`, `clips_per_second`, `train_seconds`, `epoch_seconds`);
* `logs/train`, `logs/validation`: TensorBoard event files with each
  epoch's scalars, and in `logs/train` the image summary "distilled": for a
  fixed batch of test clips, each clip's middle frame (flow colour coded)
  next to E's image (`DistilledImageSummary`);
* at the end `avd.keras` (the whole model), `encoder.keras` (E alone, what
  `avd_tf.models.distill` loads), and `metrics.json` (`avd_tf.run_dir`'s
  layout: last epoch's figures, history, throughput), written last: its
  presence marks a finished run.
  `config.json` (preset, the full AVDConfig, stream, data_dir, classes and
  the training arguments) is written once the model is built.

A model_dir whose config.json differs from the requested run is refused; a
finished run with the same config is returned without training again.
Under "multi_worker_mirrored" only the chief (worker 0) writes model_dir,
and the workers share the train split's shard files (`shard_policy`).

Non-finite losses stop training at once with `TrainingDivergedError`,
naming the epoch and step (`StopOnNonFiniteLoss`); the backup of the last
good epoch stays in place.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from avd_tf import terminal, visualize
from avd_tf.distribution import (
    check_batch_size,
    check_strategy,
    data_sharded,
    make_strategy,
    num_workers,
    output_dir,
)
from avd_tf.files import save_keras_atomically, write_json_atomically
from avd_tf.inputs import avd_dataset, class_names, clip_dataset, list_shards, num_videos
from avd_tf.inputs.clips import sub_seed
from avd_tf.layout import (
    AVD_MODEL,
    BACKUP,
    CHECKPOINT_PATTERN,
    CHECKPOINTS,
    CONFIG,
    ENCODER,
    HISTORY,
    LOGS,
    METRICS,
)
from avd_tf.models.presets import (
    STREAM_CHANNELS,
    AVDConfig,
    build_avd,
    compile_avd,
    get_preset,
    stream_overrides,
)
from avd_tf.run_dir import (
    EpochTimer,
    check_precision,
    fits_in_memory,
    open_run,
    precision,
    read_history,
    run_metrics,
    start_run,
    tensorboard,
    write_metrics,
)

LOSS_KEYS = ("rec_loss", "gen_loss", "ed_loss", "teacher_loss")
SUMMARY_GAP = 2


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite during training."""


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN for AVD, whose logs have several losses and no "loss".

    Checks rec_loss, gen_loss, ed_loss and teacher_loss after every step and
    raises `TrainingDivergedError` naming the epoch, the step and `hint`.
    Raising (Keras' `raise_error=True`) skips the end-of-epoch callbacks, so
    neither a checkpoint nor the backup takes the broken weights.
    """

    def __init__(self, hint: str):
        super().__init__(raise_error=True)
        self.hint = hint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        bad = {
            key: float(value)
            for key, value in (logs or {}).items()
            if key in LOSS_KEYS and not math.isfinite(float(value))
        }
        if bad:
            values = ", ".join(f"{key}={value}" for key, value in sorted(bad.items()))
            raise TrainingDivergedError(
                f"training diverged at epoch {self._epoch + 1}, step {batch + 1}: {values}. "
                f"{self.hint}"
            )


def middle_frame_pictures(clips: np.ndarray, stream: str) -> np.ndarray:
    """uint8 RGB pictures of the middle frames of float clips (B, T, S, S, C) in [-1, 1]."""
    middle = clips[:, clips.shape[1] // 2]
    if stream == "rgb":
        return visualize.signed_to_uint8(middle)
    return visualize.flow_to_rgb(middle, max_magnitude=float(np.abs(middle).max()) or 1.0)


class DistilledImageSummary(keras.callbacks.Callback):
    """TensorBoard image summary "distilled" in `log_dir/train` after each epoch.

    Per clip of a fixed batch of test clips: its middle frame (flow colour
    coded) and E's image side by side. The epoch's scalars are Keras'
    TensorBoard callback's (`avd_tf.run_dir.tensorboard`).
    """

    def __init__(self, log_dir: str, clips: np.ndarray, stream: str):
        super().__init__()
        self.log_dir = log_dir
        self.clips = clips
        self.frames = middle_frame_pictures(clips, stream)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        # A direct call, not predict_on_batch: under a strategy that would split
        # (and pad) the small batch over the replicas.
        distilled = visualize.signed_to_uint8(np.asarray(self.model(self.clips, training=False)))
        gap = np.full(self.frames.shape[:2] + (SUMMARY_GAP, 3), 255, np.uint8)
        pairs = np.concatenate([self.frames, gap, distilled], axis=2)
        with self._writer.as_default():
            # Step = 0-based epoch, as Keras' TensorBoard callback logs the scalars.
            tf.summary.image("distilled", pairs, step=epoch, max_outputs=len(pairs))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _summary_clips(data_dir, stream, config, count) -> np.ndarray:
    """The first `count` centre clips of the test split (fixed, for the image summaries)."""
    dataset = clip_dataset(data_dir, "test", stream=stream, num_frames=config.num_frames,
                           size=config.image_size, training=False, clips_per_video=1,
                           batch_size=count)
    return next(iter(dataset))["clip"].numpy()


def validation_dataset(data_dir: str, stream: str, config: AVDConfig,
                       seed: int | None = None) -> tf.data.Dataset:
    """What `train_avd` validates on: one centre clip per test video, in batches of clips.

    Batches of `config.batch_size`, finite and of known length, for
    `model.evaluate` of an AVD model built from `config`.
    """
    # Validation reads its clips once per epoch: caching would only hold them
    # in memory between epochs. A known length lets Keras end the pass
    # without a "ran out of data" warning.
    test = avd_dataset(data_dir, "test", training=False, stream=stream,
                       num_frames=config.num_frames, size=config.image_size,
                       batch_size=config.batch_size, seed=seed, cache=False)
    return test.apply(tf.data.experimental.assert_cardinality(
        math.ceil(num_videos(data_dir, "test") / config.batch_size)))


def _restarting(make) -> tf.data.Dataset:
    """The dataset `make()` returns, built afresh for each iterator.

    Each new iterator of a seeded pipeline continues its random streams
    (`reshuffle_each_iteration`), and under a distribution strategy Keras 3
    draws one batch from a throwaway iterator before `fit` trains (to build
    the model), so a distributed run would start on the second pass of the
    stream one device starts on. Built inside `flat_map`, every iterator gets
    its own random state and the same batches.
    """
    options = make().options()
    return tf.data.Dataset.range(1).flat_map(lambda _: make()).with_options(options)


def shard_policy(files: int, workers: int) -> tf.data.experimental.AutoShardPolicy:
    """How `workers` share a split of `files` shard files: FILE when each gets one, else DATA.

    FILE: each worker reads only its files, 1/workers of the data (Kinetics
    has thousands of shards). DATA: each reads everything and keeps its
    share of every global batch; the only way when workers outnumber files.
    """
    policies = tf.data.experimental.AutoShardPolicy
    return policies.FILE if files >= workers else policies.DATA


def worker_dataset(data_dir: str, context: tf.distribute.InputContext, batch_size: int,
                   seed: int | None = None, **inputs) -> tf.data.Dataset:
    """The training batches of worker `context.input_pipeline_id` under FILE sharding.

    The worker reads only its shard files (`avd_dataset(shard=...)`), in
    batches of one replica's share of the global `batch_size`, with a seed
    of its own (one seed would give every worker the same clip starts and
    augmentation draws, element for element). `inputs`: `avd_dataset`'s
    other arguments.

    The files are chosen here because tf.data's own FILE auto-sharding
    cannot shard this pipeline: it would shard `_restarting`'s one-element
    range (one worker reading everything, the other nothing), and it stops
    at the stream of per-element seeds, a source without files.
    """
    index, count = context.input_pipeline_id, context.num_input_pipelines
    return _restarting(lambda: avd_dataset(
        data_dir, "train", training=True, shard=(index, count), seed=sub_seed(seed, index),
        batch_size=context.get_per_replica_batch_size(batch_size), **inputs))


def training_input(strategy: tf.distribute.Strategy, data_dir: str, batch_size: int,
                   seed: int | None = None, **inputs):
    """`train_avd`'s training batches under `strategy` (global `batch_size`).

    One worker reads the whole train split. Several workers share it by
    `shard_policy`: FILE, each worker's `worker_dataset` (a dataset
    distributed by the strategy); DATA, every worker reads the same seeded
    stream and tf.data keeps its share of each global batch, so the workers
    train on the batches one process would.
    """
    workers = num_workers(strategy)
    policy = shard_policy(len(list_shards(data_dir, "train")), workers)
    if workers > 1 and policy == tf.data.experimental.AutoShardPolicy.FILE:
        return strategy.distribute_datasets_from_function(
            lambda context: worker_dataset(data_dir, context, batch_size, seed, **inputs))
    train = _restarting(lambda: avd_dataset(data_dir, "train", training=True,
                                            batch_size=batch_size, seed=seed, **inputs))
    return data_sharded(train)


def train_avd(
    data_dir: str,
    model_dir: str,
    *,
    stream: str = "rgb",
    preset: str | AVDConfig = "small",
    epochs: int = 5,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    distribution_strategy: str = "default",
    mixed_precision: str = "none",
    jit_compile: bool = False,
    seed: int | None = None,
    flip: str = "mirror",
    summary_clips: int = 8,
    progress: bool = True,
    log=print,
    **overrides,
) -> dict:
    """Trains AVD on prepared `data_dir` and returns the metrics (see the module docstring).

    `preset`: "paper", "small" or an AVDConfig; `overrides`: AVDConfig
    fields (num_frames, image_size, encoder_filters, decoder_filters, lam,
    ed_lr, t_lr, batch_size, ...; None means the preset's value), see
    `get_preset`. `steps_per_epoch` defaults to the number of training
    videos // batch_size (at least 1); validation runs over the whole test
    split unless `validation_steps` is given. `distribution_strategy`: one
    of `avd_tf.distribution.STRATEGIES` (`make_strategy`); `mixed_precision`: "none",
    "mixed_float16" or "mixed_bfloat16"; `jit_compile`: XLA for the train
    step. `summary_clips` test clips feed the TensorBoard image summary.
    `flip`: "mirror" flips half of the training clips and frames (AVD
    learns no labels, so nothing else changes), "none" never flips.

    Returns (and writes to metrics.json, `avd_tf.run_dir.run_metrics`'s
    layout) in "final" the last epoch's rec_loss, gen_loss, ed_loss,
    teacher_loss, teacher_acc_real, teacher_acc_fake, grad_ratio,
    val_rec_loss, val_psnr, val_still_psnr, val_motion_gain_db,
    val_motion_r2, val_scene_psnr (RGB), in "history" every epoch's, in
    "timing" the training clips_per_second (median over epochs) and times;
    "run" holds stream, preset and replicas. Raises TrainingDivergedError
    when a loss becomes NaN or infinite.
    """
    started = time.time()
    if stream not in STREAM_CHANNELS:
        raise ValueError(f"unknown stream {stream!r}; expected one of {sorted(STREAM_CHANNELS)}")
    check_precision(mixed_precision)
    check_strategy(distribution_strategy)
    for name, value in (("epochs", epochs), ("summary_clips", summary_clips),
                        ("steps_per_epoch", steps_per_epoch or 1),
                        ("validation_steps", validation_steps or 1)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    config = get_preset(preset, **stream_overrides(stream, overrides))
    classes = class_names(data_dir)
    train_videos, test_videos = num_videos(data_dir, "train"), num_videos(data_dir, "test")
    if not train_videos or not test_videos:
        raise ValueError(f"{data_dir}: AVD needs train and test videos (validation), found "
                         f"{train_videos} and {test_videos}")
    steps = int(steps_per_epoch or max(1, train_videos // config.batch_size))
    strategy = make_strategy(distribution_strategy)
    check_batch_size(config.batch_size, strategy, distribution_strategy)
    replicas = strategy.num_replicas_in_sync
    run_config = json.loads(json.dumps({
        "preset": preset if isinstance(preset, str) else "custom",
        "config": dataclasses.asdict(config),
        "stream": stream,
        "data_dir": os.path.abspath(data_dir),
        "classes": classes,
        "train_videos": train_videos,
        "test_videos": test_videos,
        "epochs": int(epochs),
        "steps_per_epoch": steps,
        "validation_steps": validation_steps,
        "distribution_strategy": distribution_strategy,
        "mixed_precision": mixed_precision,
        "jit_compile": bool(jit_compile),
        "seed": seed,
        "flip": flip,
    }))
    finished, done = open_run(model_dir, run_config, program="train", log=log)
    if finished is not None:
        return finished
    out_dir, throwaway = output_dir(strategy, model_dir, done is not None, "train")
    start_run(model_dir, done, epochs, program="train", log=log, out_dir=out_dir)

    if seed is not None:
        keras.utils.set_random_seed(seed)
    cache = fits_in_memory(data_dir)
    train = training_input(strategy, data_dir, config.batch_size, seed, stream=stream,
                           num_frames=config.num_frames, size=config.image_size, cache=cache,
                           flip=flip)
    test = data_sharded(validation_dataset(data_dir, stream, config, seed))
    summary = _summary_clips(data_dir, stream, config, min(summary_clips, test_videos))

    with precision(mixed_precision), strategy.scope():
        model = compile_avd(build_avd(config, stream), config, jit_compile=jit_compile,
                            total_steps=epochs * steps)
    write_json_atomically(os.path.join(out_dir, CONFIG), run_config)

    hint = (f"Try a lower learning rate (ed_lr={config.ed_lr:g}, t_lr={config.t_lr:g}; flags "
            f"--ed_lr, --t_lr) or another lam (lam={config.lam_for(stream):g}, --lam) in a new model_dir.")
    callbacks = [
        EpochTimer(steps * config.batch_size, "clips"),
        StopOnNonFiniteLoss(hint),
        tensorboard(out_dir),
        DistilledImageSummary(os.path.join(out_dir, LOGS), summary, stream),
        keras.callbacks.CSVLogger(os.path.join(out_dir, HISTORY), append=True),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out_dir, CHECKPOINTS, CHECKPOINT_PATTERN), save_weights_only=True
        ),
        # Last, so an epoch counts as done only once it is logged and checkpointed.
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, BACKUP), double_checkpoint=True),
    ]
    workers = num_workers(strategy)
    sharing = (f" of {workers} workers, sharing the train shards by "
               f"{shard_policy(len(list_shards(data_dir, 'train')), workers).name}"
               if workers > 1 else "")
    log(f"train: AVD({stream}) preset {run_config['preset']}, {train_videos} train / "
        f"{test_videos} test videos, {epochs} epochs of {steps} steps at batch "
        f"{config.batch_size} on {replicas} replica(s){sharing}")
    model.fit(train, validation_data=test, epochs=epochs, steps_per_epoch=steps,
              validation_steps=validation_steps, callbacks=callbacks, shuffle=False,
              verbose=terminal.keras_verbose(progress))

    history = read_history(out_dir)
    if not history:
        raise RuntimeError(f"{os.path.join(out_dir, HISTORY)}: no epoch was logged")
    save_keras_atomically(model, os.path.join(out_dir, AVD_MODEL))
    save_keras_atomically(model.encoder, os.path.join(out_dir, ENCODER))
    metrics = run_metrics("train", {"stream": stream, "preset": run_config["preset"],
                                    "replicas": replicas}, history, started=started)
    write_metrics(out_dir, metrics)
    if throwaway is not None:
        throwaway.cleanup()
    return metrics


__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "DistilledImageSummary",
    "ENCODER",
    "HISTORY",
    "METRICS",
    "StopOnNonFiniteLoss",
    "TrainingDivergedError",
    "shard_policy",
    "train_avd",
    "training_input",
    "validation_dataset",
    "worker_dataset",
]
