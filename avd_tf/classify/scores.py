"""Video-level scores, late fusion, accuracy and class matching (NumPy only).

Paper section 4.3: frames (or clips, or distilled images) are classified one
by one and "the average performance is reported" per video, so a video's
score is the mean of its images' softmax scores; streams are then combined by
late fusion of those video-level scores (Table 1's "OF+AVD (OF)" rows).
Section 4.5 (Table 3) tests a model of one dataset on another: classes are
matched by name and only the matched ones count.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

FUSION_METHODS = ("mean", "weighted")

VideoScores = tuple[np.ndarray, np.ndarray, np.ndarray]


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_probs(probs, what: str) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ValueError(f"{what}: expected scores of shape [N, num_classes], got {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{what}: scores hold NaN or infinite values")
    return probs


def _check_labels(labels, n: int, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{what}: expected {n} integer labels, got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(f"{what}: label {int(bad[0])} is outside [0, {num_classes})")
    return labels


def video_scores(clip_probs, video_ids, labels) -> VideoScores:
    """Averages the scores of each video's images (clips, frames).

    Returns (ids [V] str, probs [V, K], labels [V]) sorted by video id, so the
    result does not depend on the order the images came in. Ids may be str
    or bytes (as tf.data yields them). A video whose images carry two labels
    is an error: its records were written wrong.
    """
    probs = _check_probs(clip_probs, "video_scores")
    n, num_classes = probs.shape
    if n == 0:
        raise ValueError("video_scores: no image scores to average")
    ids = np.asarray([_as_str(v) for v in np.asarray(video_ids, dtype=object).ravel()])
    if ids.shape != (n,):
        raise ValueError(f"video_scores: {n} score rows but {ids.size} video ids")
    # Labels index the dataset's classes, which need not be the score columns
    # (cross-dataset runs), so only their form is checked here.
    labels = _check_labels(labels, n, np.iinfo(np.int64).max, "video_scores")
    unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    sums = np.zeros((len(unique), num_classes))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(unique))
    video_labels = labels[first]
    conflict = np.flatnonzero(video_labels[inverse] != labels)
    if conflict.size:
        i = conflict[0]
        raise ValueError(
            f"video_scores: video {str(ids[i])!r} has images labelled "
            f"{int(video_labels[inverse[i]])} and {int(labels[i])}"
        )
    return unique, sums / counts[:, None], video_labels


def _coverage(streams: Mapping[str, VideoScores], common: set) -> str:
    counts = ", ".join(f"{name} {len(s[0])} videos" for name, s in streams.items())
    return f"{counts}; {len(common)} in all of them"


def align(streams: Mapping[str, VideoScores], *, strict: bool = False):
    """Puts several streams' video scores in one video order, for fusion.

    `streams` maps a stream name to the (ids, probs, labels) of
    `video_scores`. Returns (ids, {name: probs}, labels) over the videos that
    every stream scored, sorted by id. `strict=True` makes streams that scored
    different videos an error; either way no common video is an error, and
    so is a video labelled differently by two streams. Errors give each
    stream's video count.
    """
    if not streams:
        raise ValueError("align: no streams given")
    sets = {name: set(map(_as_str, s[0])) for name, s in streams.items()}
    common = set.intersection(*sets.values())
    if not common:
        raise ValueError(f"align: the streams share no video ({_coverage(streams, common)})")
    if strict and any(len(s) != len(common) for s in sets.values()):
        raise ValueError(f"align: the streams scored different videos ({_coverage(streams, common)})")
    ids = np.asarray(sorted(common))
    aligned, labels = {}, None
    for name, (stream_ids, probs, stream_labels) in streams.items():
        stream_ids = np.asarray([_as_str(v) for v in stream_ids])
        if len(set(stream_ids)) != len(stream_ids):
            raise ValueError(f"align: stream {name!r} lists a video twice; pass it through video_scores")
        order = np.argsort(stream_ids)
        rows = order[np.searchsorted(stream_ids[order], ids)]
        aligned[name] = np.asarray(probs, dtype=np.float64)[rows]
        these = np.asarray(stream_labels, dtype=np.int64)[rows]
        if labels is None:
            labels, first = these, name
        elif np.any(these != labels):
            i = int(np.flatnonzero(these != labels)[0])
            raise ValueError(
                f"align: video {str(ids[i])!r} is labelled {int(labels[i])} by stream {first!r} "
                f"and {int(these[i])} by stream {name!r}"
            )
    return ids, aligned, labels


def fusion_weights(num_streams: int, weights: Sequence[float] | None = None, method: str = "mean") -> np.ndarray:
    """The normalised weights (summing to 1) late fusion gives each stream.

    "mean": equal weights (and `weights` must be None). "weighted": the
    given non-negative weights, normalised, e.g. (1, 1.5) gives 0.4 and 0.6,
    the usual two-stream flow-heavy weighting (TSN).
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; expected one of {', '.join(FUSION_METHODS)}")
    if num_streams < 1:
        raise ValueError("fusion needs at least one stream")
    if method == "mean":
        if weights is not None:
            raise ValueError("fusion weights were given with method 'mean'; use method 'weighted'")
        return np.full(num_streams, 1.0 / num_streams)
    if weights is None:
        raise ValueError("method 'weighted' needs one weight per stream")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_streams,):
        raise ValueError(f"method 'weighted' needs {num_streams} weights, got {len(w)}: {list(weights)}")
    if np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"fusion weights must be non-negative and not all zero, got {list(weights)}")
    return w / w.sum()


