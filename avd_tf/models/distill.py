"""Distilling videos with a trained encoder E (paper section 3.1): clips in, uint8 images out.

`distill` turns one clip of any length and size into E's image, with the
preprocessing of the evaluation data pipeline (`avd_tf.inputs.clip_dataset`
with training=False), so a clip gives the image the dataset path gives:

* frames: the pipeline's single evaluation clip, i.e. the centred window of
  T consecutive frames (T = the model's `num_frames`), looped when the clip
  is shorter than T (0 1 2 3 4 0 1 2 for 5 frames and T = 8). Consecutive
  frames, not frames sampled over the whole clip: E was trained on
  consecutive frames, and motion between frames further apart looks faster
  than anything it saw.
* space: short side resized to the model's image size (bilinear,
  antialiased) and the centre square cropped, values q / 255 * 2 - 1.
* flow encoders take either the uint8 quantised x / y form that avd-prepare
  stores (q = round(255 * (v + 20) / 40)), or float flow in pixels, which is
  truncated to [-20, 20] and quantised the same way first, so both forms
  give the same image (docs/design.md, section 3).

Images come out as uint8 round((x + 1) * 127.5) of E's [-1, 1] output.
`distill_dataset` runs E over the evenly spaced clips of every video of a
prepared dataset and writes the images as image-record shards
(`avd_tf.records.images`) with a `stream.json` written last.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

from avd_tf import terminal, visualize
from avd_tf.files import write_json_atomically
from avd_tf.inputs import augment, sampling
from avd_tf.layout import AVD_MODEL, ENCODER, STREAM_INFO, shard_glob
from avd_tf.inputs.clips import clip_dataset
from avd_tf.inputs.shards import class_names, num_videos
from avd_tf.models.avd import AVD
from avd_tf.models.encoder import Encoder
from avd_tf.records import images
from avd_tf.streams import CLIP_CHANNELS
from avd_tf.video import decode
from avd_tf.video import flow as flow_lib

SPLITS = ("train", "test")
CHANNEL_STREAMS = {channels: stream for stream, channels in CLIP_CHANNELS.items()}


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What an encoder reads: `stream` ("rgb" / "flow"), clips (T, S, S, channels)."""

    stream: str
    num_frames: int
    image_size: int
    channels: int


