"""avd_tf.pipeline.stages: reuse of finished stages, refusal of changed settings, stage times."""
from __future__ import annotations

import json

import pytest

from avd_tf.pipeline.stages import Runner, Stage, StageError, StageTimings


def _stage(tmp_path, name, calls, record=None, **kw):
    out = tmp_path / name / "done.txt"

    def action():
        calls.append(name)
        out.parent.mkdir(exist_ok=True)
        out.write_text(name)

    marker = str(tmp_path / ".stages" / f"{name}.json") if record is not None else None
    return Stage(name, [str(out)], str(out.parent), action=action, record=record, marker=marker, **kw)


def test_finished_stages_are_skipped_resumable_ones_called_and_times_kept(tmp_path):
    calls, lines = [], []
    timings = StageTimings(str(tmp_path / "timings.json"), log=lines.append)
    stages = [_stage(tmp_path, "a", calls, record={"size": 1}),
              _stage(tmp_path, "b", calls, always_run=True),
              Stage("c", [], str(tmp_path), action=lambda: calls.append("c"))]
    Runner(log=lines.append, timings=timings).run(stages)
    assert calls == ["a", "b", "c"] and lines[0] == '[a] a {"size": 1}'
    assert json.loads((tmp_path / ".stages" / "a.json").read_text())["record"] == {"size": 1}
    timings.close()

    calls.clear()
    lines.clear()
    Runner(log=lines.append, timings=StageTimings(str(tmp_path / "timings.json"), log=lines.append)).run(stages)
    # a is skipped; b resumes itself, so it is called but keeps its first time; c has no outputs.
    assert calls == ["b", "c"]
    assert "[a] done already, skipped" in lines and any(line.startswith("b: reused") for line in lines)

    with pytest.raises(StageError, match=r"a.json: a was run with other settings \(size differ"):
        Runner(log=lines.append).run([_stage(tmp_path, "a", calls, record={"size": 2})])
    assert calls == ["b", "c"]
    # A stage that is cheap to redo is redone instead.
    Runner(log=lines.append).run([_stage(tmp_path, "a", calls, record={"size": 2}, redo_on_change=True)])
    assert calls == ["b", "c", "a"]
