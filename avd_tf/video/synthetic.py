"""The built-in demo data set: classes that need both appearance and motion.

Each video films a random scene (a textured background with textured
objects) with a moving camera. A demo class is a kind of object times a
camera motion, named `<Kind><Motion>` ("RoundTranslateLeft", "BoxRotateCW"):
every object of the scene has the kind's shape and colours (Round: red to
yellow ellipses, Box: cyan to blue rectangles, Triangle: green triangles;
all outlined in black) and the camera moves the whole scene rigidly
(translation in one of eight directions, rotation, zoom). A plain motion
name ("TranslateLeft") films scenes of mixed shapes and colours, so that
class is the motion and nothing else.

What each view of a clip can tell (our design; the paper has no such data
set, it credits AVD(RGB)'s lead over optical flow to "appearance information
along with motion"):

* One frame shows the kind (several objects per view at any pose, as they
  sit on a jittered grid; shapes of every kind have equal areas) and
  nothing of the motion.
* Optical flow shows the motion and not the kind: the scene moves rigidly,
  so the flow field is the camera's whatever the objects' shape.
* The mean frame, or any summary blind to frame order, shows the kind and
  the motion's axis (blur along a line or around the centre) but not its
  direction: a motion and its mirror partner (TranslateLeft/TranslateRight,
  RotateCW/RotateCCW) pass through the same poses in opposite order.

The default 2 kinds x 4 mirror-paired motions thus cap a frame at 25%, a
mean frame at 50% and flow at 50% accuracy; only a representation of
appearance and ordered motion reaches 100%. A horizontal flip turns a class
into its mirror class (`flip_label_map`).

Everything but the class is drawn by the same code for every class:

* The scene of a video depends only on `scene_seed` and the kind, never on
  the motion; the background is drawn by the same code for every kind.
* The first view is a random pose (rotation uniform in [0, 360) degrees, scale
  log-uniform in BASE_SCALE, offset of up to a quarter frame), so the
  orientation of any frame is uniform whatever the class.
* Motions run symmetrically around the middle frame (zoom clips go from
  scale z^-1/2 to z^1/2 or back), and clips that do not zoom film at a fixed
  zoom drawn from the scales zoom clips pass through, so the scale of a
  frame taken at a random time has one distribution in every class.

The one exception: the very first and last frames of a zoom clip sit at its
extreme scales.

`make_demo_dataset` writes the videos in the UCF101 layout (`videos/<Class>/
v_<Class>_gXX_cYY.avi` and `splits/classInd.txt`, `trainlist01.txt`,
`testlist01.txt`, CRLF lines like the official files, and
`splits/flip_label_map.json`). As in UCF101, the clips of one group share
their scene (different speed, pose and offset), and whole groups go to
either train or test, so a model cannot pass by recognising a scene it has
seen in training.

This module must not import TensorFlow (preparation workers import the video
package in fresh processes).
"""
from __future__ import annotations

import colorsys
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from avd_tf.video.decode import VideoError

# Sizes and speeds are given for 64-pixel frames and scale with the frame size.
REFERENCE_SIZE = 64
DIRECTION_JITTER_DEG = 10.0  # diagonals are 45 degrees away, so classes stay apart
ZOOM_TOTAL_MAX = 0.9  # caps the log-scale change of long clips (2.5x)
BASE_SCALE = (0.8, 1.25)
# The smallest scale a frame can show the scene at (any class films at
# zooms down to a zoom clip's widest view).
MIN_VIEW_SCALE = BASE_SCALE[0] * math.exp(-ZOOM_TOTAL_MAX / 2)
# The scene is drawn at twice the output resolution and each frame is shrunk
# with INTER_AREA, so shape edges and fine textures are anti-aliased.
SUPERSAMPLE = 2
OBJECTS_PER_VIEW = 8.0
GRAIN = 0.15
GRAIN_CELL = 4.0  # pixels at 64 px frames
OBJECT_RADIUS = (0.12, 0.25)  # fraction of the frame size; an ellipse's radius
ASPECT = (0.55, 1.0)  # short over long side of an object
# No texture draws corners or closed outlines, so the objects' silhouettes
# are the only shapes in a frame.
TEXTURES = ("noise", "stripes", "gradient")
STRIPE_PERIOD = (20.0, 40.0)  # pixels at 64 px frames
NOISE_CELL = (5.0, 12.0)
# Mixed shapes, for scenes of plain motion classes.
SHAPES = ("ellipse", "rectangle", "polygon")
OUTLINE_WIDTH = 1.5  # pixels at 64 px frames
OUTLINE_GREY = 0.05
COLOUR_SV = ((0.5, 1.0), (0.45, 1.0))  # saturation and value ranges of a kind's colours


