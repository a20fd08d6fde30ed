"""tf.data input pipelines: prepared shards -> clips, frames and AVD batches."""
from avd_tf.inputs.augment import (
    DEFAULT_SCALE_RANGE,
    augment_clip,
    center_crop_resize,
    flip_left_right,
    random_crop_resize,
    random_flip,
    to_signed_unit,
)
from avd_tf.inputs.clips import (
    avd_dataset,
    clip_dataset,
    frame_dataset,
    measure_throughput,
    video_dataset,
)
from avd_tf.inputs.sampling import clip_indices, clip_span, evenly_spaced_starts, random_starts
from avd_tf.inputs.shards import class_names, list_shards, num_videos, read_manifest

__all__ = [
    "DEFAULT_SCALE_RANGE",
    "augment_clip",
    "avd_dataset",
    "center_crop_resize",
    "class_names",
    "clip_dataset",
    "clip_indices",
    "clip_span",
    "evenly_spaced_starts",
    "flip_left_right",
    "frame_dataset",
    "list_shards",
    "measure_throughput",
    "num_videos",
    "random_crop_resize",
    "random_flip",
    "random_starts",
    "read_manifest",
    "to_signed_unit",
    "video_dataset",
]
