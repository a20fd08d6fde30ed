"""The encoder E: a video clip distilled into one RGB image (paper sections 3.1, 4.2)."""
from __future__ import annotations

import os
from typing import Sequence

import keras
import tensorflow as tf
from keras import layers, ops


def check_layer_config(
    owner: str, filters: Sequence[int], temporal_strides: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validates the widths and per-layer temporal strides of E or D.

    `filters` lists the widths of every layer but the last (whose width is
    fixed by the image or the clip), so there is one more stride than width.
    """
    filters = tuple(int(f) for f in filters)
    temporal_strides = tuple(int(s) for s in temporal_strides)
    if not filters or any(f < 1 for f in filters):
        raise ValueError(f"{owner}: filters must be positive, got {filters}")
    if len(temporal_strides) != len(filters) + 1:
        raise ValueError(
            f"{owner}: {len(filters) + 1} layers need {len(filters) + 1} temporal "
            f"strides (one per layer), got {temporal_strides}"
        )
    if any(s not in (1, 2) for s in temporal_strides):
        raise ValueError(f"{owner}: temporal strides must be 1 or 2, got {temporal_strides}")
    return filters, temporal_strides


def check_kernel_size(owner: str, kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Validates a (time, height, width) kernel; the temporal size must be odd.

    With an odd temporal kernel, a 'same' stride-2 convolution equals the
    stride-1 one at every other step (see `resolve_native_strides`).
    """
    kernel_size = tuple(int(k) for k in kernel_size)
    if len(kernel_size) != 3 or any(k < 1 for k in kernel_size) or kernel_size[0] % 2 == 0:
        raise ValueError(
            f"{owner}: kernel_size must be 3 positive sizes (time, height, width) with an odd "
            f"temporal size, got {kernel_size}"
        )
    return kernel_size


def conv_bn_stack(
    conv_class, widths, temporal_strides, kernel_size, native, sync_batch_norm, prefix
):
    """The convolutions of E or D and the batch norms between them.

    Layers followed by BN have no bias (BN's offset replaces it). BN
    momentum is 0.9 (see `Encoder`). Without `native` strides the layers
    have stride 1 and the caller handles stride 2 (`resolve_native_strides`).
    """
    last = len(widths) - 1
    convs = [
        conv_class(
            width,
            kernel_size,
            strides=(stride if native else 1, 1, 1),
            padding="same",
            use_bias=i == last,
            name=f"{prefix}{i + 1}",
        )
        for i, (width, stride) in enumerate(zip(widths, temporal_strides))
    ]
    # Keras' synchronized BN takes its all-reduce path inside any replica
    # context, which `fit` always opens: on one device that costs a ones-like
    # tensor per layer and an all-reduce for nothing.
    synchronized = sync_batch_norm and tf.distribute.get_strategy().num_replicas_in_sync > 1
    norms = [
        layers.BatchNormalization(momentum=0.9, synchronized=synchronized, name=f"bn{i + 1}")
        for i in range(last)
    ]
    return convs, norms


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process.

    Set by TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported; when unset,
    TensorFlow decides by CPU (on this project's AMD EPYC machines: off).
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a private module; should it move, trust the switch itself
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").lower() in ("1", "true")
    return bool(_pywrap_util_port.IsMklEnabled())


def resolve_native_strides(native_strides: bool | None) -> bool:
    """Whether E and D use TF's strided (transposed) Conv3D kernels.

    Both ways compute the same function with the same weights: a 'same'
    temporal stride-2 convolution is the stride-1 convolution kept at every
    other time step, and a stride-2 transposed convolution is the stride-1
    one applied after inserting zeros between the time steps. The stride-1
    way does twice the arithmetic. Which is faster depends on the kernels
    (measured on 2 cores, docs/performance.md): with oneDNN's CPU kernels
    (TF_ENABLE_ONEDNN_OPTS=1) the native way is 1.5x (small preset) to 2x
    (paper preset) faster; with TensorFlow's default Eigen kernels, whose
    strided Conv3D gradients are slow on small clips, the stride-1 way is 6x
    faster on the small preset but 1.9x slower on the paper preset. `None`
    picks the native kernels when an accelerator is visible or oneDNN is on,
    else the stride-1 way (`prefers_native_strides`).
    """
    if native_strides is None:
        devices = {device.device_type for device in tf.config.list_logical_devices()}
        return prefers_native_strides(devices, onednn_enabled())
    return bool(native_strides)


def prefers_native_strides(device_types, onednn: bool) -> bool:
    """Native strided kernels on GPUs and TPUs (cuDNN and XLA:TPU have fast ones) or with oneDNN."""
    return bool({"GPU", "TPU"} & set(device_types)) or bool(onednn)


def same_stride2_offset(length: int, kernel: int) -> int:
    """First kept step of a stride-1 'same' convolution that matches stride 2.

    TF pads a stride-2 'same' convolution of `length` steps by
    max((ceil(length / 2) - 1) * 2 + kernel - length, 0) in total, half of
    it (rounded down) before; a stride-1 one pads (kernel - 1) // 2 before.
    """
    out = -(-length // 2)
    pad_total = max((out - 1) * 2 + kernel - length, 0)
    return (kernel - 1) // 2 - pad_total // 2


def one_frame_conv(conv, x):
    """`conv`'s output for clips of one frame, from the centre tap of its temporal kernel.

    With 'same' padding, the other taps of an odd temporal kernel only ever
    meet padding zeros on a one-frame clip, so the output and every gradient
    are the same (the unused taps' gradients are zero either way) for a
    third of the arithmetic. It matters on CPUs: oneDNN has no direct
    weight-gradient kernel for a 3-tap kernel over one padded frame and falls
    back to im2col + GEMM, ~20 ms a call against ~1 ms for this
    (docs/performance.md). Holds for a Conv3D of any stride and for a
    stride-1 Conv3DTranspose.
    """
    centre = conv.kernel_size[0] // 2
    kernel = ops.cast(conv.kernel[centre : centre + 1], x.dtype)
    if isinstance(conv, layers.Conv3DTranspose):
        y = ops.conv_transpose(x, kernel, strides=1, padding="same")
    else:
        y = ops.conv(x, kernel, strides=1, padding="same")
    return y + ops.cast(conv.bias, y.dtype) if conv.use_bias else y


@keras.saving.register_keras_serializable(package="avd_tf")
class Encoder(keras.Model):
    """E: five Conv3D layers mapping a clip (B, T, H, W, C) to an image (B, H, W, 3).

    Paper section 4.2: kernels 3x5x5 (time x height x width), stride 2, batch
    norm + ReLU between the layers. Our reading (docs/design.md, section 2): the
    stride is temporal only and the padding 'same', so the image keeps the
    frames' height and width while the time axis is folded away; the last
    layer has 3 filters and tanh (an image in [-1, 1]) with no BN/ReLU.

    Our choices where the paper is silent:
    * `filters` (widths of the first layers) and per-layer `temporal_strides`
      are configurable so one class serves the paper (T = 32, five stride-2
      layers) and the small CPU preset (e.g. T = 8, three stride-2 layers).
    * When the clip is longer than the strides fold (T > prod(strides)), the
      remaining time steps are averaged before tanh, so any clip length works.
    * Conv layers followed by BN have no bias (BN's offset replaces it).
    * BN momentum 0.9 (PyTorch's default, usual in GAN code) instead of
      Keras' 0.99: E distils videos in inference mode, with the moving
      statistics, and these settle within tens of steps instead of hundreds.
    * `native_strides` chooses how stride 2 is computed, with identical
      results (`resolve_native_strides`); `None` picks native strides on a
      GPU or with oneDNN. The stride-1 way needs a static clip length.
    * `sync_batch_norm` (default True) computes BN statistics over the global
      batch when built under a `tf.distribute` strategy of several replicas,
      so training on several devices matches training on one; on one
      replica it is plain BN.
    * The output (temporal mean and tanh) is computed in float32 whatever
      the dtype policy, so mixed precision yields float32 images.
    """

    def __init__(
        self,
        filters: Sequence[int] = (32, 64, 64, 64),
        temporal_strides: Sequence[int] = (2, 2, 2, 2, 2),
        kernel_size: Sequence[int] = (3, 5, 5),
        sync_batch_norm: bool = True,
        native_strides: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters, self.temporal_strides = check_layer_config(
            "Encoder", filters, temporal_strides
        )
        self.kernel_size = check_kernel_size("Encoder", kernel_size)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.native_strides = native_strides
        self._native = resolve_native_strides(native_strides)
        self.convs, self.norms = conv_bn_stack(
            layers.Conv3D,
            self.filters + (3,),
            self.temporal_strides,
            self.kernel_size,
            self._native,
            self.sync_batch_norm,
            "conv",
        )
        self.relu = layers.ReLU(name="relu")
        self.tanh = layers.Activation("tanh", dtype="float32", name="tanh")

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"Encoder: expected clips (B, T, H, W, C), got shape {input_shape}")
        if not self._native and input_shape[1] is None:
            raise ValueError(
                "Encoder: stride-1 convolutions (native_strides=False) need a static clip "
                f"length, got shape {input_shape}"
            )
        shape = tuple(input_shape)
        for i, (conv, stride) in enumerate(zip(self.convs, self.temporal_strides)):
            conv.build(shape)
            shape = tuple(conv.compute_output_shape(shape))
            if not self._native and stride == 2:
                shape = (shape[0], -(-shape[1] // 2)) + shape[2:]
            if i < len(self.norms):
                self.norms[i].build(shape)
        self.tanh.build(shape[:1] + shape[2:])

    def call(self, clips, training=None):
        x = clips
        for i, (conv, stride) in enumerate(zip(self.convs, self.temporal_strides)):
            if x.shape[1] == 1:
                x = one_frame_conv(conv, x)
            elif self._native or stride == 1:
                x = conv(x)
            else:
                x = conv(x)[:, same_stride2_offset(x.shape[1], self.kernel_size[0]) :: 2]
            if i < len(self.norms):
                x = self.relu(self.norms[i](x, training=training))
        x = ops.mean(ops.cast(x, "float32"), axis=1)
        return self.tanh(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2], input_shape[3], 3)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "temporal_strides": list(self.temporal_strides),
            "kernel_size": list(self.kernel_size),
            "sync_batch_norm": self.sync_batch_norm,
            "native_strides": self.native_strides,
        }