@dataclasses.dataclass(frozen=True)
class Kind:
    """What every object of a scene looks like: its shapes and its colours' hues (degrees).

    The hue ranges of different kinds do not overlap, so a kind shows both
    in the objects' outlines and in their colours. Outlines alone are not
    enough for the demo's data sizes: a 3-layer CNN trained from scratch on
    600 JPEG frames of 32 px told Round from Box scenes at 55-58% with
    outlines only, at 99% with the colours too (93% from 100 frames).
    """

    shapes: tuple[str, ...]
    hues: tuple[float, float]


KINDS: dict[str, Kind] = {
    "Round": Kind(("ellipse",), (-30.0, 45.0)),  # reds, oranges, yellows
    "Box": Kind(("rectangle",), (180.0, 255.0)),  # cyans and blues
    "Triangle": Kind(("triangle",), (75.0, 150.0)),  # greens
}
# Equal areas for every shape of radius r and aspect a (pi r^2 a): a box's
# long side is sqrt(pi) r, an (aspect-squashed) equilateral triangle's
# circumradius sqrt(4 pi / (3 sqrt 3)) r.
BOX_SIDE = math.sqrt(math.pi)
TRIANGLE_RADIUS = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))
SHAPE_REACH = 1.6  # no shape reaches further than this times r from its centre
DEFAULT_KINDS = ("Round", "Box")
DEFAULT_MOTIONS = ("TranslateLeft", "TranslateRight", "RotateCW", "RotateCCW")
TEST_FRACTION = 0.3
VIDEO_EXTENSION = ".avi"
VIDEO_FOURCC = "MJPG"
FLIP_LABEL_MAP_FILE = "flip_label_map.json"


@dataclasses.dataclass(frozen=True)
class Speeds:
    """Camera speed ranges; each clip draws its speed uniformly in the range.

    `translate` is in pixels per frame at 64 px frames (1-2 px/frame at 32 px
    by default), `rotate_deg` in degrees per frame (3-6: 1.2-2.4 px/frame at
    the corners and 0.8-1.7 at the edge midpoints of 32 px frames), `zoom` in
    log-scale per frame (0.3-0.8 px/frame at the edge midpoints at 64 px).
    """

    translate: tuple[float, float] = (2.0, 4.0)
    rotate_deg: tuple[float, float] = (3.0, 6.0)
    zoom: tuple[float, float] = (0.01, 0.025)

    def check(self) -> None:
        """Raises ValueError for an empty range or a speed that aliases the textures.

        Content moving more than half a texture period per frame looks like
        it moves backwards, so the fastest content (the frame corners when
        rotating or zooming) must stay below half the shortest stripe period
        at the smallest scale a frame shows.
        """
        half_diagonal = REFERENCE_SIZE / math.sqrt(2.0)
        fastest = {
            "translate": self.translate[1],
            "rotate_deg": math.radians(self.rotate_deg[1]) * half_diagonal,
            "zoom": math.expm1(self.zoom[1]) * half_diagonal,
        }
        limit = STRIPE_PERIOD[0] * MIN_VIEW_SCALE / 2
        flags = {"translate": "translate_speed", "rotate_deg": "rotate_speed", "zoom": "zoom_speed"}
        for name, fast in fastest.items():
            low, high = getattr(self, name)
            where = f"{name}={low},{high} (--{flags[name]})"
            if not 0 < low <= high:
                raise ValueError(f"{where}: expected a range 0 < low <= high")
            if fast >= limit:
                raise ValueError(
                    f"{where}: moves content up to {fast:.2f} px/frame at {REFERENCE_SIZE} px, "
                    f"too fast for the textures (must stay below {limit:.2f}, half the "
                    "shortest texture period in a frame)"
                )


DEFAULT_SPEEDS = Speeds()


@dataclasses.dataclass(frozen=True)
class Motion:
    """A camera motion in screen coordinates (x right, y down).

    `kind` is "translate" (content moves along `direction`), "rotate" (`sign`
    +1: clockwise on screen) or "zoom" (`sign` +1: content grows).
    """

    kind: str
    direction: tuple[float, float] = (0.0, 0.0)
    sign: float = 1.0

    def mirrored(self) -> "Motion":
        """The motion seen in a horizontally flipped video."""
        sign = -self.sign if self.kind == "rotate" else self.sign
        return Motion(self.kind, (-self.direction[0], self.direction[1]), sign)


