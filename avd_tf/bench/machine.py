"""What machine a figure was measured on (read from /proc/cpuinfo; no TensorFlow import)."""
from __future__ import annotations

import platform

# Vector extensions that decide which TF CPU kernels run fast (oneDNN, bf16).
VECTOR_FLAGS = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"}


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    flags = _cpuinfo_field("flags")
    return sorted(VECTOR_FLAGS & set(flags.split())) if flags else []
