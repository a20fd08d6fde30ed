"""tf.data pipelines over prepared shards: videos, clips, single frames, AVD pairs.

Modelled on TF Model Garden's `video_input.py`. One pass:

    shards --interleave--> records --parse (only the stream read)--> [cache]
    --[shuffle, repeat]--> choose clip frames --gather the ENCODED frames-->
    decode only those JPEGs --> [-1, 1] --> augment or centre crop --> batch

Gathering the encoded strings before decoding is what makes it fast: a
300-frame video costs 16 JPEG decodes for a 16-frame clip, not 300.

Training draws `clips_per_video` random clips (default one) per video per
pass, with random starts and the augmentation of `augment.py`; evaluation
takes evenly spaced clips and centre crops, deterministically. Short videos
are looped (see `sampling.py`).

Determinism: with `seed` set, the same arguments give the same batches in
every run (file order, shuffling, starts and augmentation all derive from it;
augmentation uses stateless random ops). Successive passes over one dataset
still differ, as epochs should. This needs `tf.data.Options().deterministic
= True`, the default, which these pipelines set whenever a seed is given or
`training=False`; training without a seed sets it to False, letting parallel
maps return elements out of order for throughput.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import tensorflow as tf

from avd_tf.inputs import augment, sampling
from avd_tf.inputs.shards import check_flow, list_shards
from avd_tf.records import schema
from avd_tf.streams import CLIP_CHANNELS

STREAMS = tuple(CLIP_CHANNELS)
AUTOTUNE = tf.data.AUTOTUNE
# A fixed cycle length (not AUTOTUNE, which follows the core count) keeps the
# record order, hence a seeded pipeline, identical on every machine.
MAX_CYCLE_LENGTH = 8


def sub_seed(seed: int | None, stream: int) -> int | None:
    """Independent seeds for the pipeline's random ops, all derived from one."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0] >> 1)


def shard_records(files: list[str], shuffle_seed: int | None, shuffle: bool) -> tf.data.Dataset:
    """(shard path, serialized record) pairs, shards read in parallel."""
    paths = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        paths = paths.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    return paths.interleave(
        lambda path: tf.data.TFRecordDataset(path).map(lambda record: (path, record)),
        cycle_length=min(len(files), MAX_CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE,
    )


def epochs(ds: tf.data.Dataset, *, training: bool, seed: int | None, shuffle_buffer: int,
           cache: bool, repeat: bool) -> tf.data.Dataset:
    """Parsed records -> [cache] -> [shuffle] -> [repeat] -> training: (element, stateless seed).

    The order every pipeline here (clips, stream images) follows, so that
    one `seed` gives the same elements in every run. One seed per element
    for its augmentation; the seeds go on across epochs (and are redrawn
    for each new iterator), so every epoch augments differently.
    """
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=sub_seed(seed, 1), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if not training:
        return ds
    seeds = tf.data.Dataset.random(seed=sub_seed(seed, 2), rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(ds, seeds.batch(2, drop_remainder=True))


def pipeline_options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = True
    options.deterministic = deterministic
    return options


def video_dataset(data_dir: str, split: str) -> tf.data.Dataset:
    """Every video of `split` as the dict of `schema.parse` (in shard order)."""
    files = list_shards(data_dir, split)
    records = shard_records(files, None, shuffle=False)
    return records.map(lambda _, record: schema.parse(record), num_parallel_calls=AUTOTUNE)


def stream_parser(stream: str, rgb: bool = False):
    """Parses only what `stream` needs, into 'planes': (length, P) encoded images.

    RGB has one 3-channel plane per frame, flow two 1-channel planes (x, y),
    so flow of a video with N frames has length N - 1. `rgb=True` also gives
    the RGB frames as 'rgb' (N, 1), from the same record (T's real frames).
    """
    context = {k: schema.CONTEXT_FEATURES[k] for k in (schema.VIDEO_ID, schema.LABEL_INDEX)}
    keys = (schema.IMAGE,) if stream == "rgb" else (schema.FLOW_X, schema.FLOW_Y)
    sequence = {k: schema.SEQUENCE_FEATURES[k] for k in {*keys, *((schema.IMAGE,) if rgb else ())}}

    def parse(path, record):
        ctx, seq = tf.io.parse_single_sequence_example(
            record, context_features=context, sequence_features=sequence
        )
        video = {
            "planes": tf.stack([seq[k] for k in keys], axis=1),
            "label": tf.cast(ctx[schema.LABEL_INDEX], tf.int32),
            "video_id": ctx[schema.VIDEO_ID],
            "shard": path,
        }
        if rgb:
            video["rgb"] = seq[schema.IMAGE][:, None]
        return video

    return parse


def _draw_real_frames(rgb, seed, num_clips):
    """`num_clips` random encoded RGB frames (num_clips, 1, 1) and their augmentation seeds.

    The seeds fold in from the video's own, so the clips' draws stay as they
    are without real frames.
    """
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, 1), num=num_clips + 1
    )
    indices = sampling.random_starts(tf.shape(rgb)[0], num_clips, 1, seeds[0])
    return tf.gather(rgb, indices[:, None]), seeds[1:]


