"""Progress that a person can read: redrawn bars on a terminal, plain lines in a log.

A redrawn bar (tqdm's, Keras' `verbose=1`) writes carriage returns and
colour codes; in a file (a batch job, `> log`) every redraw piles onto one
enormous line. So bars are drawn only when stdout and stderr are both
terminals (Keras writes to stdout, tqdm to stderr) and the program's
--progress flag allows them. Otherwise Keras prints one line per epoch and
`progress_bar` one line every few percent, on stderr where tqdm's bar would
be, so that a program's stdout (often one JSON line) stays as it was.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable

import tqdm


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def interactive(enabled: bool = True) -> bool:
    """True when progress may be redrawn in place: `enabled` and a terminal on stdout and stderr."""
    return enabled and _is_terminal(sys.stdout) and _is_terminal(sys.stderr)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def keras_verbose(enabled: bool = True) -> int:
    """`model.fit`'s verbose: 1 (a bar) when interactive, 2 (one line per epoch) otherwise."""
    return 1 if interactive(enabled) else 2


class LineProgress:
    """tqdm's `update`, `set_postfix`, `write` and `close` as one plain line every `every` percent.

    Without a total, a line at 1, 2, 4, 8, ... items. `write` prints to
    stdout, as tqdm's does.
    """

    def __init__(self, total: int | None, *, desc: str, unit: str, initial: int = 0,
                 every: float = 5.0, log: Callable[[str], None] = _to_stderr):
        self.total, self.desc, self.unit, self.every, self.log = total, desc, unit, every, log
        self.n = self._logged = initial
        self._start = time.monotonic()
        self._postfix = ""
        self._next = self._threshold(initial)

    def _threshold(self, n: int) -> float:
        if self.total:
            return (math.floor(100.0 * n / self.total / self.every) + 1) * self.every * self.total / 100.0
        return 2 ** math.floor(math.log2(n)) * 2 if n > 0 else 1

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next:
            self._line()

    def set_postfix(self, **values) -> None:
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def write(self, message: str) -> None:
        print(message)

    def _line(self) -> None:
        count = f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"
        if self.total:
            count += f" ({100.0 * self.n / self.total:.0f}%)"
        extra = f", {self._postfix}" if self._postfix else ""
        self.log(f"{self.desc}: {count}, {time.monotonic() - self._start:.0f} s{extra}")
        self._logged = self.n
        self._next = self._threshold(self.n)

    def close(self) -> None:
        """Logs the final count unless the last line already showed it."""
        if self.n != self._logged:
            self._line()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, *, desc: str, unit: str, initial: int = 0, enabled: bool = True,
                 log: Callable[[str], None] = _to_stderr):
    """A tqdm bar when `interactive(enabled)`, else a `LineProgress` logging through `log`."""
    if interactive(enabled):
        return tqdm.tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, log=log)
