"""Which TF ops a profiled run spent its time in, read from the profiler's trace.

`tf.profiler.experimental.start(logdir)` / `stop()` write an XSpace protobuf
(`plugins/profile/<run>/<host>.xplane.pb`), the file TensorBoard's profile
plugin reads. Its host plane holds one event per op execution on the
executor threads, named "<node name>:<op type>"; summing their durations by
op type gives TensorBoard's "TF op statistics" without TensorBoard. Ops run
concurrently (inter-op parallelism), so the summed time may exceed the
wall-clock time; shares are of the summed op time.
"""
from __future__ import annotations

import glob
import os

from tensorflow.tsl.profiler.protobuf import xplane_pb2

HOST_PLANE = "/host:CPU"


def latest_trace(logdir: str) -> str:
    """The newest .xplane.pb file under `logdir`."""
    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"{logdir}: no profiler trace (*.xplane.pb) found")
    return max(paths, key=os.path.getmtime)


def op_events(path: str):
    """(node name, op type, seconds) of every op execution in the trace at `path`."""
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    for plane in space.planes:
        if plane.name != HOST_PLANE:
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Op executions are "<node>:<type>"; other events (executor
                # bookkeeping, Python calls) have no type, a C++ "A::B" name
                # or spaces ("EagerLocalExecute: <function>").
                if ":" in name and "::" not in name and " " not in name:
                    node, op_type = name.rsplit(":", 1)
                    yield node, op_type, event.duration_ps * 1e-12


def op_time_summary(logdir: str, top: int = 12) -> dict:
    """The op types and the single ops that took the most time in the newest trace."""
    by_type, by_node, total = {}, {}, 0.0
    for node, op_type, seconds in op_events(latest_trace(logdir)):
        by_type[op_type] = by_type.get(op_type, 0.0) + seconds
        by_node[f"{node}:{op_type}"] = by_node.get(f"{node}:{op_type}", 0.0) + seconds
        total += seconds
    if total == 0:
        raise ValueError(f"{logdir}: the trace holds no op executions")

    def ranked(table):
        items = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [{"name": k, "seconds": v, "share": v / total} for k, v in items]

    return {"op_seconds": total, "op_types": ranked(by_type), "ops": ranked(by_node)}