_DIAG = math.sqrt(0.5)
MOTIONS: dict[str, Motion] = {
    "TranslateLeft": Motion("translate", (-1.0, 0.0)),
    "TranslateRight": Motion("translate", (1.0, 0.0)),
    "TranslateUp": Motion("translate", (0.0, -1.0)),
    "TranslateDown": Motion("translate", (0.0, 1.0)),
    "RotateCW": Motion("rotate", sign=1.0),
    "RotateCCW": Motion("rotate", sign=-1.0),
    "ZoomIn": Motion("zoom", sign=1.0),
    "ZoomOut": Motion("zoom", sign=-1.0),
    "TranslateUpLeft": Motion("translate", (-_DIAG, -_DIAG)),
    "TranslateUpRight": Motion("translate", (_DIAG, -_DIAG)),
    "TranslateDownLeft": Motion("translate", (-_DIAG, _DIAG)),
    "TranslateDownRight": Motion("translate", (_DIAG, _DIAG)),
}

Seed = int | Sequence[int]


def motion_classes() -> list[str]:
    """All motion names (the plain motion classes)."""
    return list(MOTIONS)


def demo_classes(
    kinds: Sequence[str] = DEFAULT_KINDS, motions: Sequence[str] = DEFAULT_MOTIONS
) -> list[str]:
    """Class names in label order: kind-major (every motion of the first kind first).

    With no kinds the classes are the plain motion names (mixed-shape scenes).
    """
    for name, known, what in ((kinds, KINDS, "kind"), (motions, MOTIONS, "motion")):
        for item in name:
            if item not in known:
                raise ValueError(f"unknown {what} {item!r}; known: {', '.join(known)}")
        if len(set(name)) != len(name):
            raise ValueError(f"repeated {what} in {', '.join(name)}")
    if not motions:
        raise ValueError("at least one motion is needed")
    if not kinds:
        return list(motions)
    return [f"{kind}{motion}" for kind in kinds for motion in motions]


def parse_class(class_name: str) -> tuple[str | None, str]:
    """(kind, motion) of a class name; a plain motion name has kind None."""
    if class_name in MOTIONS:
        return None, class_name
    for kind in KINDS:
        if class_name.startswith(kind) and class_name[len(kind) :] in MOTIONS:
            return kind, class_name[len(kind) :]
    raise ValueError(
        f"unknown demo class {class_name!r}; expected a motion ({', '.join(MOTIONS)}), "
        f"optionally after a kind ({', '.join(KINDS)})"
    )


def mirror_class(class_name: str) -> str:
    """The class a horizontal flip turns `class_name` into (the kind stays)."""
    kind, motion = parse_class(class_name)
    mirrored = MOTIONS[motion].mirrored()
    partner = next(name for name, other in MOTIONS.items() if other == mirrored)
    return (kind or "") + partner


def flip_label_map(classes: Sequence[str]) -> dict[str, str]:
    """Class -> mirror class, both directions, for classes whose mirror is another class of the set.

    Classes a flip leaves unchanged (TranslateUp, ZoomIn) are not listed, as
    in MMAction2's `flip_label_map`; neither are classes whose mirror class
    is not in `classes` (see `unpaired_classes`).
    """
    present = set(classes)
    return {
        name: mirror_class(name)
        for name in classes
        if mirror_class(name) != name and mirror_class(name) in present
    }


def unpaired_classes(classes: Sequence[str]) -> list[str]:
    """Classes whose mirror class is a different class missing from `classes`.

    A horizontal flip of their videos shows a class the set lacks.
    """
    present = set(classes)
    return [name for name in classes if mirror_class(name) not in present]


