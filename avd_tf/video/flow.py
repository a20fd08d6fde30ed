"""TV-L1 optical flow (Zach et al. 2007; paper section 4.2) and its 8-bit storage.

Flow is computed on grayscale frames with OpenCV contrib's Dual TV-L1, on
the GPU when the OpenCV build has CUDA, truncated to [-BOUND, BOUND] pixels
and quantised to uint8 with q = round(255 * (v + BOUND) / (2 * BOUND)), the
TSN/denseflow convention (docs/design.md, section 3). This module must not import
TensorFlow (it runs in preparation worker processes).
"""
from __future__ import annotations

import cv2
import numpy as np

BOUND = 20.0
DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """True when this OpenCV build can run TV-L1 on a CUDA device."""
    try:
        return cv2.cuda.getCudaEnabledDeviceCount() > 0 and hasattr(
            cv2.cuda, "OpticalFlowDual_TVL1_create"
        )
    except (AttributeError, cv2.error):
        return False


def resolve_device(device: str) -> str:
    """"cpu" or "cuda": where TV-L1 runs for `device` ("auto": CUDA when this OpenCV has it)."""
    if device not in DEVICES:
        raise ValueError(f"unknown flow device {device!r}; expected one of {DEVICES}")
    if device == "cuda" and not cuda_available():
        raise RuntimeError(
            "flow device 'cuda' requested but this OpenCV build has no CUDA TV-L1 "
            "(opencv-contrib-python wheels are CPU-only; build OpenCV with CUDA)"
        )
    return "cuda" if device == "cuda" or (device == "auto" and cuda_available()) else "cpu"


def _cpu_tvl1():
    if not hasattr(cv2, "optflow"):
        raise RuntimeError(
            "cv2.optflow is missing: install opencv-contrib-python-headless, "
            "not opencv-python (they cannot be installed together)"
        )
    return cv2.optflow.DualTVL1OpticalFlow_create()


def _cpu_parameters() -> dict:
    """The CPU Dual TV-L1's default parameters, which both devices use."""
    cpu = _cpu_tvl1()
    return {"tau": cpu.getTau(), "lambda": cpu.getLambda(), "theta": cpu.getTheta(),
            "scales": cpu.getScalesNumber(), "warps": cpu.getWarpingsNumber(),
            "epsilon": cpu.getEpsilon(), "scale_step": cpu.getScaleStep(),
            "iterations": cpu.getInnerIterations() * cpu.getOuterIterations(),
            "median_filtering": cpu.getMedianFiltering()}


def algorithm(device: str) -> dict:
    """What computes the flow on `device`: the resolved device, OpenCV's version and TV-L1's parameters.

    Recorded with prepared data, so a resumed or split preparation cannot
    mix two flow algorithms unnoticed.
    """
    resolved = resolve_device(device)
    parameters = _cpu_parameters()
    if resolved == "cuda":  # OpenCV's CUDA TV-L1 has no median filtering of the flow.
        parameters["median_filtering"] = 0
    return {"device": resolved, "opencv": cv2.__version__,
            **{key: round(float(value), 6) for key, value in parameters.items()}}


class TVL1:
    """Reusable TV-L1 estimator; `calc(prev, next)` returns float32[H, W, 2] (dx, dy).

    OpenCV's default parameters of the CPU Dual TV-L1 are kept (tau 0.25,
    lambda 0.15, theta 0.3, 5 scales, 5 warps, 10 x 30 iterations, median
    filter 5), as the field's extraction tools do. The CUDA estimator gets
    the same values (its own defaults differ); it cannot median-filter
    (`algorithm` records that).
    """

    def __init__(self, device: str = "auto"):
        self.device = resolve_device(device)
        if self.device == "cuda":
            p = _cpu_parameters()
            self._impl = cv2.cuda.OpticalFlowDual_TVL1_create(
                p["tau"], p["lambda"], p["theta"], p["scales"], p["warps"], p["epsilon"],
                p["iterations"], p["scale_step"])
        else:
            self._impl = _cpu_tvl1()

    def calc(self, prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
        if self.device == "cuda":
            prev_gpu, next_gpu = cv2.cuda_GpuMat(), cv2.cuda_GpuMat()
            prev_gpu.upload(prev_gray)
            next_gpu.upload(next_gray)
            return self._impl.calc(prev_gpu, next_gpu, None).download()
        return self._impl.calc(prev_gray, next_gray, None)


def quantize(flow: np.ndarray, bound: float = BOUND) -> tuple[np.ndarray, np.ndarray]:
    """Truncates flow to [-bound, bound] and maps it to uint8 x and y images."""
    q = np.round(255.0 * (np.clip(flow, -bound, bound) + bound) / (2.0 * bound))
    q = q.astype(np.uint8)
    return q[..., 0], q[..., 1]


def dequantize(q: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """Inverse of `quantize` for one channel: uint8 -> pixels (float32)."""
    return q.astype(np.float32) * (2.0 * bound / 255.0) - bound


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
