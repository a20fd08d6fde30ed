"""Classification backbones: the 2D CNNs that classify frames, flow and AVD images.

Paper section 4.2 and Table 2: AlexNet, Inception-V1, ResNet-50 and
ResNet-101 pre-trained on ImageNet, fine-tuned on each input type.
keras.applications has InceptionV3, not V1, so `inception_v3` stands in for
it; `efficientnet_lite0` is our addition (ImageNet weights that need no
download). The AlexNet-like net has no ImageNet weights (see
`avd_tf.classify.alexnet`).

Pipeline convention: every classifier takes float32 images in [-1, 1],
(B, S, S, C): RGB frames, AVD images and dynamic images with C = 3, TV-L1
flow with C = 2 (x, y). The backbone's own preprocessing runs inside the
model (`BackbonePreprocess`), so a saved classifier needs nothing else.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from avd_tf.classify import alexnet as alexnet_lib
# Imported eagerly: loading a saved classifier needs its MBConvBlock registered.
from avd_tf.classify import efficientnet_lite


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and feed it.

    `build` has the keras.applications signature (weights, include_top,
    input_shape, pooling, ...); `preprocess` maps RGB floats in [0, 255] to
    the backbone's input (keras.applications' `preprocess_input`).
    """

    name: str
    input_size: int
    min_input_size: int
    build: Callable[..., keras.Model]
    preprocess: Callable



def _torch_preprocess(images):
    return keras.applications.imagenet_utils.preprocess_input(images, mode="torch")


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec for spec in (
        BackboneSpec("alexnet", alexnet_lib.DEFAULT_INPUT_SIZE,
                     alexnet_lib.MIN_INPUT_SIZE, alexnet_lib.alexnet,
                     _torch_preprocess),
        BackboneSpec("inception_v3", 299, 75, keras.applications.InceptionV3,
                     keras.applications.inception_v3.preprocess_input),
        BackboneSpec("resnet50", 224, 32, keras.applications.ResNet50,
                     keras.applications.resnet.preprocess_input),
        BackboneSpec("resnet101", 224, 32, keras.applications.ResNet101,
                     keras.applications.resnet.preprocess_input),
        BackboneSpec("efficientnet_lite0", 224, 32, efficientnet_lite.efficientnet_lite0,
                     efficientnet_lite.preprocess_input),
    )
}


def get_spec(name: str) -> BackboneSpec:
    """The registry entry of `name`; ValueError listing the known ones."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known backbones: "
                         f"{', '.join(BACKBONES)}") from None


def backbone_input_size(name: str) -> int:
    """The default (ImageNet) input side of backbone `name`."""
    return get_spec(name).input_size


def _flow_scale(spec: BackboneSpec) -> float:
    """Gain that gives [-1, 1] inputs the spread of the backbone's RGB input.

    Half the preprocessed distance between white and black, averaged over
    channels: 127.5 for caffe-style ResNets (the TSN recipe, flow uint8 minus
    128), 1 for Inception's [-1, 1], about 2.2 for ImageNet mean/std.
    """
    white = np.asarray(spec.preprocess(tf.fill([1, 1, 1, 3], 255.0)))
    black = np.asarray(spec.preprocess(tf.zeros([1, 1, 1, 3])))
    return float(np.mean(white - black) / 2.0)


@keras.saving.register_keras_serializable(package="avd_tf")
class BackbonePreprocess(keras.layers.Layer):
    """Maps pipeline images in [-1, 1] to what backbone `backbone` expects.

    3 channels (RGB, AVD and dynamic images): back to [0, 255], then the
    backbone's ImageNet preprocessing (section 4.2: ImageNet-pretrained
    models). Any other channel count is TV-L1 flow, already zero-centred in
    [-1, 1]; our choice is a pure gain with no offset, matched to the spread
    of the backbone's RGB input (`_flow_scale`), so the cross-modality
    initialised first conv sees inputs of the magnitude it was trained on.
    """

    def __init__(self, backbone: str, channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.channels = int(channels)
        self._spec = get_spec(backbone)
        self._scale = _flow_scale(self._spec) if self.channels != 3 else 1.0

    def call(self, images):
        if self.channels == 3:
            return self._spec.preprocess((images + 1.0) * 127.5)
        return images * self._scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone, channels=self.channels)
        return config


def resolve_weights(weights) -> str | None:
    """None (random init), "imagenet", or the absolute path of an existing weights file."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if isinstance(weights, str) and weights == "imagenet":
        return weights
    path = os.path.abspath(os.fspath(weights))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: weights file not found")
    return path


def _build_headless(spec: BackboneSpec, weights, input_shape) -> keras.Model:
    """The backbone without top, globally average-pooled to a vector."""
    with warnings.catch_warnings():
        # keras.applications warns about 2-channel (flow) inputs, which are
        # intended here.
        warnings.filterwarnings("ignore", message=".*input channels.*")
        model = spec.build(weights=weights if weights == "imagenet" else None,
                           include_top=False, input_shape=input_shape, pooling="avg")
    if weights not in (None, "imagenet"):
        try:
            model.load_weights(weights)
        except Exception as error:  # Keras raises several types for a bad file.
            raise ValueError(
                f"backbones: cannot load weights file {weights!r} into {spec.name} "
                f"(it must hold the weights of build_backbone({spec.name!r}, ...) "
                f"with 3 channels, i.e. keras.applications' 'notop' layout): "
                f"{error}") from error
    return model