def fuse(probs: Sequence, weights: Sequence[float] | None = None, method: str = "mean") -> np.ndarray:
    """Late fusion: the weighted mean of aligned [V, K] softmax scores.

    The arrays must be in the same video order (see `align`). With
    normalised weights the result is still a distribution per video.
    """
    arrays = [_check_probs(p, f"fuse: stream {i}") for i, p in enumerate(probs)]
    w = fusion_weights(len(arrays), weights, method)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"fuse: the streams' scores differ in shape: {sorted(shapes)}; align them first")
    return np.tensordot(w, np.stack(arrays), axes=1)


def topk_accuracy(probs, labels, k: int) -> float:
    """Share of rows whose label is among the k highest scores.

    Ties go to the lower class index (as np.argmax), so equal scores give the
    same answer on every run; k larger than the class count counts every row
    as correct.
    """
    probs = _check_probs(probs, "topk_accuracy")
    if k < 1:
        raise ValueError(f"topk_accuracy: k must be at least 1, got {k}")
    if probs.shape[0] == 0:
        raise ValueError("topk_accuracy: no scores")
    labels = _check_labels(labels, probs.shape[0], probs.shape[1], "topk_accuracy")
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] counts: row = true class, column = predicted."""
    pred = np.asarray(pred)
    labels = _check_labels(labels, len(labels), num_classes, "confusion_matrix")
    pred = _check_labels(pred, len(labels), num_classes, "confusion_matrix (predictions)")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    return matrix


def normalise_class_name(name: str) -> str:
    """"ApplyEyeMakeup", "apply_eye_makeup" and "apply eye makeup" -> "applyeyemakeup"."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _keyed(names: Sequence[str], which: str) -> dict[str, int]:
    keyed = {}
    for i, name in enumerate(names):
        key = normalise_class_name(name)
        if key in keyed:
            raise ValueError(
                f"match_classes: {which} classes {names[keyed[key]]!r} and {name!r} "
                "have the same name once case and separators are ignored"
            )
        keyed[key] = i
    return keyed


def match_classes(a_names: Sequence[str], b_names: Sequence[str]) -> dict[int, int]:
    """Maps class indices of dataset B to those of dataset A with the same name.

    Names match when equal after lower-casing and dropping everything but
    letters and digits; nothing looser ("PullUps" and "pullup" do not match:
    guessing plurals or synonyms would silently change what is measured).
    Returns {b_index: a_index}, possibly empty.
    """
    a_keys = _keyed(a_names, "model")
    b_keys = _keyed(b_names, "test")
    return {b: a_keys[key] for key, b in sorted(b_keys.items(), key=lambda kv: kv[1]) if key in a_keys}


def mapping_from_pairs(pairs: Mapping[str, str], a_names: Sequence[str], b_names: Sequence[str]) -> dict[int, int]:
    """A user's {B class name: A class name} map as {b_index: a_index}.

    For cross-dataset runs whose classes are related but named differently
    (names compared as in `match_classes`). Unknown names and two B classes
    sent to one A class are errors.
    """
    a_keys = _keyed(a_names, "model")
    b_keys = _keyed(b_names, "test")
    mapping, taken = {}, {}
    for b_name, a_name in pairs.items():
        b, a = b_keys.get(normalise_class_name(b_name)), a_keys.get(normalise_class_name(a_name))
        if b is None:
            raise ValueError(f"label map: {b_name!r} is not a class of the test data")
        if a is None:
            raise ValueError(f"label map: {a_name!r} is not a class of the model")
        if a in taken:
            raise ValueError(f"label map: {taken[a]!r} and {b_name!r} both map to {a_name!r}")
        mapping[b], taken[a] = a, b_name
    return dict(sorted(mapping.items()))


def restrict_to_matches(probs, labels, mapping: Mapping[int, int]):
    """Scores of a model of dataset A on videos of dataset B (paper Table 3).

    Keeps the videos whose B class has a match in `mapping` ({b: a}), and
    A's scores for the matched classes only, renormalised per video. The
    matched classes are numbered in B's class order. Returns
    (keep [V] bool, probs [V', M], labels [V'] in 0..M-1, matched b indices [M]).
    """
    if not mapping:
        raise ValueError("no class of the test data matches a class of the model")
    probs = _check_probs(probs, "restrict_to_matches")
    b_indices = np.asarray(sorted(mapping), dtype=np.int64)
    a_indices = np.asarray([mapping[b] for b in b_indices], dtype=np.int64)
    if a_indices.max() >= probs.shape[1]:
        raise ValueError(f"restrict_to_matches: class {a_indices.max()} is beyond the model's {probs.shape[1]} outputs")
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.isin(labels, b_indices)
    kept = probs[keep][:, a_indices]
    total = kept.sum(axis=1, keepdims=True)
    # A video whose matched classes all score 0 keeps zeros: ranked by class order.
    kept = np.divide(kept, total, out=np.zeros_like(kept), where=total > 0)
    return keep, kept, np.searchsorted(b_indices, labels[keep]), b_indices
