"""An AlexNet-like network (paper section 4.2 and Table 2, "AlexNet [12]").

Krizhevsky et al.'s five convolutions (96 11x11/4, 256 5x5, 384 3x3,
384 3x3, 256 3x3, ReLU, 3x3/2 max-pooling after conv1, conv2 and conv5) and,
with the top, two fully connected layers of 4096 with dropout and the
classifier. Our choices where the original does not carry over:

* Input 224x224 with 2 pixels of zero padding before conv1, as torchvision's
  AlexNet (the same 55x55 conv1 map as the original 227x227 without padding);
  conv2-conv5 use 'same' padding, the pools 'valid'.
* BatchNormalization after every convolution (before the ReLU) instead of
  Local Response Normalization: there are no ImageNet weights to start from,
  and batch norm makes training from scratch far more reliable.
* The top pools adaptively to 6x6 before fc6 (as torchvision), so any input
  of at least 63x63 works (e.g. 112 or 64), with or without the top.
* Channels-last, float inputs already preprocessed by the caller
  (`avd_tf.classify.backbones` uses ImageNet mean/std, "torch" mode, because
  the ImageNet AlexNet weights people have are torchvision conversions).

keras.applications has no AlexNet and no ImageNet weights exist for this
network here, so `weights` is None or a local weights file.
"""
from __future__ import annotations

import os

import keras

DEFAULT_INPUT_SIZE = 224
# Smallest side for which the last 3x3/2 max-pool still has a 3x3 window.
MIN_INPUT_SIZE = 63

_CONVS = (  # (name, filters, kernel, stride, max-pool after)
    ("conv1", 96, 11, 4, True),
    ("conv2", 256, 5, 1, True),
    ("conv3", 384, 3, 1, False),
    ("conv4", 384, 3, 1, False),
    ("conv5", 256, 3, 1, True),
)


def alexnet(weights=None, include_top: bool = True,
            input_shape=(DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, 3),
            classes: int = 1000, pooling: str | None = None,
            dropout: float = 0.5) -> keras.Model:
    """Builds the AlexNet-like model with the keras.applications signature.

    Args:
      weights: None (random initialisation) or the path of a weights file
        saved from a model built with the same arguments. "imagenet" raises:
        there are no ImageNet weights for this network.
      include_top: with the top, conv5 -> adaptive 6x6 pooling -> fc6 (4096)
        -> dropout -> fc7 (4096) -> dropout -> softmax over `classes`.
        Without it, the conv5 feature map (after its max-pool), as
        keras.applications' VGG.
      input_shape: (height, width, channels), sides >= 63.
      classes: number of classes of the top.
      pooling: without the top, None (4-D feature map), "avg" or "max"
        (global pooling to a vector).
      dropout: dropout rate after fc6 and fc7.
    """
    if isinstance(weights, str) and weights == "imagenet":
        raise ValueError(
            "alexnet: there are no ImageNet weights for AlexNet (keras.applications "
            "has no AlexNet). Use weights=None to train from scratch, a local "
            "weights file (e.g. converted from torchvision), or a backbone with "
            "ImageNet weights: resnet50, resnet101, inception_v3, efficientnet_lite0.")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"alexnet: weights file {weights!r} does not exist")
    height, width, _ = input_shape
    if min(height, width) < MIN_INPUT_SIZE:
        raise ValueError(f"alexnet: input sides must be >= {MIN_INPUT_SIZE}, "
                         f"got input_shape={tuple(input_shape)}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"alexnet: pooling must be None, 'avg' or 'max', got {pooling!r}")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(inputs)
    for name, filters, kernel, stride, pool in _CONVS:
        x = keras.layers.Conv2D(
            filters, kernel, strides=stride,
            padding="valid" if name == "conv1" else "same",
            use_bias=False, name=name)(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    if include_top:
        x = keras.layers.AdaptiveAveragePooling2D((6, 6), name="pool6x6")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        for name in ("fc6", "fc7"):
            x = keras.layers.Dense(4096, activation="relu", name=name)(x)
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
        x = keras.layers.Dense(classes, activation="softmax", dtype="float32",
                               name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name="alexnet")
    if weights is not None:
        try:
            model.load_weights(weights)
        except Exception as error:  # Keras raises several types for a bad file.
            raise ValueError(
                f"alexnet: cannot load weights file {weights!r} (it must come from "
                f"an alexnet built with the same include_top/classes/channels): "
                f"{error}") from error
    return model