def cross_modality_init(source: keras.Model, target: keras.Model) -> None:
    """Copies `source`'s weights into `target`, adapting the input channels.

    TSN's cross-modality initialisation (docs/design.md, section 3): a conv kernel
    whose input-channel count differs (the first conv: RGB -> flow) becomes
    the mean over the source's input channels, repeated over the target's.
    All other weights are copied as they are. The two models must have the
    same layers in the same order.
    """
    if len(source.layers) != len(target.layers):
        raise ValueError(f"cross_modality_init: {source.name} has {len(source.layers)} "
                         f"layers, {target.name} {len(target.layers)}")
    for src, dst in zip(source.layers, target.layers):
        values = []
        for old, new in zip(src.get_weights(), dst.get_weights(), strict=True):
            if old.shape == new.shape:
                values.append(old)
            elif (old.ndim == 4 and old.shape[:2] == new.shape[:2]
                  and old.shape[3] == new.shape[3]):
                values.append(np.repeat(old.mean(axis=2, keepdims=True),
                                        new.shape[2], axis=2))
            else:
                raise ValueError(
                    f"cross_modality_init: layer {dst.name}: weight shapes "
                    f"{old.shape} and {new.shape} differ beyond the input channels")
        dst.set_weights(values)


def build_backbone(backbone: str, weights="imagenet", input_channels: int = 3,
                   input_size: int | None = None) -> keras.Model:
    """Backbone `backbone` without its top, globally average-pooled.

    Takes the backbone's own preprocessed input (not [-1, 1]); outputs
    (B, features). `weights`: "imagenet" (passed to keras.applications,
    which downloads on first use; an error for alexnet), "none"/None, or the
    path of a weights file saved from `build_backbone(backbone, ...)` with 3
    channels (keras.applications' 'notop' files work too). With
    `input_channels != 3` and weights, the 3-channel backbone is built with
    them and `cross_modality_init` adapts it.
    """
    spec = get_spec(backbone)
    size = input_size or spec.input_size
    if size < spec.min_input_size:
        raise ValueError(f"backbones: {backbone} needs input_size >= "
                         f"{spec.min_input_size}, got {size}")
    if input_channels < 1:
        raise ValueError(f"backbones: input_channels must be >= 1, got {input_channels}")
    weights = resolve_weights(weights)
    if input_channels == 3 or weights is None:
        return _build_headless(spec, weights, (size, size, input_channels))
    rgb = _build_headless(spec, weights, (size, size, 3))
    target = _build_headless(spec, None, (size, size, input_channels))
    cross_modality_init(rgb, target)
    return target


def partial_batch_norm(model: keras.Model) -> int:
    """Freezes every BatchNormalization layer but the first (TSN's "partial BN").

    TSN's recipe against BN statistics that drift on small fine-tuning sets.
    The first BN stays trainable because its input (e.g. flow or distilled
    images) is the one whose statistics really change. Off by default: on the
    demo data it stopped EfficientNet-Lite0 from learning at all.
    Returns the number of frozen layers.
    """
    # _flatten_layers also reaches BN inside custom blocks (EfficientNet's MBConv).
    layers = [l for l in model._flatten_layers(include_self=False)
              if isinstance(l, keras.layers.BatchNormalization)]
    for layer in layers[1:]:
        layer.trainable = False
    return max(0, len(layers) - 1)


def build_classifier(backbone: str, num_classes: int, weights="imagenet",
                     input_channels: int = 3, input_size: int | None = None,
                     dropout: float = 0.5, partial_bn: bool = False,
                     bn_momentum: float | None = 0.9) -> keras.Model:
    """Fine-tunable classifier on images in [-1, 1], (B, S, S, input_channels).

    BackbonePreprocess -> backbone without top -> global average pooling ->
    dropout -> Dense(num_classes, softmax, float32) (section 4.2: an
    ImageNet-pretrained 2D CNN fine-tuned per input type; the new head is the
    usual fine-tuning practice, our choice). `input_size` defaults to the
    backbone's ImageNet size (`backbone_input_size`). See `build_backbone`
    for `weights` and 2-channel flow inputs. With pretrained weights and
    `partial_bn`, all BN layers but the first are frozen (`partial_batch_norm`).
    `bn_momentum` (0.9: PyTorch's default, which the field's fine-tuning
    recipes run with) replaces Keras' 0.99 so that BN's moving statistics
    follow the new data within tens of steps instead of hundreds; None
    keeps each layer's own.
    """
    if num_classes < 1:
        raise ValueError(f"build_classifier: num_classes must be >= 1, got {num_classes}")
    size = input_size or get_spec(backbone).input_size
    features = build_backbone(backbone, weights, input_channels, size)
    if partial_bn and resolve_weights(weights) is not None:
        partial_batch_norm(features)
    if bn_momentum is not None:
        for layer in features._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    inputs = keras.Input((size, size, input_channels), dtype="float32", name="image")
    x = BackbonePreprocess(backbone, input_channels, name="preprocess")(inputs)
    x = features(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_classifier")
