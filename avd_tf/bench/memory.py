"""Resident memory of this process, read from /proc (Linux; no psutil needed)."""
from __future__ import annotations

STATUS = "/proc/self/status"


def _status_kb(field: str) -> int:
    try:
        with open(STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError as error:
        raise OSError(f"{STATUS}: cannot read memory figures ({error}); Linux only") from error
    raise ValueError(f"{STATUS}: no {field} line")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (VmHWM), in MiB.

    The same figure as `resource.getrusage(RUSAGE_SELF).ru_maxrss`; read in
    the process that trained, so nothing else that process's parent ran is
    counted (RUSAGE_CHILDREN would report the largest of all its children).
    """
    return _status_kb("VmHWM") / 1024.0


def rss_mb() -> float:
    """This process's current resident set size (VmRSS), in MiB."""
    return _status_kb("VmRSS") / 1024.0
