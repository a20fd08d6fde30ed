"""The control of an ablation: AVD's encoder E as initialised, never trained.

Its images go through the same distillation, fine-tuning and evaluation as
a trained E's, so a cell that does not beat it learned nothing useful for
the classifier; its motion figures (D as initialised rebuilding the clip)
are what training has to improve on. The model folder holds what
`avd_tf.models.distill.load_encoder` and the AVD stream cache read
(encoder.keras, config.json with the stream) and metrics.json, written
last, in `avd_tf.run_dir`'s layout with no history: "final" holds the
figures `train_avd` reports for validation ("val_" keys), rule "untrained".
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import keras

from avd_tf.files import save_keras_atomically, write_json_atomically
from avd_tf.inputs import class_names
from avd_tf.layout import CONFIG, ENCODER
from avd_tf.models.presets import build_avd, compile_avd, get_preset
from avd_tf.models.training import validation_dataset
from avd_tf.run_dir import open_run, run_metrics, write_metrics


def untrained_avd(data_dir: str, model_dir: str, *, preset: str = "small", seed: int = 0,
                  stream: str = "rgb", log: Callable[[str], None] = print,
                  **overrides) -> dict:
    """Writes the untrained AVD model of `preset` (+ `overrides`) and `seed` to `model_dir`.

    The model is built as `train_avd` builds it, after
    `keras.utils.set_random_seed(seed)`, and evaluated on the clips
    `train_avd` validates on (`validation_dataset`: the test split of
    `data_dir`). Returns the metrics; a finished folder of the same run is
    returned as it is. E's initial weights do not depend on Eq. 3's lambda,
    so the control pins it (1.0): a preset whose lambda changes keeps its
    controls.
    """
    started = time.time()
    config = get_preset(preset, **{**overrides, "lam": 1.0})
    run_config = json.loads(json.dumps({
        "preset": preset,
        "config": dataclasses.asdict(config),
        "stream": stream,
        "data_dir": os.path.abspath(data_dir),
        "classes": class_names(data_dir),
        "seed": int(seed),
        "untrained": True,
    }))
    finished, _ = open_run(model_dir, run_config, program="untrained AVD", log=log)
    if finished is not None:
        return finished
    keras.utils.set_random_seed(int(seed))
    model = compile_avd(build_avd(config, stream), config)
    figures = model.evaluate(validation_dataset(data_dir, stream, config, int(seed)),
                             return_dict=True, verbose=0)
    write_json_atomically(os.path.join(model_dir, CONFIG), run_config)
    save_keras_atomically(model.encoder, os.path.join(model_dir, ENCODER))
    metrics = run_metrics(
        "untrained AVD", {"stream": stream, "preset": preset, "untrained": True}, [],
        started=started, final={f"val_{key}": float(value) for key, value in figures.items()},
        rule="untrained")
    write_metrics(model_dir, metrics)
    return metrics


__all__ = ["untrained_avd"]