def _check_positive(name: str, value: int, minimum: int = 1) -> None:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def canvas_size(frames: int, size: int, speeds: Speeds = DEFAULT_SPEEDS) -> int:
    """Side of the square scene canvas (in canvas pixels) that no frame leaves.

    It depends on the clip length, frame size and speed ranges only, never
    on the class, so every class films scenes drawn the same way.
    """
    unit = SUPERSAMPLE * size / REFERENCE_SIZE
    half_view = SUPERSAMPLE * size / math.sqrt(2.0)  # half-diagonal of a rotated frame
    offset = math.sqrt(2.0) * SUPERSAMPLE * size / 4
    travel = unit * speeds.translate[1] * (frames - 1) / 2
    # Every class may view the scene zoomed out this far (see camera_path).
    zoom_out = math.exp(min(speeds.zoom[1] * (frames - 1), ZOOM_TOTAL_MAX) / 2)
    reach = (half_view + travel) * zoom_out / BASE_SCALE[0]
    return int(math.ceil(2 * (offset + reach + 2 * SUPERSAMPLE)))


def _triangle(x: np.ndarray) -> np.ndarray:
    """A wave rising from 0 to 1 and back with period 2 (a repeating gradient)."""
    return np.abs((x % 2.0) - 1.0)


def _smooth_noise(
    rng: np.random.Generator, height: int, width: int, cell: float, channels: int
) -> np.ndarray:
    """float32 [height, width, channels] noise in [0, 1], smooth over `cell` pixels."""
    grid = rng.uniform(0.0, 1.0, (int(height / cell) + 2, int(width / cell) + 2, channels))
    noise = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(noise.reshape(height, width, channels), 0.0, 1.0)


def _texture(
    rng: np.random.Generator,
    height: int,
    width: int,
    unit: float,
    window: tuple[int, int, int, int] | None = None,
    hues: tuple[float, float] | None = None,
) -> np.ndarray:
    """A float32 texture in [0, 1] of a random kind and two colours.

    The texture covers [height, width]; only its `window` (x0, y0, x1, y1;
    default: all) is computed and returned. The colours are uniform in RGB,
    or of hues (degrees) in `hues` with saturation and value in COLOUR_SV.
    Stripe periods bound the speeds (`Speeds.check`), so periodic textures
    never alias in time.
    """
    x0, y0, x1, y1 = window if window is not None else (0, 0, width, height)
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    if hues is None:
        colours = rng.uniform(0.0, 1.0, (2, 3)).astype(np.float32)
    else:
        hsv = np.stack(
            [(rng.uniform(*hues, 2) % 360.0) / 360.0, rng.uniform(*COLOUR_SV[0], 2),
             rng.uniform(*COLOUR_SV[1], 2)], -1,
        )
        colours = np.array([colorsys.hsv_to_rgb(*c) for c in hsv], np.float32)
    angle = rng.uniform(0.0, 2 * math.pi)
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    along = x * math.cos(angle) + y * math.sin(angle)
    across = -x * math.sin(angle) + y * math.cos(angle)
    if kind == "noise":
        channels = 3 if rng.uniform() < 0.5 else 1  # coloured or two-tone noise
        cell = rng.uniform(*NOISE_CELL) * unit
        mix = _smooth_noise(rng, height, width, cell, channels)[y0:y1, x0:x1]
    elif kind == "stripes":
        period = rng.uniform(*STRIPE_PERIOD) * unit
        sharpness = rng.uniform(1.0, 6.0)
        wave = np.sin(2 * math.pi * along / period + rng.uniform(0.0, 2 * math.pi))
        mix = np.clip(0.5 + 0.5 * sharpness * wave, 0.0, 1.0)[..., None]
    else:  # gradient: repeating along two axes, so no region is a 1-D ramp
        lengths = rng.uniform(10.0, 60.0, 2) * unit
        offsets = rng.uniform(0.0, 2.0, 2)
        mix = 0.5 * (
            _triangle(along / lengths[0] + offsets[0]) + _triangle(across / lengths[1] + offsets[1])
        )[..., None]
    return colours[0] * (1.0 - mix) + colours[1] * mix


def _patch_side(radius: float) -> int:
    """Side of the square patch `_shape_mask` draws a shape of `radius` in."""
    return int(math.ceil(2 * SHAPE_REACH * radius)) + 3


