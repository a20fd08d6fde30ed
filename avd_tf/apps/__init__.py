"""The absl command-line programs (console scripts `avd-*`, see setup.py).

TensorFlow 2.21 leaves its oneDNN CPU kernels off on CPUs without AVX-512
(this project's AMD EPYC machines among them), where they train AVD 4x faster
than the default Eigen kernels (docs/performance.md). The switch is read once,
when TensorFlow is first imported, so the programs turn it on here, before
any of them imports TensorFlow; `TF_ENABLE_ONEDNN_OPTS=0` in the environment
still wins.
"""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
