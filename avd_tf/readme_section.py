"""Generated figures written into a marked section of a Markdown file (README tables).

A section is the text between the lines `<!-- NAME: begin -->` and
`<!-- NAME: end -->`. The markers must already be in the file, so a person
chooses where generated text goes; the programs (avd-bench --readme,
avd-demo --readme) only replace what is between them.
"""
from __future__ import annotations

import os


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_section(path: str, name: str, text: str) -> None:
    """Replaces the body of section `name` in `path` with `text` (atomically)."""
    begin, end = markers(name)
    with open(path, encoding="utf-8") as f:
        content = f.read()
    start, stop = content.find(begin), content.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path}: no {name} section; add the lines {begin!r} and {end!r} "
                         "where the generated text should go")
    if not text.endswith("\n"):
        text += "\n"
    updated = content[: start + len(begin)] + "\n" + text + content[stop:]
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(updated)
    os.replace(temporary, path)
