"""Each image stream computed once per dataset and parameters, in a cache folder.

Cache: `<data_dir>/streams/<stream>` by default, and for AVD streams
`<data_dir>/streams/<stream>-<fingerprint of the AVD model folder>`, so a
retrained model gets a fresh cache. A stream is computed
(`avd_tf.classify.stream_images`) into a temporary sibling folder whose
`stream.json` (parameters, counts) is written last, then moved into place;
a folder without `stream.json`, or with other parameters, is never read and
is recomputed. `avd_tf.inputs.images` reads a complete folder.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid

from avd_tf import streams
from avd_tf.classify import dynamic_images as di
from avd_tf.classify.stream_images import compute_images
from avd_tf.files import write_json_atomically
from avd_tf.inputs.images import stream_info
from avd_tf.inputs.shards import list_shards, manifest_fingerprint, read_manifest
from avd_tf.layout import STREAM_INFO

# Bumped when the images a given set of parameters produces, or their
# encoding, change.
FORMAT_VERSION = 3


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
    streams.check_avd_model(stream, avd_model_dir)
    name = stream
    if streams.get(stream).avd:
        name = f"{stream}-{avd_model_fingerprint(avd_model_dir)}"
    return os.path.join(data_dir, "streams", name)


def _parameters(data_dir, stream, avd_model_dir, frames_per_video, window, stride,
                clips_per_video) -> dict:
    parameters = {"stream": stream, "version": FORMAT_VERSION,
                  "source": manifest_fingerprint(data_dir)}
    kind = streams.get(stream).kind
    if kind == "frames":
        if frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1, got {frames_per_video}")
        parameters["frames_per_video"] = int(frames_per_video)
    elif kind == "avd":
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


def _bytes_per_image(stream_dir: str, counts: dict) -> float:
    """Shard bytes over images (mirror images included): what the cache costs per image."""
    total = sum(os.path.getsize(path) for split in counts for path in list_shards(stream_dir, split))
    return round(total / max(1, sum(split["images"] for split in counts.values())), 1)


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
    streams.check_avd_model(stream, avd_model_dir)
    entry = streams.get(stream)
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
        result = compute_images(data_dir, stream, tmp, frames_per_video=frames_per_video,
                                window=window, stride=stride, avd_model_dir=avd_model_dir,
                                clips_per_video=clips_per_video, progress=progress)
        info = {
            "stream": stream,
            "channels": entry.channels,
            "mirrored_images": entry.mirrored,
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


__all__ = ["FORMAT_VERSION", "avd_model_fingerprint", "default_cache_dir", "ensure_stream"]
