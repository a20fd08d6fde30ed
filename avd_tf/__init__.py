"""avd-tf: Adversarial Video Distillation (Tavakolian et al.) in TensorFlow/Keras."""