def _shape_mask(rng: np.random.Generator, radius: float, shapes: Sequence[str]) -> np.ndarray:
    """A float32 anti-aliased mask of a random shape of `shapes` centred in a square patch.

    Ellipses, boxes and triangles of one radius and aspect have equal areas,
    so a kind shows in the outline and not in how much of the frame it covers.
    """
    side = _patch_side(radius)
    centre = (side - 1) / 2
    mask = np.zeros((side, side), np.uint8)
    shape = shapes[rng.integers(len(shapes))]
    angle = rng.uniform(0.0, 360.0)
    aspect = rng.uniform(*ASPECT)
    # OpenCV draws in fixed point; 4 fractional bits keep outlines sub-pixel.
    shift = 4
    scale = 1 << shift
    if shape == "ellipse":
        cv2.ellipse(
            mask, (round(centre * scale), round(centre * scale)),
            (round(radius * scale), round(radius * aspect * scale)),
            angle, 0, 360, 255, -1, cv2.LINE_AA, shift,
        )
        return mask.astype(np.float32) / 255.0
    if shape == "rectangle":
        box = BOX_SIDE * radius * np.array([1.0, aspect])
        points = cv2.boxPoints(((centre, centre), tuple(box), angle))
    elif shape == "triangle":
        corners = np.radians([90.0, 210.0, 330.0])
        upright = TRIANGLE_RADIUS * radius * np.stack([np.cos(corners), aspect * np.sin(corners)], -1)
        turn = math.radians(angle)
        rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        points = centre + upright @ rotation.T
    else:  # polygon: 3-7 corners at random angles, for mixed-shape scenes
        count = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0.0, 2 * math.pi, count))
        radii = radius * rng.uniform(0.5, 1.0, count)
        points = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], -1)
    cv2.fillPoly(mask, [np.round(points * scale).astype(np.int32)], 255, cv2.LINE_AA, shift)
    return mask.astype(np.float32) / 255.0


