"""The decoder D: a distilled image back to its clip (paper sections 3.2, 4.2)."""
from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import layers, ops

from avd_tf.models.encoder import (
    check_kernel_size,
    check_layer_config,
    conv_bn_stack,
    one_frame_conv,
    resolve_native_strides,
    same_stride2_offset,
)


@keras.saving.register_keras_serializable(package="avd_tf")
class Decoder(keras.Model):
    """D: five Conv3DTranspose layers mapping an image (B, H, W, 3) to a clip (B, T, H, W, C).

    Paper section 4.2: D mirrors E, with LeakyReLU instead of ReLU. Our
    reading: the image becomes a one-frame clip (B, 1, H, W, 3); each layer
    is a 3x5x5 transposed convolution with temporal stride 1 or 2 and 'same'
    padding, so the clip length is T = prod(temporal_strides) (32 for five
    stride-2 layers). BN sits between the layers as in E (the paper says
    only that D mirrors E). The last layer has C filters (3 for RGB, 2 for
    flow) and tanh, because the clips D reconstructs are in [-1, 1].

    Our choices where the paper is silent: LeakyReLU slope 0.2 (DCGAN
    practice); `temporal_strides` are listed in D's own layer order, i.e.
    E's strides reversed; no bias before BN; BN momentum 0.9 and
    synchronisation as in E; the tanh output is float32 under mixed
    precision; `native_strides` as in `Encoder` (the stride-1 way inserts
    zeros between the time steps, where TF's stride-2 transposed
    convolution puts them).
    """

    def __init__(
        self,
        filters: Sequence[int] = (64, 64, 64, 32),
        temporal_strides: Sequence[int] = (2, 2, 2, 2, 2),
        out_channels: int = 3,
        kernel_size: Sequence[int] = (3, 5, 5),
        leaky_relu_slope: float = 0.2,
        sync_batch_norm: bool = True,
        native_strides: bool | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters, self.temporal_strides = check_layer_config(
            "Decoder", filters, temporal_strides
        )
        if int(out_channels) < 1:
            raise ValueError(f"Decoder: out_channels must be positive, got {out_channels}")
        self.out_channels = int(out_channels)
        self.kernel_size = check_kernel_size("Decoder", kernel_size)
        self.leaky_relu_slope = float(leaky_relu_slope)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.native_strides = native_strides
        self._native = resolve_native_strides(native_strides)
        # A stride-2 transposed convolution is the adjoint of a stride-2
        # convolution of 2n steps, i.e. of a stride-1 one kept at steps
        # offset, offset + 2, ...: the adjoint puts the n input steps there,
        # zeros elsewhere, and applies the stride-1 transposed convolution.
        self._zero_offset = same_stride2_offset(2, self.kernel_size[0])
        self.convs, self.norms = conv_bn_stack(
            layers.Conv3DTranspose,
            self.filters + (self.out_channels,),
            self.temporal_strides,
            self.kernel_size,
            self._native,
            self.sync_batch_norm,
            "deconv",
        )
        self.leaky_relu = layers.LeakyReLU(negative_slope=self.leaky_relu_slope, name="leaky_relu")
        self.tanh = layers.Activation("tanh", dtype="float32", name="tanh")

    @property
    def num_frames(self) -> int:
        """The length T of the clips D produces."""
        return math.prod(self.temporal_strides)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Decoder: expected images (B, H, W, 3), got shape {input_shape}")
        shape = (input_shape[0], 1) + tuple(input_shape[1:])
        for i, (conv, stride) in enumerate(zip(self.convs, self.temporal_strides)):
            if not self._native and stride == 2:
                shape = (shape[0], 2 * shape[1]) + shape[2:]
            conv.build(shape)
            shape = tuple(conv.compute_output_shape(shape))
            if i < len(self.norms):
                self.norms[i].build(shape)
        self.tanh.build(shape)

    def call(self, images, training=None):
        x = ops.expand_dims(images, axis=1)
        for i, (conv, stride) in enumerate(zip(self.convs, self.temporal_strides)):
            if stride == 1 and x.shape[1] == 1:
                x = one_frame_conv(conv, x)
            elif self._native or stride == 1:
                x = conv(x)
            else:
                x = conv(self._insert_zeros(x))
            if i < len(self.norms):
                x = self.leaky_relu(self.norms[i](x, training=training))
        return self.tanh(x)

    def _insert_zeros(self, x):
        """(B, n, H, W, C) -> (B, 2n, H, W, C) with x at steps offset, offset + 2, ..."""
        zeros = ops.zeros_like(x)
        pair = [zeros, x] if self._zero_offset == 1 else [x, zeros]
        doubled = (-1, 2 * x.shape[1]) + tuple(ops.shape(x)[2:])
        return ops.reshape(ops.stack(pair, axis=2), doubled)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_frames, input_shape[1], input_shape[2], self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": list(self.filters),
            "temporal_strides": list(self.temporal_strides),
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "leaky_relu_slope": self.leaky_relu_slope,
            "sync_batch_norm": self.sync_batch_norm,
            "native_strides": self.native_strides,
        }
