"""Tests for avd_tf.classify.backbones and avd_tf.classify.alexnet."""
import keras
import numpy as np
import pytest

from avd_tf.classify import alexnet as alexnet_lib
from avd_tf.classify import backbones

# Small inputs keep CPU builds cheap; 75 is InceptionV3's minimum.
SMALL_SIZES = {"alexnet": 64, "resnet50": 64, "resnet101": 64, "inception_v3": 75,
               "efficientnet_lite0": 64}


def _require(name):
    if name == "efficientnet_lite0":
        try:
            import avd_tf.classify.efficientnet_lite  # noqa: F401
        except ImportError as error:
            pytest.skip(f"avd_tf.classify.efficientnet_lite not importable: {error}")


def _images(size, channels, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, size, size, channels)).astype(np.float32)


def _one_training_step(model, x, y):
    # One step run eagerly: tracing the gradient graph of a 100-layer ResNet
    # costs far more CPU time than the step itself.
    model.compile(optimizer=keras.optimizers.SGD(3e-3, momentum=0.9),
                  loss="sparse_categorical_crossentropy", run_eagerly=True)
    before = model.get_layer("classifier").get_weights()[0].copy()
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model.get_layer("classifier").get_weights()[0]
    assert not np.allclose(before, after)


def _first_kernel(model):
    return next(w for w in model.weights if len(w.shape) == 4).numpy()


@pytest.mark.parametrize("name", list(SMALL_SIZES))
@pytest.mark.slow
def test_classifier_builds_and_trains_one_step(name):
    _require(name)
    size = SMALL_SIZES[name]
    model = backbones.build_classifier(name, 3, weights="none", input_size=size)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, 3)
    x = _images(size, 3)
    probabilities = np.asarray(model(x))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    _one_training_step(model, x, np.array([0, 2]))


@pytest.mark.parametrize("name", ["alexnet", "resnet50"])
@pytest.mark.slow
def test_flow_cross_modality_init_from_local_weights(name, tmp_path):
    rgb = backbones.build_backbone(name, weights="none", input_size=64)
    path = tmp_path / f"{name}.weights.h5"
    rgb.save_weights(path)

    same = backbones.build_classifier(name, 5, weights=str(path), input_size=64)
    for a, b in zip(rgb.weights, same.get_layer(name).weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    flow_model = backbones.build_classifier(name, 5, weights=str(path), input_channels=2,
                                            input_size=64)
    assert flow_model.input_shape == (None, 64, 64, 2)
    flow = flow_model.get_layer(name)
    rgb_kernel = _first_kernel(rgb)
    expected = np.repeat(rgb_kernel.mean(axis=2, keepdims=True), 2, axis=2)
    np.testing.assert_allclose(_first_kernel(flow), expected, rtol=1e-6)
    adapted = 0
    for a, b in zip(rgb.weights, flow.weights, strict=True):
        if a.shape != b.shape:
            adapted += 1
            continue
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert adapted == 1
    _one_training_step(flow_model, _images(64, 2), np.array([4, 1]))


def test_preprocessing_inside_model():
    x = _images(4, 3)
    resnet = backbones.BackbonePreprocess("resnet50")
    np.testing.assert_allclose(
        np.asarray(resnet(x)),
        np.asarray(keras.applications.resnet.preprocess_input((x + 1.0) * 127.5)), rtol=1e-5)
    inception = backbones.BackbonePreprocess("inception_v3")
    np.testing.assert_allclose(np.asarray(inception(x)), x, atol=1e-5)
    # Flow keeps its zero and takes the spread of the backbone's RGB input.
    flow = _images(4, 2)
    np.testing.assert_allclose(np.asarray(backbones.BackbonePreprocess("resnet50", 2)(flow)),
                               127.5 * flow, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(backbones.BackbonePreprocess("inception_v3", 2)(flow)),
                               flow, rtol=1e-5)


def test_classifier_saves_and_loads(tmp_path):
    model = backbones.build_classifier("alexnet", 3, weights="none", input_channels=2,
                                       input_size=64)
    path = tmp_path / "flow_alexnet.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.get_layer("preprocess").channels == 2
    x = _images(64, 2)
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(model(x)), rtol=1e-5)


def test_alexnet_shapes_and_no_imagenet_weights():
    full = alexnet_lib.alexnet(input_shape=(112, 112, 3), classes=7)
    assert full.output_shape == (None, 7)
    assert full.get_layer("fc6").kernel.shape == (6 * 6 * 256, 4096)
    assert alexnet_lib.alexnet(include_top=False).output_shape == (None, 6, 6, 256)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        alexnet_lib.alexnet(weights="imagenet")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        backbones.build_classifier("alexnet", 3, weights="imagenet", input_size=64)
    with pytest.raises(ValueError, match=">= 63"):
        alexnet_lib.alexnet(input_shape=(48, 48, 3))


def test_registry_errors_and_sizes(tmp_path):
    assert {n: backbones.backbone_input_size(n) for n in backbones.BACKBONES} == {
        "alexnet": 224, "inception_v3": 299, "resnet50": 224, "resnet101": 224,
        "efficientnet_lite0": 224}
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'.*alexnet.*resnet101"):
        backbones.build_classifier("vgg16", 3)
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.backbone_input_size("ResNet-50")
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        backbones.build_classifier("resnet50", 3, weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match="inception_v3 needs input_size >= 75"):
        backbones.build_classifier("inception_v3", 3, weights="none", input_size=64)
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="bad.weights.h5"):
        backbones.build_classifier("alexnet", 3, weights=str(bad), input_size=64)


@pytest.mark.slow
def test_partial_bn_freezes_all_batch_norm_but_the_first(tmp_path):
    path = tmp_path / "resnet50.weights.h5"
    backbones.build_backbone("resnet50", weights="none", input_size=64).save_weights(path)

    def bn_trainable(model):
        return {l.name: l.trainable for l in model._flatten_layers()
                if isinstance(l, keras.layers.BatchNormalization)}

    pretrained = bn_trainable(backbones.build_classifier("resnet50", 4, weights=str(path), input_size=64,
                                                         partial_bn=True))
    assert len(pretrained) == 53
    assert [name for name, trainable in pretrained.items() if trainable] == ["conv1_bn"]
    scratch = bn_trainable(backbones.build_classifier("resnet50", 4, weights="none", input_size=64))
    assert all(scratch.values())
