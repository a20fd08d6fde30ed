"""Image streams for 2D CNNs, computed once from a prepared dataset and cached.

The inputs of the paper's Table 1 and of the dynamic-image peer (section
4.3, 4.6), each a set of uint8 images per video stored as image-record shards
(`avd_tf.records.images`) for the "train" and "test" splits:

* "frame": `frames_per_video` evenly spaced RGB frames per video (the
  paper's RGB baseline: "the information is extracted per frame and the
  average performance is reported"; video scores average the frames').
  Default 8 (our choice: enough views of a video for a stable average, small
  enough to cache).
* "flow": the same for TV-L1 flow frames, 2 channels (x, y) quantised as
  stored by avd-prepare (the paper's OF baseline).
* "mean": the mean frame of each window of `window` frames, `stride` apart,
  the windows of "dynamic" (a cheap control, our addition: an image that
  pools a clip without encoding order).
* "dynamic": Bilen et al.'s dynamic images (approximate rank pooling,
  `avd_tf.classify.dynamic_images`) of the same windows over RGB frames,
  each min-max scaled to uint8 (`to_uint8`).
* "dynamic_flow": the same over flow, x and y as channels, values in [-1, 1]
  before pooling.
* "avd_rgb" / "avd_flow": AVD distilled images made by E of a trained AVD
  model (`avd_tf.models.distill.distill_dataset`); both are 3-channel
  RGB-like images, AVD(OF) included (E maps any clip to H x W x 3).

Windows (`window_starts`): starts 0, stride, ... with a full window; a video
shorter than a window gives one image over all its frames. Videos with fewer
frames than `frames_per_video` repeat frames (indices are looped, as in
`avd_tf.inputs.sampling`). Each image's "clip_index" numbers it within its
video.

Horizontal flips (training augmentation) must show what the MIRRORED VIDEO
gives. "frame", "mean" and "dynamic" are per-pixel functions of the frames
and "flow" is TV-L1 flow (mirror-equivariant up to numerics, x negated), so
a flip mirrors the stored image (negating x for "flow"). For the others the
image of the mirrored video is no function of the stored image, so each of
their records also stores it (`avd_tf.records.images` "mirror"):
"dynamic_flow" (its min-max scaling runs over x and y together, so negating
x moves the scale) and the AVD streams (mirroring an AVD stream mirrors the
clip before E, not the image after it: E of the mirrored clip, flow x
negated). Evaluation reads the unflipped images only.

Cache: `<data_dir>/streams/<stream>` by default, and for AVD streams
`<data_dir>/streams/<stream>-<fingerprint of the AVD model folder>`, so a
retrained model gets a fresh cache. A stream is computed into a temporary
sibling folder whose `stream.json` (parameters, counts) is written last,
then moved into place; a folder without `stream.json`, or with other
parameters, is never read and is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from typing import Sequence

import numpy as np
import tensorflow as tf

from avd_tf import terminal
from avd_tf.classify import dynamic_images as di
from avd_tf.files import write_json_atomically
from avd_tf.inputs import augment, sampling
from avd_tf.inputs.clips import video_dataset
from avd_tf.inputs.shards import check_flow, list_shards, manifest_fingerprint, read_manifest
from avd_tf.layout import CONFIG, STREAM_INFO
from avd_tf.records import images, schema

STREAMS = ("frame", "flow", "mean", "dynamic", "dynamic_flow", "avd_rgb", "avd_flow")
AVD_STREAMS = ("avd_rgb", "avd_flow")
# Streams whose channels are flow (x, y): a horizontal flip negates x.
FLOW_STREAMS = ("flow", "dynamic_flow")
# Streams whose records also hold the image of the mirrored video.
MIRRORED_STREAMS = ("dynamic_flow", "avd_rgb", "avd_flow")
SPLITS = ("train", "test")
# Bumped when the images a given set of parameters produces, or their
# encoding, change.
FORMAT_VERSION = 3
AUTOTUNE = tf.data.AUTOTUNE
MAX_CYCLE_LENGTH = 8
IMAGES_PER_SHARD = 1000
MAX_SHUFFLE_BUFFER = 10000


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; known streams: {', '.join(STREAMS)}")


def stream_channels(stream: str) -> int:
    """Image channels of `stream`: 2 for flow and dynamic_flow (x, y), else 3."""
    _check_stream(stream)
    return 2 if stream in FLOW_STREAMS else 3


def _short_hash(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:10]


def avd_model_fingerprint(avd_model_dir: str) -> str:
    """Short hash of the names, sizes and mtimes of the files in `avd_model_dir`.

    Retraining rewrites the model file, so its size or mtime changes and the
    hash with it; hashing bytes would read the whole model on every call.
    Only files directly in the folder count (not logs/ or backup/ sub-folders).
    """
    if not os.path.isdir(avd_model_dir):
        raise FileNotFoundError(f"{avd_model_dir}: no such AVD model folder (avd-train makes it)")
    entries = []
    for name in sorted(os.listdir(avd_model_dir)):
        path = os.path.join(avd_model_dir, name)
        if os.path.isfile(path):
            stat = os.stat(path)
            entries.append(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}")
    if not entries:
        raise FileNotFoundError(f"{avd_model_dir}: the AVD model folder holds no file")
    return _short_hash("\n".join(entries).encode("utf-8"))


def default_cache_dir(data_dir: str, stream: str, avd_model_dir: str | None = None) -> str:
    """`<data_dir>/streams/<stream>`, or `.../<stream>-<model fingerprint>` for AVD streams."""
    _check_stream(stream)
    name = stream
    if stream in AVD_STREAMS:
        name = f"{stream}-{avd_model_fingerprint(_need_avd_model(stream, avd_model_dir))}"
    return os.path.join(data_dir, "streams", name)


def _need_avd_model(stream: str, avd_model_dir: str | None) -> str:
    if not avd_model_dir:
        raise ValueError(
            f"stream {stream!r} needs avd_model_dir (--avd_model_dir): the folder of an "
            "AVD model trained by avd-train, whose encoder E makes the distilled images")
    return avd_model_dir


def stream_info(stream_dir: str) -> dict:
    """The `stream.json` of a complete stream folder (what `ensure_stream` returns)."""
    path = os.path.join(stream_dir, STREAM_INFO)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: missing, so {stream_dir} is not a complete image stream "
            "(ensure_stream makes one)")
    with open(path) as f:
        try:
            info = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(info, dict) or info.get("stream") not in STREAMS:
        raise ValueError(f"{path}: no known 'stream' in this file")
    return info


def _parameters(data_dir, stream, avd_model_dir, frames_per_video, window, stride,
                clips_per_video) -> dict:
    parameters = {"stream": stream, "version": FORMAT_VERSION,
                  "source": manifest_fingerprint(data_dir)}
    if stream in ("frame", "flow"):
        if frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1, got {frames_per_video}")
        parameters["frames_per_video"] = int(frames_per_video)
    elif stream in AVD_STREAMS:
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        parameters["avd_model"] = avd_model_fingerprint(avd_model_dir)
        parameters["clips_per_video"] = int(clips_per_video)
    else:
        di.window_starts(1, window, stride)  # validates window and stride
        parameters["window"], parameters["stride"] = int(window), int(stride)
    return parameters


def _is_complete(stream_dir: str, parameters: dict) -> bool:
    try:
        return stream_info(stream_dir).get("parameters") == parameters
    except (FileNotFoundError, ValueError):
        return False


def _decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """(N,) encoded images -> uint8 (N, H, W, channels)."""
    return tf.map_fn(
        lambda data: tf.io.decode_image(data, channels=channels, expand_animations=False),
        encoded, fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))


def decoded_videos(data_dir: str, split: str, *, flow: bool,
                   frames_per_video: int | None = None) -> tf.data.Dataset:
    """Videos of a prepared split with decoded frames, in shard order.

    Elements: {"frames": uint8 (N, H, W, C), "label", "video_id"}; C = 3
    (RGB) or, with `flow`, 2 (TV-L1 x, y as stored). With
    `frames_per_video`, only that many evenly spaced frames are decoded
    (looped for short videos), gathered before decoding to spare the rest.
    """
    def decode(video):
        if flow:
            planes = tf.stack([video[schema.FLOW_X], video[schema.FLOW_Y]], axis=1)
        else:
            planes = video[schema.IMAGE][:, None]
        if frames_per_video:
            length = tf.shape(planes)[0]
            starts = sampling.evenly_spaced_starts(length, frames_per_video, 1)
            planes = tf.gather(planes, sampling.clip_indices(starts, length, 1)[:, 0])
        frames = tf.concat([_decode(planes[:, p], 1 if flow else 3)
                            for p in range(2 if flow else 1)], axis=-1)
        return {"frames": frames, "label": tf.cast(video[schema.LABEL_INDEX], tf.int32),
                "video_id": video[schema.VIDEO_ID]}

    return video_dataset(data_dir, split).map(decode, num_parallel_calls=AUTOTUNE).prefetch(2)


def _flow_to_signed(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) / 127.5 - 1.0


def video_images(stream: str, frames: np.ndarray, *, window: int = di.DEFAULT_WINDOW,
                 stride: int = di.DEFAULT_STRIDE) -> np.ndarray:
    """uint8 (K, H, W, C) images of one video for a non-AVD stream.

    `frames`: the decoded uint8 frames of `decoded_videos` (for "frame" and
    "flow", the already selected frames, returned as they are).
    """
    _check_stream(stream)
    if stream in ("frame", "flow"):
        return frames
    if stream == "mean":
        starts = di.window_starts(len(frames), window, stride)
        means = [frames[s:s + window].mean(axis=0, dtype=np.float64) for s in starts]
        return np.rint(np.stack(means)).astype(np.uint8)
    if stream == "dynamic":
        pooled = di.dynamic_images(frames, window, stride)
    elif stream == "dynamic_flow":
        pooled = di.dynamic_images(_flow_to_signed(frames), window, stride)
    else:
        raise ValueError(f"stream {stream!r} is made by distill_dataset, not from frames")
    return np.stack([di.to_uint8(image) for image in pooled])


def mirrored_frames(frames: np.ndarray, flow: bool) -> np.ndarray:
    """The decoded frames of the mirrored video: columns reversed; flow x negated.

    Flow x is stored as q = round(255 * (v + 20) / 40), so -v is 255 - q.
    """
    mirrored = frames[:, :, ::-1].copy()
    if flow:
        mirrored[..., 0] = 255 - mirrored[..., 0]
    return mirrored


def _compute(data_dir: str, stream: str, output_dir: str, *, frames_per_video: int,
             window: int, stride: int, progress: bool) -> dict:
    """Writes the shards of both splits of a non-AVD stream; returns per-split counts."""
    manifest = read_manifest(data_dir)
    flow = stream in FLOW_STREAMS
    if flow:
        for split in SPLITS:
            check_flow(data_dir, split)
    selected = frames_per_video if stream in ("frame", "flow") else None
    total = sum(manifest.get("splits", {}).get(split, {}).get("videos", 0) for split in SPLITS)
    counts, shape = {}, None
    with terminal.progress_bar(total or None, desc=f"stream {stream}", unit="video",
                               enabled=progress) as bar:
        for split in SPLITS:
            writer = images.ShardedWriter(output_dir, split, IMAGES_PER_SHARD)
            videos = count = 0
            for video in decoded_videos(data_dir, split, flow=flow,
                                        frames_per_video=selected).as_numpy_iterator():
                pictures = video_images(stream, video["frames"], window=window, stride=stride)
                mirrors = [None] * len(pictures)
                if stream in MIRRORED_STREAMS:
                    mirrors = video_images(stream, mirrored_frames(video["frames"], flow),
                                           window=window, stride=stride)
                for index, (picture, mirror) in enumerate(zip(pictures, mirrors)):
                    writer.write(images.serialize(picture, video["label"], video["video_id"],
                                                  index, mirror))
                shape = list(pictures.shape[1:])
                videos, count = videos + 1, count + len(pictures)
                bar.update(1)
            writer.close()
            counts[split] = {"videos": videos, "images": count}
    return {"splits": counts, "image_shape": shape}


def _count_records(stream_dir: str, split: str) -> tuple[int, int, list[int]]:
    """(images, videos, first image shape) of a split written by someone else."""
    files = list_shards(stream_dir, split)
    count, ids, shape = 0, set(), None
    for element in tf.data.TFRecordDataset(files).map(images.parse).as_numpy_iterator():
        count += 1
        ids.add(element["video_id"])
        shape = shape or list(element["image"].shape)
    return count, len(ids), shape


def _avd_stream_of(info: dict) -> str | None:
    """'avd_rgb' / 'avd_flow' when a model or distillation record names its input stream."""
    value = info.get("stream") if isinstance(info, dict) else None
    return {"rgb": "avd_rgb", "flow": "avd_flow"}.get(value, value)


def _check_avd_stream(stream: str, info: dict, where: str) -> None:
    found = _avd_stream_of(info)
    if found in AVD_STREAMS and found != stream:
        raise ValueError(f"{where}: this AVD model distils the {found!r} stream, "
                         f"not {stream!r}; give the AVD model trained on the other input")


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error


def _distill(data_dir: str, stream: str, output_dir: str, *, avd_model_dir: str,
             clips_per_video: int, progress: bool) -> dict:
    """Runs E of the AVD model over both splits; returns counts and distill's report."""
    from avd_tf.models.distill import distill_dataset

    model_config = os.path.join(avd_model_dir, CONFIG)
    _check_avd_stream(stream, _read_json(model_config), model_config)
    report = distill_dataset(avd_model_dir, data_dir, output_dir,
                             clips_per_video=clips_per_video, progress=progress, mirrored=True)
    written = _read_json(os.path.join(output_dir, STREAM_INFO))
    _check_avd_stream(stream, {**written, **(report or {})}, avd_model_dir)
    counts, shape = {}, None
    for split in SPLITS:
        count, videos, first = _count_records(output_dir, split)
        counts[split] = {"videos": videos, "images": count}
        shape = shape or first
    if shape is not None and shape[-1] != 3:
        raise ValueError(f"{avd_model_dir}: distilled images have {shape[-1]} channels, "
                         "expected 3 (E outputs RGB-like images)")
    return {"splits": counts, "image_shape": shape,
            "distill": json.loads(json.dumps({"report": report, "stream_json": written},
                                             default=str))}