def render_scene(
    scene_seed: Seed,
    frames: int,
    size: int,
    region: tuple[int, int, int, int] | None = None,
    kind: str | None = None,
    speeds: Speeds = DEFAULT_SPEEDS,
) -> np.ndarray:
    """The float32 RGB scene canvas in [0, 1], or its `region` only.

    The canvas is C x C (C = `canvas_size`); `region` (x0, y0, x1, y1 in
    canvas pixels, default: all) selects the part to draw and return, with
    the same pixels as the full canvas there. Objects have the shapes of
    `kind` (a KINDS name; None: mixed SHAPES); the background is drawn the
    same way for every kind. One object sits at a uniform place in each cell
    of a grid with OBJECTS_PER_VIEW cells per frame area at scale 1 (our
    choice), so every view shows several objects; each has its own seed, so
    skipping the objects outside `region` changes nothing inside it.
    """
    shapes, hues = (SHAPES, None) if kind is None else (KINDS[kind].shapes, KINDS[kind].hues)
    rng = np.random.default_rng(scene_seed)
    side = canvas_size(frames, size, speeds)
    unit = SUPERSAMPLE * size / REFERENCE_SIZE
    view = SUPERSAMPLE * size
    rx0, ry0, rx1, ry1 = region if region is not None else (0, 0, side, side)
    canvas = _texture(rng, side, side, unit, (rx0, ry0, rx1, ry1))
    # A faint fixed grain gives flat and 1-D regions some 2-D texture for
    # flow to follow.
    grain = GRAIN * (_smooth_noise(rng, side, side, GRAIN_CELL * unit, 1)[ry0:ry1, rx0:rx1] - 0.5)
    cell = view / math.sqrt(OBJECTS_PER_VIEW)
    cells = int(math.ceil(side / cell))
    count = cells * cells
    grid = np.stack(np.meshgrid(np.arange(cells), np.arange(cells)), -1).reshape(-1, 2)
    centres = (grid + rng.uniform(0, 1, (count, 2))) * cell
    radii = rng.uniform(*OBJECT_RADIUS, count) * view
    seeds = rng.integers(0, 2**63, count)
    width = int(round(2 * OUTLINE_WIDTH * unit)) | 1
    outline_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    for radius, centre, seed in zip(radii, centres, seeds):
        extent = _patch_side(radius)
        left, top = (centre - extent / 2).astype(int)
        x0, y0 = max(left, rx0), max(top, ry0)
        x1, y1 = min(left + extent, rx1), min(top + extent, ry1)
        if y1 <= y0 or x1 <= x0:
            continue
        shape_rng = np.random.default_rng(seed)
        mask = _shape_mask(shape_rng, radius, shapes)
        patch = _texture(shape_rng, extent, extent, unit, hues=hues)
        # A dark outline makes the silhouette plain whatever the colours around it.
        ring = (mask - cv2.erode(mask, outline_kernel))[..., None]
        patch = patch * (1.0 - ring) + OUTLINE_GREY * ring
        m = mask[y0 - top : y1 - top, x0 - left : x1 - left, None]
        p = patch[y0 - top : y1 - top, x0 - left : x1 - left]
        inside = canvas[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
        inside[...] = inside * (1.0 - m) + p * m
    return np.clip(canvas + grain, 0.0, 1.0)


def _seen_region(maps: np.ndarray, view: int, side: int) -> tuple[int, int, int, int]:
    """Canvas bounding box (x0, y0, x1, y1) of every pixel the frames sample."""
    last = view - 1
    corners = np.array([[0, 0, 1], [last, 0, 1], [0, last, 1], [last, last, 1]], float)
    seen = np.concatenate([corners @ cv2.invertAffineTransform(m).T for m in maps])
    # Two pixels of margin cover the bilinear neighbours of the outermost samples.
    low = np.maximum(np.floor(seen.min(0)) - 2, 0).astype(int)
    high = np.minimum(np.ceil(seen.max(0)) + 3, side).astype(int)
    return int(low[0]), int(low[1]), int(high[0]), int(high[1])


def camera_path(
    class_name: str, seed: Seed, frames: int, size: int, speeds: Speeds = DEFAULT_SPEEDS
) -> np.ndarray:
    """float64 [frames, 2, 3] affine maps from canvas pixels to SUPERSAMPLE-size frames.

    `class_name` is a motion or a kind-and-motion class (the kind does not
    matter here). Every video draws the same random numbers in the same
    order, whatever its class; only how the drawn speed is used depends on
    the motion. Motions run symmetrically around the middle frame. Classes
    that do not zoom view the scene at a fixed zoom drawn from what a zoom
    clip shows at a random frame, so the scale of a frame at a random time
    has one distribution for all classes. (The first and last frames of a
    zoom clip sit at its extreme scales, so those two frames alone do hint
    at ZoomIn vs ZoomOut.)
    """
    motion = MOTIONS[parse_class(class_name)[1]]
    _check_positive("frames", frames, 2)
    _check_positive("size", size, 8)
    speeds.check()
    rng = np.random.default_rng(seed)
    theta0 = rng.uniform(0.0, 2 * math.pi)
    scale0 = math.exp(rng.uniform(math.log(BASE_SCALE[0]), math.log(BASE_SCALE[1])))
    offset = rng.uniform(-0.25, 0.25, 2) * SUPERSAMPLE * size
    speed_fraction = rng.uniform()
    jitter = math.radians(rng.uniform(-DIRECTION_JITTER_DEG, DIRECTION_JITTER_DEG))
    still_zoom_fraction = rng.uniform()
    still_zoom_step = rng.integers(frames)

    def from_range(bounds: tuple[float, float], fraction: float) -> float:
        return bounds[0] + fraction * (bounds[1] - bounds[0])

    def zoom_rate(fraction: float) -> float:
        return min(from_range(speeds.zoom, fraction), ZOOM_TOTAL_MAX / (frames - 1))

    unit = SUPERSAMPLE * size / REFERENCE_SIZE
    steps = np.arange(frames, dtype=np.float64) - (frames - 1) / 2
    shift = np.zeros((frames, 2))
    turn = np.zeros(frames)
    log_zoom = np.full(frames, zoom_rate(still_zoom_fraction) * steps[still_zoom_step])
    if motion.kind == "translate":
        dx, dy = motion.direction
        c, s = math.cos(jitter), math.sin(jitter)
        direction = np.array([c * dx - s * dy, s * dx + c * dy])
        shift = steps[:, None] * (from_range(speeds.translate, speed_fraction) * unit) * direction
    elif motion.kind == "rotate":
        turn = steps * motion.sign * math.radians(from_range(speeds.rotate_deg, speed_fraction))
    else:
        log_zoom = steps * motion.sign * zoom_rate(speed_fraction)
    side = canvas_size(frames, size, speeds)
    canvas_centre = (side - 1) / 2 + offset
    view_centre = (SUPERSAMPLE * size - 1) / 2
    maps = np.empty((frames, 2, 3))
    for t in range(frames):
        # With y pointing down, a positive angle turns content clockwise on screen.
        angle = theta0 + turn[t]
        linear = scale0 * math.exp(log_zoom[t]) * np.array(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
        )
        maps[t, :, :2] = linear
        maps[t, :, 2] = view_centre + shift[t] - linear @ canvas_centre
    return maps


def render_video(
    class_name: str,
    seed: Seed,
    frames: int = 40,
    size: int = 64,
    scene_seed: Seed | None = None,
    speeds: Speeds = DEFAULT_SPEEDS,
) -> np.ndarray:
    """A uint8 [frames, size, size, 3] RGB clip of class `class_name`.

    `class_name` is a plain motion ("TranslateLeft": mixed-shape scene) or a
    kind and a motion ("BoxTranslateLeft"). `seed` draws the camera pose and
    speed, `scene_seed` (default: `seed`) the scene; clips that share a scene
    seed and kind film the same scene.
    """
    kind, _ = parse_class(class_name)
    maps = camera_path(class_name, seed, frames, size, speeds)
    big = SUPERSAMPLE * size
    region = _seen_region(maps, big, canvas_size(frames, size, speeds))
    scene = render_scene(
        seed if scene_seed is None else scene_seed, frames, size, region, kind, speeds
    )
    # The maps take full-canvas coordinates; the scene starts at the region's corner.
    maps[:, :, 2] += maps[:, :, :2] @ np.array(region[:2], float)
    clip = np.empty((frames, size, size, 3), np.uint8)
    for t, affine in enumerate(maps):
        view = cv2.warpAffine(
            scene, affine, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        small = cv2.resize(view, (size, size), interpolation=cv2.INTER_AREA)
        clip[t] = np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)
    return clip


def write_video(
    path: str | os.PathLike,
    frames_rgb: np.ndarray | Sequence[np.ndarray],
    fps: float = 25.0,
    fourcc: str = VIDEO_FOURCC,
) -> Path:
    """Writes uint8 RGB frames ([N, H, W, 3], or [N, H, W] grey) with cv2.VideoWriter.

    Creates the parent folder; raises VideoError naming `path` when the frames
    are unusable or OpenCV cannot write that container/codec.
    """
    path = Path(path)
    frames = np.asarray(frames_rgb)
    if frames.dtype != np.uint8:
        raise VideoError(str(path), f"frames must be uint8, got {frames.dtype}")
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(
            str(path), f"frames must be [N>0, H, W, 3] or [N>0, H, W], got {frames.shape}"
        )
    if len(fourcc) != 4:
        raise VideoError(str(path), f"fourcc must have 4 characters, got {fourcc!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    code = cv2.VideoWriter_fourcc(*fourcc)
    writer = cv2.VideoWriter(str(path), code, float(fps), (width, height))
    if not writer.isOpened():
        raise VideoError(str(path), f"OpenCV cannot write {fourcc!r} video to this file")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# The name other modules' tests use to make small real videos.
write_test_video = write_video


def split_groups(groups: int, test_fraction: float = TEST_FRACTION) -> tuple[list[int], list[int]]:
    """1-based (train, test) group numbers: the last round(fraction * groups) test.

    At least one group goes to each side, so `groups` must be at least 2.
    """
    _check_positive("groups", groups, 2)
    if groups > 99:
        raise ValueError(f"groups must be at most 99 (two-digit gXX names), got {groups}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    test = min(max(1, round(test_fraction * groups)), groups - 1)
    numbers = list(range(1, groups + 1))
    return numbers[: groups - test], numbers[groups - test :]


def clips_per_group(videos_per_class: int, groups: int) -> list[int]:
    """How many clips each group gets: as even as possible, earlier groups first."""
    base, extra = divmod(videos_per_class, groups)
    return [base + (1 if g < extra else 0) for g in range(groups)]


def video_name(class_name: str, group: int, clip: int) -> str:
    """The UCF101 file name `v_<Class>_gXX_cYY.avi`."""
    return f"v_{class_name}_g{group:02d}_c{clip:02d}{VIDEO_EXTENSION}"


def make_demo_dataset(
    output_dir: str | os.PathLike,
    num_classes: int | None = None,
    videos_per_class: int = 10,
    frames: int = 40,
    size: int = 64,
    seed: int = 0,
    groups: int = 5,
    fps: float = 25.0,
    test_fraction: float = TEST_FRACTION,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    kinds: Sequence[str] = DEFAULT_KINDS,
    motions: Sequence[str] = DEFAULT_MOTIONS,
    speeds: Speeds = DEFAULT_SPEEDS,
) -> dict:
    """Writes the demo data set in the UCF101 layout and returns a summary.

    The classes are `demo_classes(kinds, motions)` (kind-major label order;
    no kinds: plain motions), or their first `num_classes`. Layout:
    `output_dir/videos/<Class>/v_<Class>_gXX_cYY.avi`,
    `output_dir/splits/{classInd,trainlist01,testlist01}.txt`,
    `output_dir/splits/flip_label_map.json` (class -> mirror class, see
    `flip_label_map`) and `output_dir/demo_data.json` (the summary). Clip c
    of group g of class k films scene `[seed, k, g]` with camera
    `[seed, k, g, c]`, so equal arguments give identical frames. `log`
    receives one line per class. Refuses to write over an existing
    `videos/` folder unless `overwrite`.
    """
    classes_available = demo_classes(kinds, motions)
    if num_classes is None:
        num_classes = len(classes_available)
    _check_positive("num_classes", num_classes)
    if num_classes > len(classes_available):
        raise ValueError(
            f"num_classes={num_classes} but only {len(classes_available)} classes exist: "
            f"{', '.join(classes_available)}"
        )
    _check_positive("videos_per_class", videos_per_class)
    _check_positive("frames", frames, 2)
    _check_positive("size", size, 8)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    speeds.check()
    train_groups, test_groups = split_groups(groups, test_fraction)
    if videos_per_class < groups:
        raise ValueError(
            f"videos_per_class={videos_per_class} is fewer than groups={groups}: "
            "every group needs at least one clip"
        )
    root = Path(output_dir)
    video_dir, split_dir = root / "videos", root / "splits"
    if video_dir.exists() and any(video_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{video_dir}: already holds videos; choose another folder or "
            "overwrite=True (--overwrite)"
        )
    if overwrite:
        _remove_previous(video_dir)
    split_dir.mkdir(parents=True, exist_ok=True)

    classes = classes_available[:num_classes]
    counts = clips_per_group(videos_per_class, groups)
    train_lines, test_lines = [], []
    for label, name in enumerate(classes):
        for group, count in zip(range(1, groups + 1), counts):
            for clip in range(1, count + 1):
                rel = f"{name}/{video_name(name, group, clip)}"
                video = render_video(
                    name, [seed, label, group, clip], frames, size,
                    scene_seed=[seed, label, group], speeds=speeds,
                )
                write_video(video_dir / rel, video, fps)
                if group in test_groups:
                    test_lines.append(rel)
                else:
                    train_lines.append(f"{rel} {label + 1}")
        if log is not None:
            log(f"[{label + 1}/{num_classes}] {name}: {videos_per_class} videos")

    # The official ucfTrainTestlist files end every line with CRLF.
    _write_lines(split_dir / "classInd.txt", [f"{i + 1} {n}" for i, n in enumerate(classes)])
    _write_lines(split_dir / "trainlist01.txt", train_lines)
    _write_lines(split_dir / "testlist01.txt", test_lines)
    flip_map_path = split_dir / FLIP_LABEL_MAP_FILE
    flip_map_path.write_text(json.dumps(flip_label_map(classes), indent=2) + "\n")
    summary = {
        "output_dir": str(root),
        "video_dir": str(video_dir),
        "split_dir": str(split_dir),
        "flip_label_map": str(flip_map_path),
        "classes": classes,
        "kinds": list(kinds),
        "motions": list(motions),
        # Classes whose mirror class is missing: a flipped video of theirs shows no class of the set.
        "flip_unpaired": unpaired_classes(classes),
        "num_videos": len(train_lines) + len(test_lines),
        "num_train": len(train_lines),
        "num_test": len(test_lines),
        "train_groups": train_groups,
        "test_groups": test_groups,
        "frames": frames,
        "size": size,
        "fps": fps,
        "seed": seed,
        "groups": groups,
        "speeds": {name: list(r) for name, r in dataclasses.asdict(speeds).items()},
        "fourcc": VIDEO_FOURCC,
    }
    (root / "demo_data.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(f"{line}\r\n" for line in lines).encode("ascii"))


def _remove_previous(video_dir: Path) -> None:
    """Deletes the videos of an earlier demo run; touches nothing if anything else is there."""
    if not video_dir.exists():
        return
    entries = [(d, list(d.iterdir()) if d.is_dir() else [d]) for d in video_dir.iterdir()]
    for _, files in entries:
        for f in files:
            if not (f.is_file() and f.name.startswith("v_") and f.suffix == VIDEO_EXTENSION):
                raise FileExistsError(f"{f}: not a demo video; refusing to overwrite {video_dir}")
    for entry, files in entries:
        for f in files:
            f.unlink()
        if entry.is_dir():
            entry.rmdir()
