"""Mirror classes: which class a horizontally flipped video belongs to.

A flip keeps the class of most actions, but not of a class defined by a
direction: a mirrored "TranslateLeft" video is a "TranslateRight" one. A
dataset declares such pairs with MMAction2's `flip_label_map` convention, a
JSON object mapping a class to its mirror class, e.g.

    {"TranslateLeft": "TranslateRight", "RotateCW": "RotateCCW"}

Keys and values are class names or 0-based label indices (an integer, or a
string of digits that is not a class name). The map is made symmetric (A -> B
implies B -> A); a class mapped to two different classes is an error.
Classes it does not name are their own mirror. In canonical form (what
manifest.json records) it is {"<index>": index, ...} in both directions.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from avd_tf.layout import MANIFEST

KEY = "flip_label_map"


def _index(value, classes: Sequence[str], where: str) -> int:
    if isinstance(value, str) and value in classes:
        return list(classes).index(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(classes):
            return value
        raise ValueError(f"{where}: class index {value} is out of range "
                         f"(the dataset has {len(classes)} classes, 0..{len(classes) - 1})")
    shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
    raise ValueError(f"{where}: unknown class {value!r} (classes: {shown})")


def check_flip_label_map(mapping, classes: Sequence[str], where: str) -> dict[int, int]:
    """A flip_label_map (names or indices) -> {index: mirror index}, symmetric.

    `where` (a file name) starts every error message. Identity pairs are
    dropped: a class that is its own mirror needs no entry.
    """
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: a flip_label_map must be a JSON object mapping a class to "
                         f"its mirror class, got {type(mapping).__name__}")
    result: dict[int, int] = {}
    for key, value in mapping.items():
        a, b = _index(key, classes, where), _index(value, classes, where)
        for source, target in ((a, b), (b, a)):
            if result.get(source, target) != target:
                raise ValueError(
                    f"{where}: not a pairing: class {classes[source]!r} would mirror to both "
                    f"{classes[result[source]]!r} and {classes[target]!r}")
            result[source] = target
    return {a: b for a, b in sorted(result.items()) if a != b}


def read_flip_label_map(path: str, classes: Sequence[str]) -> dict[int, int]:
    """The flip_label_map JSON file at `path`, checked against `classes` (see the module)."""
    try:
        with open(path) as f:
            mapping = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such flip_label_map file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    return check_flip_label_map(mapping, classes, path)


def to_json(mapping: dict[int, int]) -> dict[str, int]:
    """The canonical form manifest.json records: {"<index>": index}."""
    return {str(a): int(b) for a, b in sorted(mapping.items())}


def flip_permutation(mapping: dict[int, int] | None, num_classes: int) -> list[int]:
    """The mirror class of each class 0..num_classes-1 (itself when unmapped)."""
    mirror = list(range(num_classes))
    for a, b in (mapping or {}).items():
        mirror[a] = b
    return mirror


def dataset_flip_label_map(data_dir: str, path: str | None = None) -> dict[int, int]:
    """The mirror classes of prepared `data_dir`: the JSON file `path` if given, else the manifest's.

    `path` overrides what avd-prepare recorded (for a dataset prepared
    without --flip_label_map); {} when neither declares mirror classes.
    """
    manifest_path = os.path.join(data_dir, MANIFEST)
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest_path}: missing (avd-prepare writes it)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{manifest_path}: not valid JSON ({error})") from None
    classes = list(manifest.get("classes") or [])
    if path:
        return read_flip_label_map(path, classes)
    return check_flip_label_map(manifest.get(KEY, {}), classes, manifest_path)


__all__ = [
    "check_flip_label_map",
    "dataset_flip_label_map",
    "flip_permutation",
    "read_flip_label_map",
    "to_json",
]