def _select(video, seed, *, stream, num_frames, frame_stride, num_clips, training):
    """One video -> `num_clips` clips of encoded frames (nothing decoded yet).

    With 'rgb' in `video` (training only), each clip also gets one random RGB
    frame of the video, 'real_encoded', for T (see `avd_dataset`).
    """
    planes = video["planes"]
    length = tf.shape(planes)[0]
    what = "frames" if stream == "rgb" else "optical flow frames (prepare the data with flow)"
    check = tf.debugging.Assert(
        length > 0, [video["shard"], ": video", video["video_id"], f"has no {what}"]
    )
    with tf.control_dependencies([check]):
        length = tf.identity(length)
    span = sampling.clip_span(num_frames, frame_stride)
    if training:
        seeds = tf.random.experimental.stateless_split(seed, num=num_clips + 1)
        starts = sampling.random_starts(length, num_clips, span, seeds[0])
    else:
        starts = sampling.evenly_spaced_starts(length, num_clips, span)
    indices = sampling.clip_indices(starts, length, num_frames, frame_stride)
    clips = {
        "encoded": tf.gather(planes, indices),
        "label": tf.fill([num_clips], video["label"]),
        "video_id": tf.fill([num_clips], video["video_id"]),
        "clip_index": tf.range(num_clips, dtype=tf.int32),
    }
    if training:
        clips["seed"] = seeds[1:]
    if "rgb" in video:
        clips["real_encoded"], clips["real_seed"] = _draw_real_frames(
            video["rgb"], seed, num_clips)
    return clips


def decode_planes(encoded: tf.Tensor, stream: str) -> tf.Tensor:
    """(T, P) encoded images -> uint8 (T, H, W, C); flow channels are (x, y)."""
    channels = 3 if stream == "rgb" else 1
    images = tf.map_fn(
        lambda data: tf.io.decode_image(data, channels=channels, expand_animations=False),
        tf.reshape(encoded, [-1]),
        fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8),
    )
    shape = tf.shape(images)
    planes = tf.shape(encoded)[1]
    images = tf.reshape(images, [-1, planes, shape[1], shape[2], channels])
    images = tf.transpose(images, [0, 2, 3, 1, 4])
    return tf.reshape(images, [-1, shape[1], shape[2], planes * channels])