def _load_file(path: str) -> Encoder:
    check_keras_file(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for unreadable files
        raise ValueError(f"{path}: cannot load the Keras model ({error})") from error
    return _encoder_of(model, path)


def check_keras_file(path: str) -> None:
    """Raises ValueError for a file that is neither a zip archive (.keras) nor HDF5, for which
    Keras says "File not found" (the file is there) or lists the formats it reads."""
    if not path.endswith((".h5", ".hdf5")) and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model file (a .keras file is a zip archive; "
                         "this one is not)")


def _encoder_of(model, where: str) -> Encoder:
    if isinstance(model, AVD):
        model = model.encoder
    if not isinstance(model, Encoder):
        raise ValueError(
            f"{where}: expected an AVD model or its Encoder, got {type(model).__name__}"
        )
    return model


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> Encoder:
    del mtime_ns, size  # part of the key only: a rewritten file is loaded again
    return _load_file(path)


def load_encoder(model_dir_or_encoder) -> Encoder:
    """E of a trained AVD model.

    Takes an `Encoder` or `AVD` instance (returned as is / its encoder), a
    `.keras` file of either, or a model folder written by avd-train (its
    `encoder.keras`, else `avd.keras`). Files are loaded once per process
    and kept (up to 4), until they change on disk.
    """
    if isinstance(model_dir_or_encoder, keras.Model):
        return _encoder_of(model_dir_or_encoder, type(model_dir_or_encoder).__name__)
    path = os.path.abspath(os.fspath(model_dir_or_encoder))
    if os.path.isdir(path):
        for name in (ENCODER, AVD_MODEL):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError(
                f"{path}: neither {ENCODER} nor {AVD_MODEL} in this folder "
                "(avd-train writes them when training finishes)"
            )
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such AVD model folder or .keras file")
    stat = os.stat(path)
    return _load_cached(path, stat.st_mtime_ns, stat.st_size)


def encoder_spec(encoder: Encoder) -> EncoderSpec:
    """The stream, clip length and image size `encoder` was built (and trained) for."""
    shape = (encoder.get_build_config() or {}).get("input_shape")
    if not shape or len(shape) != 5 or None in tuple(shape[1:]):
        raise ValueError(
            f"encoder {encoder.name!r} was not built for fixed-size clips (B, T, S, S, C); "
            f"its build shape is {shape}"
        )
    _, frames, height, width, channels = (int(s) if s is not None else None for s in shape)
    if height != width or channels not in CHANNEL_STREAMS:
        raise ValueError(
            f"encoder {encoder.name!r}: expected square RGB (3) or flow (2) clips, "
            f"built for {tuple(shape)}"
        )
    return EncoderSpec(CHANNEL_STREAMS[channels], frames, height, channels)


def images_to_uint8(images: tf.Tensor) -> tf.Tensor:
    """E's images in [-1, 1] -> uint8 round((x + 1) * 127.5) (graph-safe)."""
    scaled = (tf.clip_by_value(tf.cast(images, tf.float32), -1.0, 1.0) + 1.0) * 127.5
    return tf.cast(tf.round(scaled), tf.uint8)


def uint8_distiller(encoder: Encoder):
    """A tf.function: float clips (B, T, S, S, C) in [-1, 1] -> uint8 images (B, S, S, 3)."""
    spec = encoder_spec(encoder)

    @tf.function(
        input_signature=[
            tf.TensorSpec(
                [None, spec.num_frames, spec.image_size, spec.image_size, spec.channels],
                tf.float32,
            )
        ]
    )
    def run(clips):
        return images_to_uint8(encoder(clips, training=False))

    return run


def _check_frames(frames: np.ndarray, spec: EncoderSpec) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != spec.channels or 0 in frames.shape:
        raise ValueError(
            f"distill: this {spec.stream} encoder takes frames (T, H, W, {spec.channels}), "
            f"got shape {frames.shape}"
        )
    if frames.dtype == np.uint8:
        return frames
    if spec.stream == "flow" and np.issubdtype(frames.dtype, np.floating):
        if not np.isfinite(frames).all():
            raise ValueError("distill: the flow holds NaN or infinite values")
        x, y = flow_lib.quantize(frames)
        return np.stack([x, y], axis=-1)
    expected = "uint8" if spec.stream == "rgb" else "uint8 (quantised) or float (pixels)"
    raise ValueError(f"distill: {spec.stream} frames must be {expected}, got {frames.dtype}")


def prepare_clip(frames: np.ndarray, spec: EncoderSpec) -> tf.Tensor:
    """uint8 frames (T', H', W', C) -> the float clip (T, S, S, C) the evaluation pipeline makes."""
    length = frames.shape[0]
    starts = sampling.evenly_spaced_starts(length, 1, sampling.clip_span(spec.num_frames))
    indices = sampling.clip_indices(starts, length, spec.num_frames)[0]
    clip = augment.to_signed_unit(tf.gather(tf.constant(frames), indices))
    return augment.center_crop_resize(clip, spec.image_size)


def distill(model_dir_or_encoder, frames: np.ndarray) -> np.ndarray:
    """E's uint8 image (S, S, 3) of one clip `frames` (T', H', W', C) of any length and size.

    `model_dir_or_encoder`: see `load_encoder`. RGB frames are uint8; flow
    frames are uint8 quantised x / y or float pixels (module docstring).
    """
    encoder = load_encoder(model_dir_or_encoder)
    spec = encoder_spec(encoder)
    clip = prepare_clip(_check_frames(frames, spec), spec)
    return images_to_uint8(encoder(clip[None], training=False))[0].numpy()


def distill_video(model_dir_or_encoder, path: str) -> np.ndarray:
    """E's uint8 image (S, S, 3) of the clip at the middle of the video file `path`.

    Decodes with OpenCV (short side to E's image size), takes the centre
    clip as evaluation does and, for a flow encoder, computes TV-L1 flow on
    that clip's frames only (as avd-prepare would: grey frames, ±20 px).
    Raises `avd_tf.video.decode.VideoError` naming the file when it cannot
    be read.
    """
    encoder = load_encoder(model_dir_or_encoder)
    spec = encoder_spec(encoder)
    frames = decode.read_video(path, size=spec.image_size)
    if spec.stream == "flow":
        if len(frames) < 2:
            raise decode.VideoError(path, "one frame: optical flow needs at least two")
        span = sampling.clip_span(spec.num_frames) + 1
        start = max(0, (len(frames) - span) // 2)
        grey = [flow_lib.to_gray(f) for f in frames[start : start + span]]
        tvl1 = flow_lib.TVL1("cpu")
        frames = np.stack([tvl1.calc(a, b) for a, b in zip(grey[:-1], grey[1:])])
    return distill(encoder, frames)


def _remove_previous_output(output_dir: str) -> None:
    """Removes a previous run's stream.json (marking the folder incomplete), then its shards."""
    marker = os.path.join(output_dir, STREAM_INFO)
    if os.path.exists(marker):
        os.remove(marker)
    for split in SPLITS:
        for path in glob.glob(os.path.join(output_dir, shard_glob(split))):
            os.remove(path)


def distill_dataset(
    model_dir: str,
    data_dir: str,
    output_dir: str,
    *,
    clips_per_video: int = 4,
    batch_size: int = 16,
    progress: bool = True,
    mirrored: bool = False,
) -> dict:
    """Distils every video of the "train" and "test" splits of `data_dir` into `output_dir`.

    Each video gives `clips_per_video` evenly spaced clips (the evaluation
    pipeline, `clip_dataset(training=False)`, with the model's stream, T and
    image size), each distilled by E into a uint8 (S, S, 3) image stored
    with the video's label and id and the clip's index as image-record
    shards (`avd_tf.layout`). With `mirrored`, each record also
    holds E's image of the mirrored clip (flow: mirrored with x negated), the
    image a horizontally flipped training sample must show: E is no mirror-
    symmetric function, so E(mirror(clip)) != mirror(E(clip)). The mirrored
    clip is the evaluation clip mirrored: the mirrored video's own clip up to
    a one-pixel shift where the centre crop's margin is odd.
    `stream.json` (stream, T, size,
    counts, classes, timings) is written last and marks a complete output;
    a previous output in the folder is replaced. Returns its content.
    """
    if clips_per_video < 1 or batch_size < 1:
        raise ValueError(
            f"clips_per_video and batch_size must be >= 1, got {clips_per_video} and {batch_size}"
        )
    encoder = load_encoder(model_dir)
    spec = encoder_spec(encoder)
    classes = class_names(data_dir)
    run = uint8_distiller(encoder)
    os.makedirs(output_dir, exist_ok=True)
    _remove_previous_output(output_dir)
    splits, total_clips, total_seconds = {}, 0, 0.0
    for split in SPLITS:
        videos = num_videos(data_dir, split)
        dataset = clip_dataset(
            data_dir, split, stream=spec.stream, num_frames=spec.num_frames,
            size=spec.image_size, training=False, clips_per_video=clips_per_video,
            batch_size=batch_size,
        )
        writer = images.ShardedWriter(output_dir, split)
        count, ids = 0, set()
        start = time.perf_counter()
        with terminal.progress_bar(videos * clips_per_video, desc=f"distill {split}", unit="clip",
                                   enabled=progress) as bar:
            for batch in dataset:
                out = run(batch["clip"]).numpy()
                mirrors = [None] * len(out)
                if mirrored:
                    mirrors = run(augment.flip_left_right(
                        batch["clip"], flow=spec.stream == "flow")).numpy()
                for image, mirror, label, video_id, clip_index in zip(
                    out, mirrors, batch["label"].numpy(), batch["video_id"].numpy(),
                    batch["clip_index"].numpy(),
                ):
                    writer.write(images.serialize(image, label, video_id, clip_index, mirror))
                    ids.add(video_id)
                count += len(out)
                bar.update(len(out))
        seconds = time.perf_counter() - start
        shards = writer.close()
        total_clips += count
        total_seconds += seconds
        splits[split] = {
            "videos": len(ids),
            "images": count,
            "shards": [os.path.basename(path) for path in shards],
            "clips_per_second": round(count / seconds, 2) if seconds > 0 else None,
        }
    info = {
        "stream": spec.stream,
        "num_frames": spec.num_frames,
        "image_size": spec.image_size,
        "input_channels": spec.channels,
        "channels": 3,
        "clips_per_video": int(clips_per_video),
        "mirrored": bool(mirrored),
        "classes": classes,
        "model_dir": os.path.abspath(model_dir),
        "data_dir": os.path.abspath(data_dir),
        "splits": splits,
        "seconds": round(total_seconds, 3),
        "clips_per_second": round(total_clips / total_seconds, 2) if total_seconds > 0 else None,
    }
    # Last: its presence marks a complete output.
    write_json_atomically(os.path.join(output_dir, STREAM_INFO), info)
    return info


def read_images(stream_dir: str, split: str):
    """Yields the records of one split of a distilled folder as NumPy dicts (shard order)."""
    files = sorted(glob.glob(os.path.join(stream_dir, shard_glob(split))))
    if not files:
        raise FileNotFoundError(f"{stream_dir}: no {shard_glob(split)} shards")
    yield from tf.data.TFRecordDataset(files).map(images.parse).as_numpy_iterator()


def png_name(video_id: bytes | str, clip_index: int) -> str:
    """`<video_id>_<clip>.png`, with path separators in ids replaced by '_'."""
    if isinstance(video_id, bytes):
        video_id = video_id.decode("utf-8")
    return f"{video_id.replace('/', '_').replace(os.sep, '_')}_{int(clip_index)}.png"


def write_pngs(stream_dir: str, png_dir: str) -> int:
    """Writes each distilled image as `png_dir/<split>/<video_id>_<clip>.png`; returns the count."""
    count = 0
    for split in SPLITS:
        for record in read_images(stream_dir, split):
            path = os.path.join(png_dir, split, png_name(record["video_id"], record["clip_index"]))
            visualize.save_png(path, record["image"])
            count += 1
    return count


def _shown_frames(clip: np.ndarray, stream: str, count: int) -> list[np.ndarray]:
    """`count` evenly spaced frames of a float clip in [-1, 1], as uint8 RGB pictures."""
    picks = np.unique(np.round(np.linspace(0, len(clip) - 1, count)).astype(int))
    if stream == "rgb":
        return list(visualize.signed_to_uint8(clip[picks]))
    # One magnitude scale for the row, so speeds compare across its frames.
    return list(visualize.flow_to_rgb(clip[picks], max_magnitude=np.abs(clip).max() or 1.0))


def contact_sheet_rows(
    model_dir_or_encoder, data_dir: str, *, num_videos: int = 8, frames_shown: int = 8,
    split: str = "test",
) -> list[dict]:
    """Rows for `visualize.contact_sheet`: one centre clip of up to `num_videos` videos.

    Videos are taken one per class first (in class order), then a second per
    class, and so on. Each row shows `frames_shown` of the clip's T frames
    (flow colour coded, `visualize.flow_to_rgb`), E's image, and the class.
    """
    encoder = load_encoder(model_dir_or_encoder)
    spec = encoder_spec(encoder)
    classes = class_names(data_dir)
    dataset = clip_dataset(data_dir, split, stream=spec.stream, num_frames=spec.num_frames,
                           size=spec.image_size, training=False, clips_per_video=1,
                           batch_size=16)
    # Keeping no more clips per class than a row needs bounds the memory.
    per_class = -(-num_videos // max(len(classes), 1))
    by_class: dict[int, list] = {}
    for batch in dataset.as_numpy_iterator():
        for clip, label, video_id in zip(batch["clip"], batch["label"], batch["video_id"]):
            kept = by_class.setdefault(int(label), [])
            if len(kept) < per_class:
                kept.append((clip, video_id.decode("utf-8")))
        if len(by_class) == len(classes) and all(
            len(kept) == per_class for kept in by_class.values()
        ):
            break
    chosen = []
    for rank in range(max((len(v) for v in by_class.values()), default=0)):
        for label in sorted(by_class):
            if rank < len(by_class[label]) and len(chosen) < num_videos:
                chosen.append((label, *by_class[label][rank]))
    if not chosen:
        raise ValueError(f"{data_dir}: the {split} split has no video to show")
    run = uint8_distiller(encoder)
    distilled = run(tf.constant(np.stack([clip for _, clip, _ in chosen]))).numpy()
    return [
        {
            "frames": _shown_frames(clip, spec.stream, frames_shown),
            "image": image,
            "caption": f"{classes[label] if label < len(classes) else label}  ({video_id})",
        }
        for (label, clip, video_id), image in zip(chosen, distilled)
    ]


__all__ = [
    "EncoderSpec",
    "contact_sheet_rows",
    "distill",
    "distill_dataset",
    "encoder_spec",
    "images_to_uint8",
    "load_encoder",
    "png_name",
    "prepare_clip",
    "read_images",
    "uint8_distiller",
    "write_pngs",
]
