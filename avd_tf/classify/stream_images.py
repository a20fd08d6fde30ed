"""Computing an image stream's images from a prepared dataset (the streams of `avd_tf.streams`).

Per video, uint8 images written as image-record shards
(`avd_tf.records.images`) for the "train" and "test" splits:

* "frame" / "flow": `frames_per_video` evenly spaced frames (default 8, our
  choice: enough views of a video for a stable average, small enough to
  cache); flow as stored by avd-prepare, x and y quantised. Videos with
  fewer frames repeat frames (indices are looped, as in
  `avd_tf.inputs.sampling`).
* "mean": the mean frame of each window of `window` frames, `stride` apart.
* "dynamic": Bilen et al.'s dynamic images (approximate rank pooling,
  `avd_tf.classify.dynamic_images`) of the same windows over RGB frames,
  each min-max scaled to uint8 (`to_uint8`).
* "dynamic_flow": the same over flow, x and y as channels, values in [-1, 1]
  before pooling.
* "avd_rgb" / "avd_flow": E of a trained AVD model
  (`avd_tf.models.distill.distill_dataset`).

Windows (`window_starts`): starts 0, stride, ... with a full window; a video
shorter than a window gives one image over all its frames. Each image's
"clip_index" numbers it within its video.

Horizontal flips (training augmentation) must show what the MIRRORED VIDEO
gives. "frame", "mean" and "dynamic" are per-pixel functions of the frames
and "flow" is TV-L1 flow (mirror-equivariant up to numerics, x negated), so
a flip mirrors the stored image (negating x for "flow"). For the registry's
mirrored streams the image of the mirrored video is no function of the
stored image, so each of their records also stores it: "dynamic_flow" (its
min-max scaling runs over x and y together, so negating x moves the scale)
and the AVD streams (E of the mirrored clip, flow x negated). Evaluation
reads the unflipped images only.
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from avd_tf import streams, terminal
from avd_tf.classify import dynamic_images as di
from avd_tf.inputs import sampling
from avd_tf.inputs.clips import decode_planes, shard_records, stream_parser
from avd_tf.inputs.shards import check_flow, list_shards, read_manifest
from avd_tf.layout import CONFIG, STREAM_INFO
from avd_tf.records import images

SPLITS = ("train", "test")
AUTOTUNE = tf.data.AUTOTUNE
IMAGES_PER_SHARD = 1000


def decoded_videos(data_dir: str, split: str, *, flow: bool,
                   frames_per_video: int | None = None) -> tf.data.Dataset:
    """Videos of a prepared split with decoded frames, in shard order.

    Elements: {"frames": uint8 (N, H, W, C), "label", "video_id"}; C = 3
    (RGB) or, with `flow`, 2 (TV-L1 x, y as stored). With
    `frames_per_video`, only that many evenly spaced frames are decoded
    (looped for short videos), gathered before decoding to spare the rest.
    """
    clip_stream = "flow" if flow else "rgb"

    def decode(video):
        planes = video["planes"]
        if frames_per_video:
            length = tf.shape(planes)[0]
            starts = sampling.evenly_spaced_starts(length, frames_per_video, 1)
            planes = tf.gather(planes, sampling.clip_indices(starts, length, 1)[:, 0])
        return {"frames": decode_planes(planes, clip_stream), "label": video["label"],
                "video_id": video["video_id"]}

    records = shard_records(list_shards(data_dir, split), None, shuffle=False)
    return (records.map(stream_parser(clip_stream), num_parallel_calls=AUTOTUNE)
            .map(decode, num_parallel_calls=AUTOTUNE).prefetch(2))


def _flow_to_signed(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) / 127.5 - 1.0


def video_images(stream: str, frames: np.ndarray, *, window: int = di.DEFAULT_WINDOW,
                 stride: int = di.DEFAULT_STRIDE) -> np.ndarray:
    """uint8 (K, H, W, C) images of one video for a non-AVD stream.

    `frames`: the decoded uint8 frames of `decoded_videos` (for "frame" and
    "flow", the already selected frames, returned as they are).
    """
    kind = streams.get(stream).kind
    if kind == "avd":
        raise ValueError(f"stream {stream!r} is made by distill_dataset, not from frames")
    if kind == "frames":
        return frames
    if stream == "mean":
        starts = di.window_starts(len(frames), window, stride)
        means = [frames[s:s + window].mean(axis=0, dtype=np.float64) for s in starts]
        return np.rint(np.stack(means)).astype(np.uint8)
    if stream == "dynamic":
        pooled = di.dynamic_images(frames, window, stride)
    else:
        pooled = di.dynamic_images(_flow_to_signed(frames), window, stride)
    return np.stack([di.to_uint8(image) for image in pooled])


def mirrored_frames(frames: np.ndarray, flow: bool) -> np.ndarray:
    """The decoded frames of the mirrored video: columns reversed; flow x negated.

    Flow x is stored as q = round(255 * (v + 20) / 40), so -v is 255 - q.
    """
    mirrored = frames[:, :, ::-1].copy()
    if flow:
        mirrored[..., 0] = 255 - mirrored[..., 0]
    return mirrored


def _from_frames(data_dir: str, stream: str, output_dir: str, *, frames_per_video: int,
                 window: int, stride: int, progress: bool) -> dict:
    """Writes the shards of both splits of a non-AVD stream; returns per-split counts."""
    manifest = read_manifest(data_dir)
    entry = streams.get(stream)
    flow = entry.source == "flow"
    if flow:
        for split in SPLITS:
            check_flow(data_dir, split)
    selected = frames_per_video if entry.kind == "frames" else None
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
                if entry.mirrored:
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
    """The AVD stream a model or distillation record makes, from the clip stream it names."""
    value = info.get("stream") if isinstance(info, dict) else None
    return streams.avd_stream(value) if value in streams.CLIP_CHANNELS else value


def _check_avd_stream(stream: str, info: dict, where: str) -> None:
    found = _avd_stream_of(info)
    if found in streams.AVD_STREAMS and found != stream:
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


def compute_images(data_dir: str, stream: str, output_dir: str, *, frames_per_video: int,
                   window: int, stride: int, avd_model_dir: str | None, clips_per_video: int,
                   progress: bool) -> dict:
    """Writes `stream`'s shards for both splits into `output_dir`; returns what stream.json records.

    {"splits": {split: {"videos", "images"}}, "image_shape", and for AVD
    streams "distill" (distill_dataset's report)}. AVD streams need
    `avd_model_dir` and use `clips_per_video`; the others use
    `frames_per_video` ("frame", "flow") or `window` and `stride`.
    """
    if streams.get(stream).avd:
        return _distill(data_dir, stream, output_dir, avd_model_dir=avd_model_dir,
                        clips_per_video=clips_per_video, progress=progress)
    return _from_frames(data_dir, stream, output_dir, frames_per_video=frames_per_video,
                        window=window, stride=stride, progress=progress)


__all__ = ["IMAGES_PER_SHARD", "SPLITS", "compute_images", "decoded_videos", "mirrored_frames",
           "video_images"]
