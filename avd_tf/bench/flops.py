"""FLOPs of AVD training, counted two ways: from layer shapes and by TF's profiler.

The model's FLOPs are those of its definition (paper section 4.2): a
temporal stride-2 layer is counted at stride 2 even when it runs as a
stride-1 convolution kept at every other step (`resolve_native_strides`),
which computes twice as much and throws half away. A layer whose input is
one frame is counted with the centre tap of its temporal kernel only: the
other taps meet nothing but padding zeros, and the model skips them
(`one_frame_conv`), so counting them would credit it with work on zeros.
MFU ("model FLOPs
utilisation", Chowdhery et al. 2022) divides these FLOPs, not the ones a
particular kernel executes, by the time taken.

* `analytic_train_flops`: a convolution with kernel (K_t, K_h, K_w) costs
  2 K_t K_h K_w C_in C_out T_out H_out W_out FLOPs per clip (a multiply-add
  is 2 FLOPs; 'same' padding, so H_out W_out = H W); a transposed one the
  same with T_out replaced by its input length (it is the gradient of that
  convolution); a Dense layer 2 n_in n_out per image. Training counts
  3 x forward (the backward pass costs two forwards: input and weight
  gradients), for T once per image it sees in a step (real frame, E's image
  for T's update, E's image for Eq. 3's adversarial term when lam < 1).
* `profiled_train_flops`: `tf.compat.v1.profiler` on the graph of the
  compiled `AVD.train_step` built with native strides, i.e. every op the
  step runs: convolutions and their gradients, batch norm, losses, Adam.
  TF registers FLOP counts for Conv3D but not for its two gradient ops;
  they are registered here with the same formula as the forward op.

The two agree within 1 % (0.1 % for the paper preset): the profiler also
counts batch norm, the losses and Adam.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import graph_util, ops

from avd_tf.models import AVD, AVDConfig, build_avd, compile_avd
from avd_tf.models.presets import STREAM_CHANNELS

TRAIN_MULTIPLIER = 3


def conv_flops(kernel_size, c_in: int, c_out: int, positions: int) -> int:
    """FLOPs of one convolution evaluated at `positions` output places."""
    return 2 * math.prod(kernel_size) * c_in * c_out * positions


def encoder_layer_flops(config: AVDConfig, channels: int, kernel_size=(3, 5, 5)) -> list[int]:
    """Forward FLOPs of each of E's layers for one clip."""
    pixels = config.image_size**2
    widths = config.encoder_filters + (3,)
    flops, frames, c_in = [], config.num_frames, channels
    for width, stride in zip(widths, config.temporal_strides):
        kernel = _one_frame_kernel(kernel_size) if frames == 1 else kernel_size
        frames = -(-frames // stride)
        flops.append(conv_flops(kernel, c_in, width, frames * pixels))
        c_in = width
    return flops


def _one_frame_kernel(kernel_size):
    """The taps a layer on a one-frame clip computes (`avd_tf.models.encoder.one_frame_conv`)."""
    return (1,) + tuple(kernel_size[1:])


def decoder_layer_flops(config: AVDConfig, channels: int, kernel_size=(3, 5, 5)) -> list[int]:
    """Forward FLOPs of each of D's transposed layers for one image."""
    pixels = config.image_size**2
    widths = config.decoder_filters + (channels,)
    flops, frames, c_in = [], 1, 3
    for width, stride in zip(widths, config.temporal_strides[::-1]):
        kernel = _one_frame_kernel(kernel_size) if frames == 1 and stride == 1 else kernel_size
        flops.append(conv_flops(kernel, c_in, width, frames * pixels))
        frames *= stride
        c_in = width
    return flops


def teacher_flops(config: AVDConfig) -> int:
    """Forward FLOPs of T's Dense layers for one image (its fixed pooling is free here)."""
    sizes = (config.teacher_input_resolution**2 * 3,) + config.teacher_units + (1,)
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def analytic_train_flops(config: AVDConfig, stream: str = "rgb") -> dict:
    """Per-clip FLOPs of one training step from the layer shapes (see module docstring)."""
    channels = STREAM_CHANNELS[stream]
    encoder = encoder_layer_flops(config, channels)
    decoder = decoder_layer_flops(config, channels)
    teacher_passes = 3 if config.lam_for(stream) < 1.0 else 2
    forward = sum(encoder) + sum(decoder) + teacher_passes * teacher_flops(config)
    return {
        "encoder_layers": encoder,
        "decoder_layers": decoder,
        "teacher": teacher_flops(config),
        "forward": forward,
        "train": TRAIN_MULTIPLIER * forward,
        "distill": sum(encoder),
    }


def _shape(graph, name: str) -> list[int]:
    shape = graph_util.tensor_shape_from_node_def_name(graph, name)
    shape.assert_is_fully_defined()
    return shape.as_list()


def _conv3d_gradient_flops(graph, node, filter_shape) -> ops.OpStats:
    # Both gradients cost what the forward convolution does: per element of
    # its output (`out_backprop`, input 2), K_t K_h K_w C_in multiply-adds.
    out_backprop = _shape(graph, node.input[2])
    return ops.OpStats(
        "flops", 2 * int(np.prod(out_backprop, dtype=np.int64)) * math.prod(filter_shape[:4])
    )


def _register_conv3d_gradients() -> None:
    def backprop_input(graph, node):
        return _conv3d_gradient_flops(graph, node, _shape(graph, node.input[1]))

    def backprop_filter(graph, node):
        return _conv3d_gradient_flops(graph, node, _shape(graph, node.name))

    for op_type, function in (
        ("Conv3DBackpropInputV2", backprop_input),
        ("Conv3DBackpropFilterV2", backprop_filter),
    ):
        try:
            ops.RegisterStatistics(op_type, "flops")(function)
        except KeyError:  # registered already (by a newer TF, or an earlier import)
            pass


_register_conv3d_gradients()


def native_avd(config: AVDConfig, stream: str = "rgb") -> AVD:
    """A compiled AVD model of `config` whose strided layers use TF's strided kernels.

    The same wiring as `build_avd`, with `native_strides=True`, so that its
    graph holds the model's own FLOPs.
    """
    model = build_avd(config, stream, native_strides=True)
    return compile_avd(model, config)


def profiled_train_flops(config: AVDConfig, stream: str = "rgb", batch_size: int = 2) -> dict:
    """Per-clip FLOPs of `AVD.train_step`'s graph, counted by `tf.compat.v1.profiler`.

    The graph is traced (never run) for a fixed batch; returns the total and
    the FLOPs per op type, all divided by `batch_size`.
    """
    model = native_avd(config, stream)
    size = config.image_size
    clips = tf.TensorSpec([batch_size, config.num_frames, size, size, STREAM_CHANNELS[stream]])
    frames = tf.TensorSpec([batch_size, size, size, 3])
    graph = tf.function(model.train_step).get_concrete_function((clips, frames)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, cmd="scope", options=options)
    by_op = {}
    pending = list(profile.children)
    while pending:
        node = pending.pop()
        pending.extend(node.children)
        if node.float_ops:
            op_type = graph.get_operation_by_name(node.name).type
            by_op[op_type] = by_op.get(op_type, 0) + node.float_ops / batch_size
    return {"train": profile.total_float_ops / batch_size, "by_op": by_op}
