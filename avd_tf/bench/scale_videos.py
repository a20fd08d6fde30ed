"""Tiny generated videos in the UCF101 layout, for `avd_tf.bench.scale` at N = 1k ... 13,320.

The layout is UCF101's: 101 classes (fewer for tests), 25 groups,
`videos/<Class>/v_<Class>_gXX_cYY.avi`, and split files sorted by class as
the real trainlist01.txt is. Video j of
a class is clip 1 + j // 25 of group 1 + j % 25, so the first n videos of
every class spread over the groups; groups 3, 6, ..., 24 are the test split
(8 of 25, 32 %; UCF101's split 1 tests 28 % of its videos).

`write_videos` writes the videos of the largest N once; `write_splits` lists
the first N // 101 (or one more) of each class for a smaller N, so every N
prepares the same files. The clips of a group film one scene
(`avd_tf.video.synthetic.render_video`), as UCF101's clips of a group cut
one longer video; each class moves as one of the generator's 12 motions.
"""
from __future__ import annotations

import os

from avd_tf.video import synthetic

NUM_CLASSES = 101
GROUPS = 25
TEST_EVERY = 3  # group g is a test group when g % TEST_EVERY == 0
# Our choice: the smallest frames the generator draws and a clip of 8, so
# that 13,320 videos are written and prepared in minutes on 2 cores.
SIZE = 16
FRAMES = 8


def class_names(classes: int = NUM_CLASSES) -> list[str]:
    motions = synthetic.motion_classes()
    return [f"{motions[k % len(motions)]}{k:03d}" for k in range(classes)]


def videos_per_class(num_videos: int, classes: int = NUM_CLASSES) -> list[int]:
    """How many of the `num_videos` videos each class gets: as even as possible, earlier first."""
    if num_videos < classes:
        raise ValueError(f"need at least {classes} videos (one per class), got {num_videos}")
    base, extra = divmod(num_videos, classes)
    return [base + (1 if k < extra else 0) for k in range(classes)]


def _relative_path(name: str, index: int) -> tuple[str, int]:
    group, clip = 1 + index % GROUPS, 1 + index // GROUPS
    if clip > 99:
        raise ValueError(f"class {name}: more than {99 * GROUPS} videos do not fit cYY names")
    return f"{name}/{synthetic.video_name(name, group, clip)}", group


def write_videos(video_dir: str, num_videos: int, classes: int = NUM_CLASSES, size: int = SIZE,
                 frames: int = FRAMES) -> None:
    """Writes the first `num_videos` videos under `video_dir`; complete ones already there are kept.

    Classes with the same motion share its scenes: 12 motions x 25 groups
    are rendered, not one scene per class and group (the cost measured is
    the files', not their content's).
    """
    motions = synthetic.motion_classes()
    scenes = {}
    counts = videos_per_class(num_videos, classes)
    for label, (name, count) in enumerate(zip(class_names(classes), counts)):
        motion = motions[label % len(motions)]
        for index in range(count):
            relative, group = _relative_path(name, index)
            path = os.path.join(video_dir, relative)
            if os.path.exists(path):
                continue
            if (motion, group) not in scenes:
                scenes[motion, group] = synthetic.render_video(motion, group, frames, size)
            # Renamed when complete: a killed run leaves no truncated video to skip next time.
            partial = f"{path}.partial{synthetic.VIDEO_EXTENSION}"
            synthetic.write_video(partial, scenes[motion, group])
            os.replace(partial, path)


def write_splits(split_dir: str, num_videos: int,
                 classes: int = NUM_CLASSES) -> dict[str, int]:
    """classInd.txt, trainlist01.txt, testlist01.txt of the first `num_videos`; returns counts."""
    os.makedirs(split_dir, exist_ok=True)
    names = class_names(classes)
    train, test = [], []
    for label, (name, count) in enumerate(zip(names, videos_per_class(num_videos, classes))):
        for index in range(count):
            relative, group = _relative_path(name, index)
            if group % TEST_EVERY == 0:
                test.append(relative)
            else:
                train.append(f"{relative} {label + 1}")
    files = {
        "classInd.txt": [f"{i + 1} {name}" for i, name in enumerate(names)],
        "trainlist01.txt": train,
        "testlist01.txt": test,
    }
    for file_name, lines in files.items():
        with open(os.path.join(split_dir, file_name), "w", encoding="ascii", newline="") as f:
            f.write("".join(f"{line}\r\n" for line in lines))
    return {"train": len(train), "test": len(test)}