def _remove_stale_partials(final: str) -> None:
    """Deletes temporary and replaced folders of killed runs (their process is gone)."""
    parent, name = os.path.split(final)
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        kind = next((k for k in (".partial-", ".old-") if entry.startswith(name + k)), None)
        if kind is None:
            continue
        pid = entry[len(name) + len(kind):].split("-")[0]
        alive = True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            alive = False
        except (ValueError, PermissionError):
            pass
        if not alive:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _publish(tmp: str, final: str, parameters: dict) -> None:
    """Moves a complete temporary folder into place, replacing an invalid one."""
    old = None
    if os.path.isdir(final):
        if _is_complete(final, parameters):  # another process finished first
            shutil.rmtree(tmp)
            return
        old = f"{final}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if not _is_complete(final, parameters):
            raise
        shutil.rmtree(tmp)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def ensure_stream(
    data_dir: str,
    stream: str,
    *,
    avd_model_dir: str | None = None,
    cache_dir: str | None = None,
    frames_per_video: int = 8,
    window: int = di.DEFAULT_WINDOW,
    stride: int = di.DEFAULT_STRIDE,
    progress: bool = True,
    clips_per_video: int = 4,
) -> str:
    """The folder of `stream`'s image shards for "train" and "test", computed if needed.

    `data_dir`: a folder prepared by avd-prepare. `cache_dir` defaults to
    `default_cache_dir(data_dir, stream, avd_model_dir)`. A complete cache
    whose parameters (stream, frames_per_video / window, stride / AVD model
    fingerprint and clips_per_video, the manifest's hash) match is returned
    at once; anything else is recomputed. AVD streams need `avd_model_dir`.
    """
    _check_stream(stream)
    if stream in AVD_STREAMS:
        _need_avd_model(stream, avd_model_dir)
    final = os.path.abspath(cache_dir or default_cache_dir(data_dir, stream, avd_model_dir))
    parameters = _parameters(data_dir, stream, avd_model_dir, frames_per_video, window,
                             stride, clips_per_video)
    if _is_complete(final, parameters):
        return final
    _remove_stale_partials(final)
    tmp = f"{final}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    start = time.time()
    try:
        if stream in AVD_STREAMS:
            result = _distill(data_dir, stream, tmp, avd_model_dir=avd_model_dir,
                              clips_per_video=clips_per_video, progress=progress)
        else:
            result = _compute(data_dir, stream, tmp, frames_per_video=frames_per_video,
                              window=window, stride=stride, progress=progress)
        info = {
            "stream": stream,
            "channels": stream_channels(stream),
            "mirrored_images": stream in MIRRORED_STREAMS,
            "parameters": parameters,
            "classes": list(read_manifest(data_dir)["classes"]),
            "data_dir": os.path.abspath(data_dir),
            "avd_model_dir": os.path.abspath(avd_model_dir) if avd_model_dir else None,
            "seconds": round(time.time() - start, 3),
            **result,
        }
        info["bytes_per_image"] = _bytes_per_image(tmp, info["splits"])
        # Last: its presence marks the folder complete.
        write_json_atomically(os.path.join(tmp, STREAM_INFO), info)
        _publish(tmp, final, parameters)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _bytes_per_image(stream_dir: str, counts: dict) -> float:
    """Shard bytes over images (mirror images included): what the cache costs per image."""
    total = sum(os.path.getsize(path) for split in SPLITS for path in list_shards(stream_dir, split))
    return round(total / max(1, sum(split["images"] for split in counts.values())), 1)


