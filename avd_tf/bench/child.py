"""One measurement in a fresh Python process, so that its peak memory is its own and
TensorFlow's state does not carry over from one measurement to the next."""
from __future__ import annotations

import json
import os
import subprocess
import sys

_CHILD = ("import importlib, json, sys; module, name = sys.argv[1].rsplit('.', 1); "
          "print(json.dumps(getattr(importlib.import_module(module), name)"
          "(**json.loads(sys.stdin.read()))))")


def run_in_child(function: str, kwargs: dict, what: str, *, env: dict | None = None,
                 timeout: float | None = None):
    """`function(**kwargs)` ("package.module.name") in a fresh Python; its JSON result.

    The child inherits this process's environment (TF_ENABLE_ONEDNN_OPTS
    included) updated by `env`. A failure is a RuntimeError naming `what`,
    with the end of the child's stderr.
    """
    run = subprocess.run([sys.executable, "-c", _CHILD, function], capture_output=True,
                         text=True, input=json.dumps(kwargs), timeout=timeout,
                         env={"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, **(env or {})})
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit code {run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(lines[-1])


__all__ = ["run_in_child"]
