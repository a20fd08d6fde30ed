"""avd_tf.files (atomic writes) and avd_tf.layout (stage file names, shard names)."""
from __future__ import annotations

import glob
import json
import os

import keras
import numpy as np
import pytest

from avd_tf import layout
from avd_tf.files import save_keras_atomically, write_json_atomically, write_text_atomically


def test_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / layout.METRICS
    path.write_text("old")
    write_json_atomically(str(path), {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n "a": [\n  1,\n  2\n ],\n "b": 1\n}'
    write_json_atomically(str(path), {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads(path.read_text())) == ["b", "a"]
    assert os.listdir(tmp_path) == [layout.METRICS]


def test_a_missing_folder_is_named_without_the_temporary_suffix(tmp_path):
    path = str(tmp_path / "missing" / "summary.md")
    with pytest.raises(FileNotFoundError) as error:
        write_text_atomically(path, "text")
    assert error.value.filename == path


def test_keras_model_is_saved_under_its_name_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / layout.ENCODER)
    save_keras_atomically(model, path)
    assert os.listdir(tmp_path) == [layout.ENCODER]
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(keras.models.load_model(path)(x), model(x))


def test_shard_names_parse_back_and_temporary_names_do_not(tmp_path):
    name = layout.shard_name("train", 3, 12)
    assert name == "train-00003-of-00012.tfrecord"
    assert layout.parse_shard_name(name, "train") == (3, 12)
    assert layout.parse_shard_name(name, "test") is None
    for other in (name + ".tmp", ".train-00003.tfrecord.tmp", "train-3-of-x.tfrecord"):
        assert layout.parse_shard_name(other, "train") is None
    for file in (name, name + ".tmp", layout.shard_name("test", 0, 1), layout.MANIFEST):
        (tmp_path / file).write_text("")
    found = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / layout.shard_glob())))
    assert found == ["test-00000-of-00001.tfrecord", name]
    assert glob.glob(str(tmp_path / layout.shard_glob("test"))) == [
        str(tmp_path / "test-00000-of-00001.tfrecord")]


def test_model_checkpoint_publishes_each_epoch_under_the_final_name(tmp_path):
    from avd_tf.run_dir import model_checkpoint

    path = tmp_path / layout.CLASSIFIER_MODEL
    seen = []
    look = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(sorted(os.listdir(tmp_path))))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, epochs=2, callbacks=[*model_checkpoint(str(path)), look], verbose=0)
    assert seen == [[layout.CLASSIFIER_MODEL]] * 2
    np.testing.assert_allclose(keras.models.load_model(path)(x), model(x))


def test_metrics_layout_of_a_run_and_a_refused_foreign_file(tmp_path):
    import time

    from avd_tf.run_dir import (EpochTimer, epoch_figures, read_history, read_metrics,
                                run_metrics, write_metrics)

    started = time.time()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, epochs=3, batch_size=2, verbose=0, callbacks=[
        EpochTimer(4, "images"), keras.callbacks.CSVLogger(str(tmp_path / layout.HISTORY))])
    history = read_history(str(tmp_path))
    metrics = run_metrics("finetune", {"stream": "frame"}, history, started=started,
                          final=history[1], rule="val")
    write_metrics(str(tmp_path), metrics)
    assert read_metrics(str(tmp_path)) == metrics
    assert metrics["history"] == history and metrics["run"] == {"stream": "frame"}
    # "final" is the chosen epoch's figures; EpochTimer's keys are summed into "timing".
    assert metrics["final"] == {"rule": "val", "epoch": 2, "loss": history[1]["loss"]}
    timing = metrics["timing"]
    assert set(timing) == {"train_seconds", "epoch_seconds", "images_per_second", "wall_seconds"}
    assert timing["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in history),
                                                    abs=1e-3)
    assert timing["images_per_second"] == sorted(r["images_per_second"] for r in history)[1]
    assert timing["wall_seconds"] >= timing["epoch_seconds"]

    # What avd-train and avd-finetune wrote before this layout reads as this layout.
    last, chosen = history[-1], history[1]
    earlier = {
        "train": {"loss": last["loss"], "epoch": 3, "epochs": 3, "history": history,
                  "clips_per_second": 1.0, "stream": "rgb", "preset": "small", "replicas": 1,
                  "wall_time_s": 9.5},
        "finetune": {"last": last, "selected": {"rule": "val", **chosen}, "best": chosen,
                     "history": history, "stream": "frame", "backbone": "alexnet",
                     "validation": None, "train_images": 4, "test_images": 2, "epochs": 3,
                     "wall_time_s": 9.5},
        "untrained AVD": {"val_psnr": 20.0, "untrained": True, "stream": "rgb",
                          "preset": "small", "wall_time_s": 9.5},
    }
    for program, content in earlier.items():
        write_json_atomically(str(tmp_path / layout.METRICS), content)
        read = read_metrics(str(tmp_path))
        assert read["program"] == program and read["timing"]["wall_seconds"] == 9.5
        if program == "untrained AVD":
            assert read["final"] == {"rule": "untrained", "val_psnr": 20.0}
            continue
        assert read["history"] == history
        assert read["timing"] == {**timing, "wall_seconds": 9.5}
        row, rule = (last, "last") if program == "train" else (chosen, "val")
        assert read["final"] == {"rule": rule, **epoch_figures(row)}

    (tmp_path / layout.METRICS).write_text('{"val_psnr": 20.0, "history": []}')
    with pytest.raises(ValueError, match=r"metrics\.json: not the metrics of a training run "
                                         r"\(no program, run, final, timing\); delete "):
        read_metrics(str(tmp_path))
