"""The teacher T: real video frame or distilled image? (paper sections 3.3, 4.2)."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="avd_tf")
class Teacher(keras.Model):
    """T: five Dense layers, ReLU between them, sigmoid last (paper section 4.2).

    T is the discriminator of Eq. 2: it outputs the probability that an image
    (B, H, W, 3) in [-1, 1] is a real video frame rather than E's output.

    Our choices where the paper is silent (docs/design.md, section 2):
    * A fixed average pooling brings the image down to `input_resolution`
      squared before flattening, so the first Dense layer stays small on
      112x112 images. The image's height and width must be multiples of
      `input_resolution`; at equal size there is no pooling.
    * `units` are the widths of the four hidden layers; the fifth has 1 unit.
    * `call(..., return_logits=True)` returns the pre-sigmoid logit: the AVD
      losses use it with `from_logits=True` for numerical stability. The
      last Dense layer runs in float32, so logits and probabilities are
      float32 under mixed precision.
    """

    def __init__(
        self, units: Sequence[int] = (1024, 512, 256, 128), input_resolution: int = 32, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        if len(self.units) != 4 or any(u < 1 for u in self.units):
            raise ValueError(f"Teacher: units must be 4 positive widths, got {self.units}")
        self.input_resolution = int(input_resolution)
        if self.input_resolution < 1:
            raise ValueError(f"Teacher: input_resolution must be positive, got {input_resolution}")
        self.pool = None
        self.flatten = layers.Flatten(name="flatten")
        self.hidden = [
            layers.Dense(u, activation="relu", name=f"dense{i + 1}")
            for i, u in enumerate(self.units)
        ]
        self.logit = layers.Dense(1, dtype="float32", name="logit")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Teacher: expected images (B, H, W, 3), got shape {input_shape}")
        height, width = input_shape[1], input_shape[2]
        if height % self.input_resolution or width % self.input_resolution:
            raise ValueError(
                f"Teacher: image size {height}x{width} is not a multiple of "
                f"input_resolution {self.input_resolution}"
            )
        shape = tuple(input_shape)
        if height > self.input_resolution or width > self.input_resolution:
            pool_size = (height // self.input_resolution, width // self.input_resolution)
            self.pool = layers.AveragePooling2D(pool_size, name="pool")
            self.pool.build(shape)
            shape = tuple(self.pool.compute_output_shape(shape))
        shape = self.flatten.compute_output_shape(shape)
        for dense in self.hidden + [self.logit]:
            dense.build(shape)
            shape = dense.compute_output_shape(shape)

    def call(self, images, training=None, return_logits=False):
        x = images if self.pool is None else self.pool(images)
        x = self.flatten(x)
        for dense in self.hidden:
            x = dense(x)
        logits = self.logit(x)
        return logits if return_logits else ops.sigmoid(logits)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {
            **super().get_config(),
            "units": list(self.units),
            "input_resolution": self.input_resolution,
        }
