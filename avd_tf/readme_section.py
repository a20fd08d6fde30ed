"""Generated figures written into a marked section of a Markdown file (README tables).

A section is the text between the lines `<!-- NAME: begin -->` and
`<!-- NAME: end -->`. The markers must already be in the file, so a person
chooses where generated text goes; the programs (avd-bench --readme,
avd-demo --readme) only replace what is between them.
"""
from __future__ import annotations

import os
import shutil

from avd_tf.files import write_text_atomically


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
    write_text_atomically(path, updated)


def replace_section_with_image(path: str, name: str, text: str, image: str, image_name: str) -> str:
    """`replace_section` with `text` and the PNG `image`, copied to docs/images/`image_name` beside `path`.

    Returns the copy's path; the section links to it relatively.
    """
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), "docs", "images")
    os.makedirs(folder, exist_ok=True)
    copy = os.path.join(folder, image_name)
    shutil.copyfile(image, copy)
    replace_section(path, name, text.rstrip("\n") + f"\n\n![{name}](docs/images/{image_name})\n")
    return copy