def _check_arguments(stream, num_frames, size, clips_per_video, frame_stride, shuffle_buffer,
                     scale_range, flip):
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    for name, value in (("num_frames", num_frames), ("size", size),
                        ("clips/frames per video", clips_per_video), ("frame_stride", frame_stride),
                        ("shuffle_buffer", shuffle_buffer)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    augment.check_scale_range(scale_range)
    augment.check_flip(flip)


def _clips(data_dir, split, *, stream, num_frames, size, training, clips_per_video,
           frame_stride, seed, shuffle_buffer, cache, repeat, scale_range,
           flip, real_frames=False, shard=None) -> tf.data.Dataset:
    """Unbatched clip elements {"clip", "label", "video_id", "clip_index"}.

    `shard` (index, count): read only the shard files index, index + count,
    ... of the split's sorted list (one worker's share of the files).

    `real_frames` (training): each element also holds "real_frame", a random
    RGB frame of its own video, augmented on its own (size, size, 3).
    """
    _check_arguments(stream, num_frames, size, clips_per_video, frame_stride, shuffle_buffer,
                     scale_range, flip)
    files = list_shards(data_dir, split)
    if shard is not None:
        index, count = shard
        files = files[index::count]
        if not files:
            raise ValueError(f"{data_dir}: split '{split}' has fewer shard files than the "
                             f"{count} readers sharing them")
    if stream == "flow":
        check_flow(data_dir, split)
    channels = CLIP_CHANNELS[stream]
    ds = shard_records(files, sub_seed(seed, 0), shuffle=training)
    ds = ds.map(stream_parser(stream, rgb=real_frames), num_parallel_calls=AUTOTUNE)
    ds = epochs(ds, training=training, seed=seed, shuffle_buffer=shuffle_buffer, cache=cache,
                repeat=repeat)

    def select(video, element_seed=None):
        return _select(video, element_seed, stream=stream, num_frames=num_frames,
                       frame_stride=frame_stride, num_clips=clips_per_video, training=training)

    def preprocess(element):
        clip = augment.to_signed_unit(decode_planes(element["encoded"], stream))
        if training:
            clip = augment.augment_clip(clip, size, element["seed"], flow=stream == "flow",
                                        scale_range=scale_range, flip=flip)
        else:
            clip = augment.center_crop_resize(clip, size)
        out = {
            "clip": tf.ensure_shape(clip, [num_frames, size, size, channels]),
            "label": element["label"],
            "video_id": element["video_id"],
            "clip_index": element["clip_index"],
        }
        if real_frames:
            frame = augment.to_signed_unit(decode_planes(element["real_encoded"], "rgb"))
            frame = augment.augment_clip(frame, size, element["real_seed"],
                                         scale_range=scale_range, flip=flip)[0]
            out["real_frame"] = tf.ensure_shape(frame, [size, size, 3])
        return out

    ds = ds.map(select, num_parallel_calls=AUTOTUNE).unbatch()
    return ds.map(preprocess, num_parallel_calls=AUTOTUNE)


def _finish(ds: tf.data.Dataset, batch_size: int, drop_remainder: bool,
            deterministic: bool) -> tf.data.Dataset:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(pipeline_options(deterministic))


def clip_dataset(
    data_dir: str,
    split: str,
    *,
    stream: str = "rgb",
    num_frames: int = 16,
    size: int = 112,
    training: bool = False,
    clips_per_video: int = 1,
    frame_stride: int = 1,
    batch_size: int = 8,
    seed: int | None = None,
    shuffle_buffer: int = 256,
    cache: bool = False,
    drop_remainder: bool | None = None,
    repeat: bool | None = None,
    scale_range: Sequence[float] = augment.DEFAULT_SCALE_RANGE,
    flip: str = "mirror",
) -> tf.data.Dataset:
    """Batches of clips {"clip", "label", "video_id", "clip_index"}.

    "clip": float32 (B, num_frames, size, size, C) in [-1, 1], C = 3 for
    "rgb", 2 (x, y; value v / 20 px) for "flow"; "label": int32 (B,);
    "video_id": string (B,); "clip_index": int32 (B,), the clip's number
    within its video (0 .. clips_per_video - 1).

    A clip is `num_frames` frames `frame_stride` apart. Videos shorter than
    the clip are LOOPED (frame index modulo the length). Training: per video
    and pass, `clips_per_video` random clips, videos shuffled (buffer
    `shuffle_buffer`), augmented (size jitter in `scale_range`, crop, and
    with `flip="mirror"` a random horizontal flip; "none" never flips).
    Evaluation: `clips_per_video` evenly spaced clips, resize + centre crop.
    `drop_remainder` and `repeat` default to `training`: a training dataset
    is infinite (give model.fit a steps_per_epoch; `num_videos` helps).
    `cache=True` keeps the parsed, still encoded videos in memory, which pays
    for small datasets; clips and augmentation still change every pass.
    """
    ds = _clips(data_dir, split, stream=stream, num_frames=num_frames, size=size,
                training=training, clips_per_video=clips_per_video, frame_stride=frame_stride,
                seed=seed, shuffle_buffer=shuffle_buffer, cache=cache,
                repeat=training if repeat is None else repeat, scale_range=scale_range,
                flip=flip)
    drop = training if drop_remainder is None else drop_remainder
    return _finish(ds, batch_size, drop, seed is not None or not training)


def _frames(data_dir, split, *, stream, size, training, frames_per_video, seed,
            shuffle_buffer, cache, repeat, scale_range, flip) -> tf.data.Dataset:
    """Unbatched single-frame elements {"image", "label", "video_id", "clip_index"}."""
    ds = _clips(data_dir, split, stream=stream, num_frames=1, size=size, training=training,
                clips_per_video=frames_per_video, frame_stride=1, seed=seed,
                shuffle_buffer=shuffle_buffer, cache=cache, repeat=repeat,
                scale_range=scale_range, flip=flip)

    def to_frame(element):
        frame = dict(element)
        frame["image"] = frame.pop("clip")[0]
        return frame

    return ds.map(to_frame, num_parallel_calls=AUTOTUNE)


def frame_dataset(
    data_dir: str,
    split: str,
    *,
    stream: str = "rgb",
    size: int = 112,
    training: bool = False,
    frames_per_video: int = 1,
    batch_size: int = 8,
    seed: int | None = None,
    shuffle_buffer: int = 256,
    cache: bool = False,
    drop_remainder: bool | None = None,
    repeat: bool | None = None,
    scale_range: Sequence[float] = augment.DEFAULT_SCALE_RANGE,
    flip: str = "mirror",
) -> tf.data.Dataset:
    """Batches of single frames {"image", "label", "video_id", "clip_index"}.

    "image": float32 (B, size, size, C) in [-1, 1] (C = 3 rgb, 2 flow): the
    paper's RGB / OF frame baselines (Table 1) and the real frames p_r of the
    AVD teacher (Eq. 2). Training: `frames_per_video` random frames per video
    and pass, augmented as clips are; evaluation: `frames_per_video` evenly
    spaced frames (one: the middle frame), centre crop; "clip_index" numbers
    them. Other arguments as in `clip_dataset`.
    """
    ds = _frames(data_dir, split, stream=stream, size=size, training=training,
                 frames_per_video=frames_per_video, seed=seed, shuffle_buffer=shuffle_buffer,
                 cache=cache, repeat=training if repeat is None else repeat,
                 scale_range=scale_range, flip=flip)
    drop = training if drop_remainder is None else drop_remainder
    return _finish(ds, batch_size, drop, seed is not None or not training)


def avd_dataset(
    data_dir: str,
    split: str = "train",
    *,
    stream: str = "rgb",
    num_frames: int = 16,
    size: int = 112,
    batch_size: int = 8,
    seed: int | None = None,
    training: bool = True,
    frame_stride: int = 1,
    shuffle_buffer: int = 256,
    cache: bool = False,
    scale_range: Sequence[float] = augment.DEFAULT_SCALE_RANGE,
    flip: str = "mirror",
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """(clips, real_frames) batches for training AVD (Eqs. 1-3); clips alone for evaluation.

    clips: float32 (B, num_frames, size, size, C) from `split` as in
    `clip_dataset`; real_frames: float32 (B, size, size, 3), one single RGB
    frame per clip (the paper's p_r, Eq. 2) of another training video: the
    one the stream parses next (see `_with_next_videos_frame`), so the
    records are read once. A real frame is any frame of its video, drawn and
    augmented on its own; the clips are those of `clip_dataset` with
    `sub_seed(seed, 10)`. AVD learns no labels, so a flip
    (`flip="mirror"`) needs no label swap; `flip="none"` flips neither clips
    nor frames.

    training=True: random clips and frames, augmented, drop_remainder and
    repeated forever (use model.fit(steps_per_epoch=...)). training=False:
    batches of clips only, one centre clip per video of `split`, finite, for
    model.evaluate (which needs no real frames). `shard` (index, count): read
    only the split's shard files index, index + count, ... (one worker's
    files under multi-worker training).
    """
    elements = _clips(data_dir, split, stream=stream, num_frames=num_frames, size=size,
                      training=training, clips_per_video=1, frame_stride=frame_stride,
                      seed=sub_seed(seed, 10), shuffle_buffer=shuffle_buffer, cache=cache,
                      repeat=training, scale_range=scale_range, flip=flip, real_frames=training,
                      shard=shard)
    if training:
        batches = _with_next_videos_frame(elements).map(
            lambda element: (element["clip"], element["real_frame"]))
    else:
        batches = elements.map(lambda element: element["clip"])
    return _finish(batches, batch_size, training, seed is not None or not training)


def _with_next_videos_frame(elements: tf.data.Dataset) -> tf.data.Dataset:
    """Each element with the "real_frame" of the element after it.

    T's real frame then comes from another video, never from the clip's own
    (unless the stream repeats one video back to back: a split of one video,
    or a video ending one pass and starting the next), at no extra read. The
    clips keep their order; the first frame of the stream goes unused.
    """
    def step(previous, element):
        return element, {**previous, "real_frame": element["real_frame"]}

    empty = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype),
                                  elements.element_spec)
    return elements.scan(empty, step).skip(1)


def measure_throughput(dataset: tf.data.Dataset, num_batches: int) -> float:
    """Clips (or frames) per second over `num_batches` batches after one warm-up batch.

    The warm-up batch is not timed: it pays for opening files and starting
    threads. Counts the leading dimension of the first tensor of each batch
    (for (clips, frames) pairs: the clips). For `avd-bench`, never for tests.
    """
    iterator = iter(dataset)
    next(iterator)
    count, start = 0, time.perf_counter()
    for _ in range(num_batches):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        count += int(tf.shape(tf.nest.flatten(batch)[0])[0])
    elapsed = time.perf_counter() - start
    if count == 0:
        raise ValueError("measure_throughput: the dataset has no batch after the warm-up batch")
    return count / elapsed
