"""The image streams a 2D CNN classifies, described here only (no TensorFlow import).

The inputs of the paper's Table 1 and of the dynamic-image peer (sections
4.3, 4.6). Each is computed from one of prepared data's clip streams, its
`source`: "rgb" frames or TV-L1 "flow" (x, y). Three kinds:

* "frames": evenly spaced frames of the source: "frame" (the paper's RGB
  baseline, "the information is extracted per frame and the average
  performance is reported") and "flow" (its OF baseline).
* "windows": one image per window of frames: "mean" (the mean frame, a cheap
  control of ours: it pools a clip without encoding order), "dynamic" and
  "dynamic_flow" (Bilen et al.'s dynamic images over RGB or flow).
* "avd": AVD distilled images, made by E of an AVD model that avd-train
  trained on the source (`avd-train --stream rgb` for "avd_rgb", `flow`
  for "avd_flow"). Both are 3-channel RGB-like images, AVD(OF) included:
  E maps any clip to H x W x 3.

`channels`: 3 (RGB-like) or 2 (flow x, y: a horizontal flip negates x).
`mirrored`: the stream's records also store the image of the mirrored
video, because it is no function of the stored image
(`avd_tf.classify.stream_images` says why per stream).
"""
from __future__ import annotations

import dataclasses

# Prepared data's clip streams (what avd-train's E reads) and their channels.
CLIP_CHANNELS = {"rgb": 3, "flow": 2}


@dataclasses.dataclass(frozen=True)
class Stream:
    """One image stream: see the module docstring for the fields."""

    name: str
    source: str
    kind: str
    channels: int
    mirrored: bool

    @property
    def avd(self) -> bool:
        """Made by E of an AVD model, so computing it needs an avd-train model folder."""
        return self.kind == "avd"

    @property
    def flow_channels(self) -> bool:
        """The channels are flow (x, y), so a horizontal flip negates x."""
        return self.source == "flow" and not self.avd


_REGISTRY = {stream.name: stream for stream in (
    Stream("frame", "rgb", "frames", 3, mirrored=False),
    Stream("flow", "flow", "frames", 2, mirrored=False),
    Stream("mean", "rgb", "windows", 3, mirrored=False),
    Stream("dynamic", "rgb", "windows", 3, mirrored=False),
    # Its min-max scaling runs over x and y together, so negating x moves the scale.
    Stream("dynamic_flow", "flow", "windows", 2, mirrored=True),
    # Mirroring an AVD stream mirrors the clip before E, not the image after it.
    Stream("avd_rgb", "rgb", "avd", 3, mirrored=True),
    Stream("avd_flow", "flow", "avd", 3, mirrored=True),
)}

STREAMS = tuple(_REGISTRY)
AVD_STREAMS = tuple(name for name, s in _REGISTRY.items() if s.avd)
MIRRORED_STREAMS = tuple(name for name, s in _REGISTRY.items() if s.mirrored)


def get(name: str) -> Stream:
    """The registry entry of stream `name`; an unknown name is a ValueError."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown stream {name!r}; known streams: {', '.join(STREAMS)}") from None


def avd_input(name: str) -> str | None:
    """The clip stream ("rgb" / "flow") of the AVD model stream `name` needs; None if none."""
    stream = get(name)
    return stream.source if stream.avd else None


def avd_stream(clip_stream: str) -> str:
    """The AVD stream an AVD model trained on `clip_stream` makes: "rgb" -> "avd_rgb"."""
    for stream in _REGISTRY.values():
        if stream.avd and stream.source == clip_stream:
            return stream.name
    raise ValueError(f"unknown clip stream {clip_stream!r}; expected one of "
                     f"{', '.join(CLIP_CHANNELS)}")


def needs_flow(names) -> bool:
    """Whether any of the streams `names` is computed from TV-L1 flow (avd-prepare --flow)."""
    return any(get(name).source == "flow" for name in names)


def check_avd_model(name: str, avd_model_dir: str | None) -> None:
    """A ValueError when stream `name` needs an AVD model folder and `avd_model_dir` is empty."""
    if get(name).avd and not avd_model_dir:
        raise ValueError(
            f"stream {name!r} needs avd_model_dir (--avd_model_dir): the folder of an "
            f"AVD model trained by avd-train --stream {avd_input(name)}, whose encoder E "
            "makes the distilled images")


__all__ = ["AVD_STREAMS", "CLIP_CHANNELS", "MIRRORED_STREAMS", "STREAMS", "Stream",
           "avd_input", "avd_stream", "check_avd_model", "get", "needs_flow"]
