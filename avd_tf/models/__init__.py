"""AVD's networks (paper section 3): encoder E, decoder D, teacher T, and the AVD model."""
from avd_tf.models.avd import AVD
from avd_tf.models.decoder import Decoder
from avd_tf.models.encoder import Encoder
from avd_tf.models.presets import (
    PRESETS,
    STREAM_CHANNELS,
    AVDConfig,
    build_avd,
    compile_avd,
    get_preset,
)
from avd_tf.models.teacher import Teacher

__all__ = [
    "AVD",
    "AVDConfig",
    "Decoder",
    "Encoder",
    "PRESETS",
    "STREAM_CHANNELS",
    "Teacher",
    "build_avd",
    "compile_avd",
    "get_preset",
]
