"""avd-tf: Adversarial Video Distillation (Tavakolian et al.) in TensorFlow/Keras.

Two shortcuts are loaded on first use, so `import avd_tf` stays light and
does not import TensorFlow:

* `avd_tf.distill(model_dir, frames)`: E's uint8 image of one clip
  (`avd_tf.models.distill.distill`);
* `avd_tf.dynamic_image(frames)`: Bilen et al.'s dynamic image
  (`avd_tf.classify.dynamic_images.dynamic_image`).
"""
import importlib

_LAZY = {
    "distill": ("avd_tf.models.distill", "distill"),
    "dynamic_image": ("avd_tf.classify.dynamic_images", "dynamic_image"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'avd_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