def num_images(stream_dir: str, split: str) -> int:
    """How many images split `split` of a complete stream folder holds."""
    return int(stream_info(stream_dir)["splits"][split]["images"])


def _sub_seed(seed: int | None, index: int) -> int | None:
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)


def preprocess_image(image: tf.Tensor, size: int, *, training: bool, flow: bool,
                     seed=None, scale_range: Sequence[float] = augment.DEFAULT_SCALE_RANGE,
                     flip: str = "mirror", mirror: tf.Tensor | None = None
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 (H, W, C) -> (float32 (size, size, C) in [-1, 1] (q / 127.5 - 1), flipped).

    Training: size jitter and random crop as `avd_tf.inputs.augment.augment_clip`
    does (same seeds), and with `flip="mirror"` a flip with probability 0.5
    (paper section 4.2): `mirror` (the mirrored video's image, when the
    stream stores one) replaces the image, else the image is mirrored, `flow`
    negating x. `flipped` (boolean scalar) says whether it flipped.
    Evaluation: short side to `size`, centre crop, never flipped.
    """
    if not training:
        clip = augment.center_crop_resize(augment.to_signed_unit(image)[None], size)
        return clip[0], tf.constant(False)
    crop_seed, flip_seed = augment.augment_seeds(seed)
    flipped = (augment.flip_coin(flip_seed) if augment.check_flip(flip) == "mirror"
               else tf.constant(False))
    if mirror is not None:
        image = tf.where(flipped, mirror, image)
    clip = augment.random_crop_resize(augment.to_signed_unit(image)[None], size, crop_seed,
                                      scale_range)
    if mirror is None:
        clip = augment.flip_if(clip, flipped, flow)
    return clip[0], flipped


def _mirror_class_table(mirror_classes, classes: list, stream_dir: str) -> tf.Tensor:
    """int32 (num_classes,): each class's mirror class, checked."""
    num = len(classes)
    table = [int(c) for c in mirror_classes]
    if len(table) != num or any(not 0 <= c < num for c in table):
        raise ValueError(f"mirror_classes must give a class in 0..{num - 1} for each of the "
                         f"{num} classes of {stream_dir}, got {list(mirror_classes)}")
    return tf.constant(table, tf.int32)


def stream_dataset(
    stream_dir: str,
    split: str,
    *,
    size: int,
    training: bool,
    batch_size: int,
    seed: int | None = None,
    repeat: bool | None = None,
    cache: bool = True,
    scale_range: Sequence[float] = augment.DEFAULT_SCALE_RANGE,
    flip: str = "mirror",
    mirror_classes: Sequence[int] | None = None,
) -> tf.data.Dataset:
    """Batches {"image", "label", "video_id", "clip_index"} of a stream folder.

    "image": float32 (B, size, size, C) in [-1, 1] (q / 127.5 - 1); "label":
    int32 (B,); "video_id": string (B,); "clip_index": int32 (B,).

    Training: images shuffled, augmented as the paper says ("size jittering,
    cropping, flipping, and re-scaling", section 4.2; see `preprocess_image`),
    batches of exactly `batch_size`, repeated forever unless `repeat=False`.
    `flip="mirror"`: half of the samples show the mirrored video (the module
    docstring says how per stream) and carry the mirror class of their label,
    `mirror_classes[label]` (a class per class, see
    `avd_tf.datasets.flip_labels.flip_permutation`; default: every class its
    own mirror); `flip="none"` never flips. Evaluation: resize + centre crop, deterministic,
    one pass in file order. With `seed`, training batches are the same in
    every run. `cache` keeps the decoded uint8 images in memory.
    """
    info = stream_info(stream_dir)
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got {size} and {batch_size}")
    augment.check_scale_range(scale_range)
    augment.check_flip(flip)
    mirror_table = (None if mirror_classes is None
                    else _mirror_class_table(mirror_classes, list(info["classes"]), stream_dir))
    # Only training flips, so only training reads the mirrored video's images.
    stored_mirror = training and flip == "mirror" and info["stream"] in MIRRORED_STREAMS
    if stored_mirror and not info.get("mirrored_images"):
        raise ValueError(f"{stream_dir}: this {info['stream']} stream holds no images of the "
                         "mirrored videos (an older format); ensure_stream recomputes it")
    flow = info["stream"] in FLOW_STREAMS
    channels = int(info["channels"])
    files = list_shards(stream_dir, split)
    repeat = training if repeat is None else repeat

    paths = tf.data.Dataset.from_tensor_slices(files)
    if training:
        paths = paths.shuffle(len(files), seed=_sub_seed(seed, 0), reshuffle_each_iteration=True)
    ds = paths.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), MAX_CYCLE_LENGTH),
                          num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda record: images.parse(record, mirror=stored_mirror),
                num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        buffer = max(1, min(num_images(stream_dir, split), MAX_SHUFFLE_BUFFER))
        ds = ds.shuffle(buffer, seed=_sub_seed(seed, 1), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if training:
        seeds = tf.data.Dataset.random(seed=_sub_seed(seed, 2), rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds.batch(2, drop_remainder=True))

    def prepare(element, element_seed=None):
        image, flipped = preprocess_image(
            element["image"], size, training=training, flow=flow, seed=element_seed,
            scale_range=scale_range, flip=flip, mirror=element.get("mirror"))
        label = element["label"]
        if mirror_table is not None:
            label = tf.where(flipped, tf.gather(mirror_table, label), label)
        return {"image": tf.ensure_shape(image, [size, size, channels]),
                "label": label, "video_id": element["video_id"],
                "clip_index": element["clip_index"]}

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
    if not repeat:
        # A known length lets Keras end validation without an "ran out of data" warning.
        count = num_images(stream_dir, split)
        batches = count // batch_size if training else -(-count // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    options = tf.data.Options()
    options.deterministic = seed is not None or not training
    return ds.prefetch(AUTOTUNE).with_options(options)


__all__ = [
    "AVD_STREAMS",
    "FLOW_STREAMS",
    "MIRRORED_STREAMS",
    "STREAMS",
    "avd_model_fingerprint",
    "decoded_videos",
    "default_cache_dir",
    "ensure_stream",
    "mirrored_frames",
    "num_images",
    "preprocess_image",
    "stream_channels",
    "stream_dataset",
    "stream_info",
    "video_images",
]
