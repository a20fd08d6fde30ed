"""Pictures for people: flow colour coding, image grids and contact sheets (NumPy + OpenCV).

Everything here takes and returns uint8 RGB arrays (H, W, 3), except
`flow_to_rgb`, which takes flow vectors, and `signed_to_uint8`, which takes
network images in [-1, 1]. This module does not import TensorFlow.
"""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

BACKGROUND = 255
TEXT_COLOUR = (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def signed_to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] -> uint8 round((x + 1) * 127.5), clipped (the inputs' map inverted)."""
    scaled = (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.round(scaled).astype(np.uint8)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour codes flow (..., H, W, 2) (x, y) as uint8 RGB (..., H, W, 3).

    The usual HSV coding: hue is the direction (red = right, then round the
    colour wheel as the angle grows, image y pointing down), value the
    magnitude, saturation full. Magnitudes are divided by `max_magnitude`
    (default: the largest in `flow`, so frames coded together share one
    scale) and clipped at 1; zero flow is black. Any unit works (pixels, or
    the [-1, 1] network values) as long as `max_magnitude` uses it too.
    """
    flow = np.asarray(flow, np.float32)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow_to_rgb: expected flow (..., H, W, 2), got shape {flow.shape}")
    magnitude, angle = cv2.cartToPolar(
        flow[..., 0].reshape(-1), flow[..., 1].reshape(-1), angleInDegrees=True
    )
    magnitude = magnitude.reshape(flow.shape[:-1])
    angle = angle.reshape(flow.shape[:-1])
    scale = float(max_magnitude) if max_magnitude else float(magnitude.max())
    value = np.clip(magnitude / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(magnitude)
    # OpenCV's 8-bit hue runs over [0, 180).
    hsv = np.stack(
        [
            np.round(angle / 2.0) % 180,
            np.full_like(angle, 255),
            np.round(value * 255.0),
        ],
        axis=-1,
    ).astype(np.uint8)
    flat = hsv.reshape(-1, 1, 3)
    return cv2.cvtColor(flat, cv2.COLOR_HSV2RGB).reshape(hsv.shape)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"expected (H, W, 3) or (H, W, 1) images, got shape {image.shape}")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: small network images stay crisp, pixels visible."""
    if factor <= 1:
        return image
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)


def image_grid(
    images: Sequence[np.ndarray], columns: int, pad: int = 2, pad_value: int = BACKGROUND
) -> np.ndarray:
    """Tiles same-sized uint8 images row by row, `columns` per row, `pad` pixels apart."""
    if not len(images):
        raise ValueError("image_grid: no images")
    tiles = [_as_rgb(image) for image in images]
    height, width = tiles[0].shape[:2]
    if any(tile.shape[:2] != (height, width) for tile in tiles):
        raise ValueError(
            f"image_grid: images differ in size: {sorted({t.shape[:2] for t in tiles})}"
        )
    columns = max(1, min(int(columns), len(tiles)))
    rows = -(-len(tiles) // columns)
    grid = np.full(
        (rows * height + (rows + 1) * pad, columns * width + (columns + 1) * pad, 3),
        pad_value,
        np.uint8,
    )
    for i, tile in enumerate(tiles):
        top = pad + (i // columns) * (height + pad)
        left = pad + (i % columns) * (width + pad)
        grid[top : top + height, left : left + width] = tile
    return grid


def _caption(text: str, width: int, height: int = 20) -> np.ndarray:
    strip = np.full((height, width, 3), BACKGROUND, np.uint8)
    cv2.putText(strip, text, (4, height - 6), FONT, 0.45, TEXT_COLOUR, 1, cv2.LINE_AA)
    return strip


def contact_sheet(
    rows: Sequence[dict], *, min_tile: int = 96, gap: int = 12, pad: int = 2
) -> np.ndarray:
    """One row per clip: its frames, a gap, then its distilled image, captioned.

    `rows`: dicts with "frames" (a list of uint8 (h, w, 3) images, e.g. clip
    frames or colour-coded flow), "image" (the distilled uint8 (h, w, 3)
    image) and "caption" (text above the row). Tiles are enlarged by an
    integer factor to at least `min_tile` pixels. A header names the columns.
    """
    if not rows:
        raise ValueError("contact_sheet: no rows")
    height = _as_rgb(rows[0]["image"]).shape[0]
    factor = max(1, -(-min_tile // height))
    strips = []
    for row in rows:
        frames = image_grid([upscale(_as_rgb(f), factor) for f in row["frames"]],
                            columns=len(row["frames"]), pad=pad)
        image = image_grid([upscale(_as_rgb(row["image"]), factor)], columns=1, pad=pad)
        if image.shape[0] != frames.shape[0]:
            raise ValueError(
                f"contact_sheet: distilled image height {row['image'].shape[0]} differs from "
                f"the frames' {row['frames'][0].shape[0]}"
            )
        spacer = np.full((frames.shape[0], gap, 3), BACKGROUND, np.uint8)
        body = np.concatenate([frames, spacer, image], axis=1)
        strips.append((row.get("caption", ""), frames.shape[1], body))
    width = max(body.shape[1] for _, _, body in strips)
    header = _caption("clip frames", width)
    cv2.putText(header, "distilled", (strips[0][1] + gap + 4, 14), FONT, 0.45, TEXT_COLOUR, 1,
                cv2.LINE_AA)
    parts = [header]
    for caption, _, body in strips:
        body = np.pad(body, ((0, 0), (0, width - body.shape[1]), (0, 0)),
                      constant_values=BACKGROUND)
        parts += [_caption(caption, width), body]
    return np.concatenate(parts, axis=0)


def save_png(path: str, image: np.ndarray) -> str:
    """Writes a uint8 RGB (or grey) image as PNG, creating folders; returns the path."""
    image = _as_rgb(image)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: OpenCV could not write the PNG")
    return path


__all__ = [
    "contact_sheet",
    "flow_to_rgb",
    "image_grid",
    "save_png",
    "signed_to_uint8",
    "upscale",
]
