"""Named AVD configurations ("paper", "small") and the functions that build models from them."""
from __future__ import annotations

import dataclasses
import math

import keras

from avd_tf.models.avd import AVD, GEN_LOSSES, REC_LOSSES
from avd_tf.models.decoder import Decoder
from avd_tf.models.encoder import Encoder
from avd_tf.models.teacher import Teacher
# Input channels per clip stream (paper Table 1): RGB frames, or TV-L1 flow x and y.
from avd_tf.streams import CLIP_CHANNELS as STREAM_CHANNELS
LR_SCHEDULES = ("constant", "cosine")
WARMUP_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class AVDConfig:
    """Everything needed to build and compile an AVD model.

    `temporal_strides` are E's, in E's layer order (D uses them reversed);
    their product must equal `num_frames` so that D rebuilds clips of the
    length E reads. `encoder_filters` / `decoder_filters` are the widths of
    all layers but the last (3 image channels for E, the stream's channels
    for D). `lam` is Eq. 3's lambda for RGB clips and `flow_lam` for flow
    clips (`lam_for`); `ed_lr` / `t_lr` and `beta_1` set the Adam optimizers
    of E+D and T. `rec_loss` ("sum", Eq. 1 as written, or "mean") and
    `gen_loss` ("nonsaturating" or "saturating") choose the forms of Eq. 1
    and of E's side of Eq. 2 (see `AVD`); `lam` is meant for the chosen
    `rec_loss`.
    """

    num_frames: int
    image_size: int
    encoder_filters: tuple[int, ...]
    decoder_filters: tuple[int, ...]
    temporal_strides: tuple[int, ...]
    teacher_units: tuple[int, ...]
    teacher_input_resolution: int
    lam: float
    flow_lam: float
    ed_lr: float
    t_lr: float
    beta_1: float
    batch_size: int
    rec_loss: str = "sum"
    gen_loss: str = "nonsaturating"
    lr_schedule: str = "constant"

    def __post_init__(self):
        # Frozen dataclass: normalise sequences given as lists (e.g. from flags).
        for key in ("encoder_filters", "decoder_filters", "temporal_strides", "teacher_units"):
            object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
        layers = len(self.temporal_strides)
        if len(self.encoder_filters) + 1 != layers or len(self.decoder_filters) + 1 != layers:
            raise ValueError(
                f"AVDConfig: {layers} temporal strides need {layers - 1} encoder and decoder "
                f"filters, got {self.encoder_filters} and {self.decoder_filters}"
            )
        if math.prod(self.temporal_strides) != self.num_frames:
            raise ValueError(
                f"AVDConfig: temporal strides {self.temporal_strides} fold "
                f"{math.prod(self.temporal_strides)} frames, not num_frames={self.num_frames}"
            )
        if self.image_size % self.teacher_input_resolution:
            raise ValueError(
                f"AVDConfig: image_size {self.image_size} is not a multiple of "
                f"teacher_input_resolution {self.teacher_input_resolution}"
            )
        for key in ("lam", "flow_lam"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"AVDConfig: {key} must be in [0, 1], got {getattr(self, key)}")
        if self.rec_loss not in REC_LOSSES:
            raise ValueError(
                f"AVDConfig: rec_loss must be one of {REC_LOSSES}, got {self.rec_loss!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"AVDConfig: lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if self.gen_loss not in GEN_LOSSES:
            raise ValueError(
                f"AVDConfig: gen_loss must be one of {GEN_LOSSES}, got {self.gen_loss!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"AVDConfig: batch_size must be positive, got {self.batch_size}")

    def lam_for(self, stream: str) -> float:
        """Eq. 3's lambda for clips of `stream` ("rgb" or "flow")."""
        return self.flow_lam if stream == "flow" else self.lam


def stream_overrides(stream: str, overrides: dict) -> dict:
    """Overrides in which `lam` means the lambda of `stream`'s clips.

    Callers (avd-train's --lam, `build_avd(..., lam=...)`) give one lambda
    for the stream they train; for flow that is the `flow_lam` field.
    """
    if stream == "flow" and overrides.get("lam") is not None:
        overrides = dict(overrides)
        overrides["flow_lam"] = overrides.pop("lam")
    return overrides


PRESETS = {
    # The paper's setting (section 4.2, docs/design.md, section 2): 32-frame 112x112
    # clips, five stride-2 layers. Widths are ours: E never downsamples in
    # space, so each layer costs T' x 112 x 112 x 75 x C_in x C_out
    # multiply-adds; C3D-like widths (64-128-256-256) would take about
    # 0.6 TFLOP per clip in E alone, 32-64-64-64 about 80 GFLOP with under
    # 1M weights (D mirrors it).
    "paper": AVDConfig(
        num_frames=32,
        image_size=112,
        encoder_filters=(32, 64, 64, 64),
        decoder_filters=(64, 64, 64, 32),
        temporal_strides=(2, 2, 2, 2, 2),
        teacher_units=(1024, 512, 256, 128),
        # 112 = 4 x 28: a 4x4 average pooling keeps T's first layer at 2.4M weights.
        teacher_input_resolution=28,
        # The paper gives no lambda. Chosen with avd-ablate on held-out
        # training videos of a demo draw (small preset, Eq. 1 summed, 3
        # seeds; README "The ablation behind the presets"): lambdas 0.1,
        # 0.5, 0.95 and 1.0 gave top-1 within one another's seed spread;
        # 0.1 tied for the best mean with the smallest spread, and is the
        # only one where T's gradient at E's output is not negligible (about
        # a quarter of reconstruction's; 0.002 at 0.95). Not measured at
        # this size.
        lam=0.1,
        # Not ablated: flow's summed reconstruction error is far smaller
        # than RGB's (most of a flow field is near zero), so the same lambda
        # would hand E to the teacher; at 0.999 T's gradient at E's output
        # is about 0.2% of reconstruction's on the demo.
        flow_lam=0.999,
        # Adam 2e-4, beta_1 0.5: DCGAN practice (the paper gives no values).
        ed_lr=2e-4,
        t_lr=2e-4,
        beta_1=0.5,
        batch_size=16,  # ours: the paper does not say
        # Warm-up then cosine decay: measured on the small preset, the
        # constant rate's last epochs swung by up to 1.8 dB of test PSNR
        # from epoch to epoch; the schedule ends on a settled model.
        lr_schedule="cosine",
    ),
    # CPU-friendly, used by the demo: 8-frame 32x32 clips folded by three
    # stride-2 layers first (cheaper than folding late). Chosen with
    # avd-ablate on held-out training videos of a demo draw (3 seeds,
    # README "The ablation behind the presets"): widths 16-32-32-32 against
    # 8-16-16-16 and 16-frame clips at 1500 steps. The wider layers carried
    # more motion (motion gain, R^2) and classified better, and they are the
    # narrowest whose channels fill AVX-512's 16 float32 lanes: train MFU
    # 0.42 -> above 0.6 in avd-bench, at 2.2x the FLOPs per clip. 16 frames
    # at this size halved the clips per second and did not help. 32 px
    # crops of the 40 px demo frames: 40 px clips were within one held-out
    # video of them at 1.56x the arithmetic (README "Training length and
    # clip side at the chosen widths").
    "small": AVDConfig(
        num_frames=8,
        image_size=32,
        encoder_filters=(16, 32, 32, 32),
        decoder_filters=(32, 32, 32, 16),
        temporal_strides=(2, 2, 2, 1, 1),
        teacher_units=(256, 128, 64, 32),
        teacher_input_resolution=32,
        lam=0.1,  # see "paper"
        flow_lam=0.999,
        # 1e-3 instead of 2e-4: measured on the demo data, 600 steps reach
        # 17.9 dB test PSNR instead of 16.4 dB (3e-3: 16.5 dB).
        ed_lr=1e-3,
        t_lr=2e-4,
        beta_1=0.5,
        batch_size=8,
        lr_schedule="cosine",
    ),
}


def strides_for(num_frames: int, layers: int) -> tuple[int, ...]:
    """E's temporal strides folding `num_frames` frames with `layers` layers.

    Our rule: the first log2(num_frames) layers have stride 2, the rest 1
    (folding early is cheaper, as in the "small" preset).
    """
    folds = int(num_frames).bit_length() - 1
    if num_frames < 1 or 2**folds != num_frames or folds > layers:
        raise ValueError(
            f"num_frames must be a power of two up to 2**{layers} = {2**layers} for E's "
            f"{layers} layers of temporal stride 1 or 2, got {num_frames}"
        )
    return (2,) * folds + (1,) * (layers - folds)


def teacher_resolution_for(image_size: int, preferred: int) -> int:
    """The largest divisor of `image_size` up to `preferred`: T's input after average pooling."""
    return max(d for d in range(1, min(image_size, preferred) + 1) if image_size % d == 0)


def get_preset(preset: str | AVDConfig = "small", **overrides) -> AVDConfig:
    """Preset `preset` (a name or an AVDConfig) with fields replaced, e.g. `get_preset("small", lam=1.0)`.

    The one place overrides are resolved. None values are ignored (unset
    flags). Overriding `num_frames` without `temporal_strides` derives the
    strides (`strides_for`); overriding `image_size` without
    `teacher_input_resolution` lets T see the whole image if the preset's T
    does (no pooling, as in "small"), else keeps the preset's resolution
    when it divides the size, or the largest divisor below it
    (`teacher_resolution_for`).
    """
    if isinstance(preset, AVDConfig):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"unknown AVD preset {preset!r}; known presets: {sorted(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fields = {field.name for field in dataclasses.fields(AVDConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown AVD config keys {unknown}; valid keys: {sorted(fields)}")
    if "num_frames" in overrides and "temporal_strides" not in overrides:
        overrides["temporal_strides"] = strides_for(
            int(overrides["num_frames"]), len(base.temporal_strides)
        )
    if "image_size" in overrides and "teacher_input_resolution" not in overrides:
        size = int(overrides["image_size"])
        if size < 1:
            raise ValueError(f"AVDConfig: image_size must be positive, got {size}")
        whole = base.teacher_input_resolution == base.image_size
        overrides["teacher_input_resolution"] = (
            size if whole else teacher_resolution_for(size, base.teacher_input_resolution))
    return dataclasses.replace(base, **overrides)


def build_avd(
    preset: str | AVDConfig = "small",
    stream: str = "rgb",
    native_strides: bool | None = None,
    **overrides,
) -> AVD:
    """Builds (creates the weights of) an uncompiled AVD model for `stream` ("rgb" or "flow").

    Clips have shape (B, num_frames, image_size, image_size, C), C = 3 for
    RGB and 2 for flow; see `compile_avd` for the optimizers.
    `native_strides` chooses E's and D's strided-kernel implementation
    (`Encoder`; None: the fastest on this machine).
    """
    if stream not in STREAM_CHANNELS:
        raise ValueError(f"unknown stream {stream!r}; expected one of {sorted(STREAM_CHANNELS)}")
    config = get_preset(preset, **stream_overrides(stream, overrides))
    channels = STREAM_CHANNELS[stream]
    model = AVD(
        encoder=Encoder(
            config.encoder_filters,
            config.temporal_strides,
            native_strides=native_strides,
            name="encoder",
        ),
        decoder=Decoder(
            config.decoder_filters,
            config.temporal_strides[::-1],
            out_channels=channels,
            native_strides=native_strides,
            name="decoder",
        ),
        teacher=Teacher(config.teacher_units, config.teacher_input_resolution, name="teacher"),
        lam=config.lam_for(stream),
        rec_loss=config.rec_loss,
        gen_loss=config.gen_loss,
        name=f"avd_{stream}",
    )
    model.build((None, config.num_frames, config.image_size, config.image_size, channels))
    return model


def learning_rate(peak: float, schedule: str, total_steps: int | None):
    """A learning rate for Adam: `peak` throughout ("constant"), or "cosine".

    "cosine": linear warm-up from 0 over the first WARMUP_FRACTION of
    `total_steps`, then cosine decay to 0 at the last step (our choice, see
    AVDConfig.lr_schedule). Without `total_steps` (a model compiled outside
    training) the rate is constant.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "constant" or not total_steps:
        return peak
    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total_steps - warmup), warmup_target=peak, warmup_steps=warmup
    )


def compile_avd(
    model: AVD,
    config: AVDConfig,
    jit_compile: bool = False,
    run_eagerly: bool = False,
    total_steps: int | None = None,
) -> AVD:
    """Compiles `model` with the Adam optimizers of `config`; returns the model.

    `total_steps` (training's epochs x steps) shapes `config.lr_schedule`.
    """
    model.compile(
        ed_optimizer=keras.optimizers.Adam(
            learning_rate(config.ed_lr, config.lr_schedule, total_steps), beta_1=config.beta_1
        ),
        t_optimizer=keras.optimizers.Adam(
            learning_rate(config.t_lr, config.lr_schedule, total_steps), beta_1=config.beta_1
        ),
        run_eagerly=run_eagerly,
        jit_compile=jit_compile,
    )
    return model
